"""``stemkit train``: train a model on a dataset folder, resuming if the run exists."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Declare ``stemkit train``."""
    parser = subparsers.add_parser(
        "train",
        help="train a model (re-run the same command to resume)",
        description="Train on a dataset folder in the MUSDB18-HQ layout. Configuration: the "
        "defaults, then the YAML preset, then KEY=VALUE overrides "
        "(e.g. data.root=data/synth optim.epochs=20 model.kwargs.hidden_size=128; the BSRNN "
        "recipe: optim.scheduler=step optim.monitor=valid_usdr optim.lr_scale_batch=16). "
        "The run folder gets config.yaml, last.pt, best.pt, history.json/.csv and "
        "learning_curve.png. Several processes: torchrun --nproc_per_node N -m stemkit.cli.main "
        "train ... (DDP; the global batch is optim.batch_size x N); devices, precision "
        "(32-true, bf16-mixed, 16-mixed) and strategy are options too.",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides")
    parser.add_argument("-c", "--config", type=Path, default=None, help="YAML preset")
    parser.add_argument("--data", type=Path, default=None, help="shortcut for data.root=")
    parser.add_argument("--run-dir", type=Path, default=None, help="shortcut for run_dir=")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the configuration and train."""
    from stemkit.train.config import resolve_config
    from stemkit.train.loop import train

    overrides = list(args.overrides)
    if args.data is not None:
        overrides.append(f"data.root={args.data}")
    if args.run_dir is not None:
        overrides.append(f"run_dir={args.run_dir}")
    config = resolve_config(args.config, overrides)
    best = train(config, progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":  # one line, not one per torchrun process
        print(f"best checkpoint: {best}")
    return 0
