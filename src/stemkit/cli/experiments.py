"""``stemkit experiments``: train, score and tabulate the named variants of a grid file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stemkit.errors import StemkitError


def add_parser(subparsers: Any) -> None:
    """Declare ``stemkit experiments run|table``."""
    parser = subparsers.add_parser(
        "experiments",
        help="run a grid of training variants and tabulate their scores",
        description="A grid YAML names a base preset, shared overrides, an output root and a "
        "list of variants (each a list of KEY=VALUE overrides). 'run' trains each variant in "
        "ROOT/NAME (resuming interrupted runs, skipping finished ones) and scores its best "
        "checkpoint on the grid's split (evaluate.subset); 'table' prints the results table "
        "(per-source uSDR or cSDR, average uSDR and cSDR, parameters, energy, training time; with "
        "the study's published numbers in parentheses when the grid names a 'published' file, "
        "or beside ours with the differences: --paper) and writes ROOT/table.md (or "
        "table-paper.md) and ROOT/table.csv.",
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
    table_parser.add_argument(
        "--paper",
        action="store_true",
        help="beside each number the study published, that number and the difference (ours − "
        "published; energy and time: ours ÷ published), and the energy extrapolated from the "
        "first 3 epochs as the BSRNN replication measured it; writes ROOT/table-paper.md",
    )
    table_parser.add_argument(
        "--scores",
        choices=("usdr", "csdr", "both"),
        default=None,
        help="per-source scores: uSDR (MDX), cSDR (BSS Eval v4) or both (default: the "
        "published file's metric, else uSDR)",
    )
    table_parser.set_defaults(func=run, overrides=[], only=None, quiet=False)


def run(args: argparse.Namespace) -> int:
    """Run the grid (``run``) and print its table (both actions)."""
    from stemkit.train.experiments import grid_table, load_grid, run_grid

    grid = load_grid(args.grid)
    if args.action == "run":
        run_grid(grid, list(args.overrides), only=args.only, progress=not args.quiet)
    paper = bool(getattr(args, "paper", False))
    if paper and grid.published is None:
        raise StemkitError(
            f"{args.grid}: --paper needs the grid to name a 'published' file of the study's "
            "numbers (see configs/published/)"
        )
    print(grid_table(grid, paper=paper, scores=getattr(args, "scores", None)))
    table = grid.root / ("table-paper.md" if paper else "table.md")
    print(f"table written to {table} and {grid.root / 'table.csv'}")
    return 0
