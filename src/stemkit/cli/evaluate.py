"""``stemkit evaluate``: score a model on a dataset's stems, or compare scored methods."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stemkit.errors import StemkitError

if TYPE_CHECKING:
    from stemkit.cluster.pool import Cluster
    from stemkit.energy import CodeCarbon
    from stemkit.metrics.report import Report

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    """Declare ``stemkit evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score a model on a dataset (uSDR and cSDR per source), or compare methods",
        description="Separate every track of DATA/SUBSET (MUSDB18-HQ layout of WAV stems, or "
        "MUSDB18's <track>.stem.mp4 files) and score the "
        "estimates: uSDR (MDX definition, mean over tracks) and cSDR (BSS Eval v4 frame SDR, "
        "median over 1 s frames then over tracks), next to the mixture baseline. With -o, "
        "per-track JSON (museval's layout), summary.json, report.md and scores.png are "
        "written there, and an interrupted run resumes where it stopped (on the same dataset only: "
        "-o remembers the data's root and content). With --compare, "
        "no separation: the per-track scores of several output folders (ours or museval's) "
        "are tabulated side by side. A MIR-1K folder (Wavfile/) is scored with its protocol "
        "instead: GNSDR, GSIR and GSAR (length-weighted over the test singers' clips) for "
        "accompaniment and vocals.",
    )
    parser.add_argument("--model", default="default", help="checkpoint, bundled or registry name")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="dataset root: MUSDB18-HQ (WAV) or MUSDB18 (.stem.mp4) layout, or MIR-1K",
    )
    parser.add_argument(
        "--subset",
        default="test",
        choices=["train", "valid", "test"],
        help="test (default), train, or valid: the validation tracks training monitors (the "
        "14 official MUSDB18 ones where present, else --valid-fraction of train)",
    )
    parser.add_argument(
        "--valid-fraction",
        type=float,
        default=0.15,
        help="with --subset valid on a folder without the official validation tracks: the "
        "share of train held out, as the training run's data.valid_fraction (0.15)",
    )
    parser.add_argument("-o", "--out", type=Path, default=None, help="folder for the scores")
    parser.add_argument(
        "--metrics",
        default="fast",
        choices=["fast", "full"],
        help="fast: frame SDR and uSDR; full: BSS Eval v4 SDR, ISR, SIR, SAR and uSDR",
    )
    parser.add_argument(
        "--segment",
        type=float,
        default=None,
        help="chunk length in seconds (default: the model's own; 0 = whole tracks)",
    )
    parser.add_argument("--overlap", type=float, default=0.25, help="chunk overlap fraction")
    from stemkit.cli.separate import add_batch_size_option

    add_batch_size_option(parser)
    parser.add_argument(
        "--window",
        choices=("linear", "rectangular", "triangular"),
        default="linear",
        help="cross-fade across chunk overlaps (linear)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps (auto)",
    )
    parser.add_argument(
        "--codecarbon",
        default=None,
        metavar="COUNTRY",
        help="also measure each track with CodeCarbon's offline tracker (no network; with -j 1), "
        "for the grid of this ISO country code, e.g. FRA",
    )
    parser.add_argument("--limit", type=int, default=None, help="score only the first N tracks")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="tracks scored in parallel")
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="score the tracks as Ray tasks (same scores and files): no ADDRESS starts a local "
        "cluster, auto joins the one running here, HOST:PORT another; the model is sent once "
        "to each worker (needs the cluster extra)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="Ray workers (default: one per GPU of the cluster, else one per --worker-cpus CPUs)",
    )
    parser.add_argument(
        "--worker-cpus", type=float, default=1.0, metavar="C", help="CPUs per Ray worker (1)"
    )
    parser.add_argument(
        "--worker-gpus",
        type=float,
        default=1.0,
        metavar="G",
        help="GPUs each Ray worker takes where the cluster has GPUs; 0.25 puts four workers on "
        "a GPU (1)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        metavar="N",
        help="times a track is retried after its Ray worker died (2)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="discard scores in -o computed with other settings or on another dataset",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="[NAME=]DIR",
        default=None,
        help="compare the scores already in these folders (no separation); NAME= labels a "
        "folder's column (default: the method recorded in it)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate (or compare), print the table, write the files."""
    if args.compare:
        return _compare(args)
    if args.data is None:
        raise StemkitError("--data is required (the dataset root), unless --compare is given")
    from stemkit.artifacts import load_model
    from stemkit.data.factory import detect_format
    from stemkit.runtime import resolve_device

    args.device = str(resolve_device(args.device))  # a wrong device: one line, before any work
    model = load_model(args.model)
    if detect_format(args.data) == "mir1k":
        return _mir1k(args, model)
    settings: dict[str, Any] = {"model": str(args.model)}
    path = Path(args.model)
    if path.is_file():
        from stemkit.artifacts.checkpoint import sha256_of

        settings["checkpoint_sha256"] = sha256_of(path)
    cluster = None
    if args.ray is not None:
        from stemkit.cluster.pool import Cluster

        cluster = Cluster(
            address=None if args.ray == "local" else args.ray,
            workers=args.workers,
            worker_cpus=args.worker_cpus,
            worker_gpus=args.worker_gpus,
            use_gpus=args.device != "cpu",
            retries=args.retries,
        )
    with _connected(cluster):
        report = _evaluate(args, model, settings, cluster)
    print(report.table())
    if args.out is not None:
        print(
            f"per-track scores in {args.out / args.subset}; summary.json, report.md and "
            f"scores.png in {args.out}"
        )
    return 0


@contextlib.contextmanager
def _connected(cluster: Cluster | None) -> Iterator[None]:
    """Joins (or starts, and then stops) the Ray cluster of ``cluster``; nothing for None."""
    if cluster is None:
        yield
        return
    from stemkit.cluster.pool import connect

    started = connect(cluster.address)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


def _evaluate(
    args: argparse.Namespace, model: Any, settings: dict[str, Any], cluster: Cluster | None
) -> Report:
    from stemkit.evaluation import evaluate

    return evaluate(
        model,
        args.data,
        args.subset,
        method=str(args.model),
        metrics=args.metrics,
        segment=model.default_segment if args.segment is None else args.segment or None,
        overlap=args.overlap,
        batch_size=model.default_batch_size if args.batch_size is None else args.batch_size,
        window=args.window,
        device=args.device,
        out_dir=args.out,
        progress=True,
        limit=args.limit,
        jobs=args.jobs,
        settings=settings,
        force=args.force,
        valid_fraction=args.valid_fraction,
        codecarbon=_codecarbon(args),
        cluster=cluster,
    )


def _mir1k(args: argparse.Namespace, model: Any) -> int:
    """Score ``model`` with the MIR-1K protocol; write ``mir1k_scores.json`` with ``-o``."""
    import json

    from stemkit.evaluation.mir1k import evaluate_mir1k

    try:
        scores = evaluate_mir1k(model, args.data, max_clips=args.limit)
    except ValueError as error:
        raise StemkitError(f"{args.data}: {error}") from error
    sources = list(scores["GNSDR"])
    lines = [
        f"MIR-1K protocol, {scores['clips']} test clip(s), {scores['seconds']:.0f} s; dB, "
        "length-weighted over clips (the mixture scores GNSDR 0)",
        "| metric | " + " | ".join(sources) + " |",
        "| --- |" + " --- |" * len(sources),
    ]
    for metric in ("GNSDR", "GSIR", "GSAR"):
        cells = " | ".join(f"{scores[metric][s]:.2f}" for s in sources)
        lines.append(f"| {metric} | {cells} |")
    print("\n".join(lines))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        target = args.out / "mir1k_scores.json"
        partial = target.with_suffix(".json.partial")
        partial.write_text(json.dumps({"model": str(args.model), **scores}, indent=2))
        partial.replace(target)
        print(f"scores written to {target}")
    return 0


def _labelled(value: str) -> tuple[str | None, Path]:
    """``"NAME=DIR"`` -> (NAME, DIR); a plain ``"DIR"`` (or one whose prefix holds a path
    separator) -> (None, DIR)."""
    name, sep, folder = value.partition("=")
    if sep and name and "/" not in name:
        return name, Path(folder)
    return None, Path(value)


def _compare(args: argparse.Namespace) -> int:
    from stemkit.metrics.report import comparison_table, load_report, write_comparison

    labels, folders = zip(*(_labelled(value) for value in args.compare), strict=True)
    reports = [load_report(folder, args.subset) for folder in folders]
    for label, report in zip(labels, reports, strict=True):
        report.method = label or report.method
    names = [r.method for r in reports]
    for folder, report in zip(folders, reports, strict=True):
        # two folders of one method (e.g. two checkpoints' runs) must stay apart in the table
        if names.count(report.method) > 1:
            report.method = f"{report.method} ({folder})"
    print(comparison_table(reports))
    if args.out is not None:
        markdown, picture = write_comparison(reports, args.out)
        print(f"comparison written to {markdown} and {picture}")
    return 0


def _codecarbon(args: argparse.Namespace) -> CodeCarbon | None:
    """The CodeCarbon tracker ``--codecarbon`` asks for (refused with ``--jobs`` above 1)."""
    if not args.codecarbon:
        return None
    if args.jobs != 1 or args.ray is not None:
        raise StemkitError(
            "--codecarbon measures the machine from one process: use -j 1 and no --ray"
        )
    from stemkit.energy import CodeCarbon, check_country

    tracker = CodeCarbon(check_country(args.codecarbon))
    if tracker.reason:
        logger.warning("CodeCarbon will not measure: %s", tracker.reason)
    return tracker
