"""``stemkit evaluate``: separate a dataset's tracks and score them against their stems."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Declare ``stemkit evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score a model on a dataset (uSDR and cSDR per source)",
        description="Separate every track of DATA/SUBSET (MUSDB18-HQ layout) and score the "
        "estimates: uSDR (MDX definition, mean over tracks) and cSDR (BSS Eval v4 frame SDR, "
        "median over 1 s frames then over tracks), next to the mixture baseline.",
    )
    parser.add_argument("--model", default="default", help="checkpoint, bundled or registry name")
    parser.add_argument("--data", required=True, type=Path, help="dataset root (MUSDB18-HQ layout)")
    parser.add_argument("--subset", default="test", choices=["train", "test"])
    parser.add_argument("-o", "--out", type=Path, default=None, help="folder for the JSON scores")
    parser.add_argument("--segment", type=float, default=None, help="chunk length in seconds")
    parser.add_argument("--overlap", type=float, default=0.25, help="chunk overlap fraction")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N tracks")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table, write the JSON files."""
    from stemkit.evaluate import evaluate
    from stemkit.pretrained import load_model

    model = load_model(args.model)
    report = evaluate(
        model,
        args.data,
        args.subset,
        method=str(args.model),
        segment=args.segment if args.segment is not None else getattr(model, "segment", None),
        overlap=args.overlap,
        device=args.device,
        out_dir=args.out,
        progress=True,
        limit=args.limit,
    )
    print(report.table())
    if args.out is not None:
        print(
            f"per-track scores in {args.out / args.subset}, summary in {args.out / 'summary.json'}"
        )
    else:
        print(json.dumps(report.summary()["sources"]["average"], indent=2))
    return 0
