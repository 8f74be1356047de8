"""``stemkit export MODEL -o model.onnx``: a model's network as an ONNX graph.

``MODEL`` is what ``stemkit separate --model`` takes: a checkpoint file, a bundled model
(``default``), a catalogue model (``umxhq``), or a registry name with ``--random-weights``.
The graph holds the network in real tensors; STFT-based systems keep their transforms outside
it (see :mod:`stemkit.artifacts.onnx`, which lists what each system's graph maps, and the
graph's own metadata). After writing, the graph is run by onnxruntime on a second of noise and
the largest difference from PyTorch is reported. A model of 2 GB of weights or more (Demucs at
C1=100) is written as the graph and its weights beside it, ``model.onnx.data``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from stemkit.cli.logs import PLAIN

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    """Declare ``stemkit export``."""
    parser = subparsers.add_parser(
        "export",
        help="export a model's network to ONNX",
        description="Write a model's network as an ONNX graph (STFT-based systems: the network "
        "between the transforms, which stay outside the graph).",
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="checkpoint file, bundled model (default), catalogue model (umxhq, ...) or, with "
        "--random-weights, a registered architecture",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="the .onnx file to write"
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="allow MODEL to name an architecture without trained weights (for testing)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing FILE")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export ``args.model`` to ``args.output``; 0 on success.

    Raises:
        StemkitError: an unknown or untrained model, an existing output, or a model that
            does not export (the message names the operator).
    """
    from stemkit.artifacts import load_model
    from stemkit.artifacts.onnx import export_onnx, external_data_path
    from stemkit.cli import model_choice
    from stemkit.errors import StemkitError

    output = Path(args.output)
    if output.suffix != ".onnx":
        raise StemkitError(f"--output {output}: give a file name ending in .onnx")
    if output.exists() and not args.force:
        raise StemkitError(f"{output} already exists; pass --force to replace it")
    if output.parent.exists() and not output.parent.is_dir():
        raise StemkitError(f"--output {output}: {output.parent} is not a folder")
    if model_choice.is_untrained(args.model, random_weights=args.random_weights) and not (
        args.random_weights
    ):
        raise model_choice.refuse_untrained(args.model)
    model = load_model(args.model, random_weights=args.random_weights)
    logger.info("%s", model_choice.describe(args.model, model, random_weights=args.random_weights))
    exported = export_onnx(model, output)
    logger.info("graph: %s", exported.graph, extra=PLAIN)
    logger.info(
        "onnxruntime vs PyTorch on 1 s of noise: largest difference %.2g",
        exported.max_difference,
        extra=PLAIN,
    )
    print(exported.path, flush=True)
    weights = external_data_path(exported.path)
    if weights.is_file():  # a model above ONNX's 2 GB: its weights lie beside the graph
        print(weights, flush=True)
    return 0
