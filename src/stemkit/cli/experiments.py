"""``stemkit experiments``: train, score and tabulate the named variants of a grid file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Declare ``stemkit experiments run|table``."""
    parser = subparsers.add_parser(
        "experiments",
        help="run a grid of training variants and tabulate their scores",
        description="A grid YAML names a base preset, shared overrides, an output root and a "
        "list of variants (each a list of KEY=VALUE overrides). 'run' trains each variant in "
        "ROOT/NAME (resuming interrupted runs, skipping finished ones) and scores its best "
        "checkpoint on the grid's split (evaluate.subset); 'table' prints the results table "
        "(per-source uSDR, average cSDR, parameters, energy, training time; with the study's "
        "published numbers in parentheses when the grid names a 'published' file) and writes "
        "ROOT/table.md and ROOT/table.csv.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run_parser = actions.add_parser("run", help="train and evaluate the grid's variants")
    run_parser.add_argument("grid", type=Path, help="grid YAML file")
    run_parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="overrides applied to every variant"
    )
    run_parser.add_argument(
        "--only", action="append", default=None, metavar="NAME", help="run only this variant"
    )
    run_parser.add_argument("--quiet", action="store_true", help="no progress output")
    run_parser.set_defaults(func=run)
    table_parser = actions.add_parser("table", help="print and write the results table")
    table_parser.add_argument("grid", type=Path, help="grid YAML file")
    table_parser.set_defaults(func=run, overrides=[], only=None, quiet=False)


def run(args: argparse.Namespace) -> int:
    """Run the grid (``run``) and print its table (both actions)."""
    from stemkit.train.experiments import grid_table, load_grid, run_grid

    grid = load_grid(args.grid)
    if args.action == "run":
        run_grid(grid, list(args.overrides), only=args.only, progress=not args.quiet)
    print(grid_table(grid))
    print(f"table written to {grid.root / 'table.md'} and {grid.root / 'table.csv'}")
    return 0
