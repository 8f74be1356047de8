"""Benchmark: a MUSDB18-size evaluation with the full BSS Eval, end to end, and museval's cost.

Generates a test set the size of MUSDB18's (50 tracks of 4 minutes, 4 stereo sources at
44.1 kHz; tonal and noise-burst stems with a faint broadband floor, as ``bench/metrics.py``),
writes it to a temporary folder in the MUSDB18-HQ layout (16-bit wav, the mixture file the
sum of the stems; about 10.6 GB, so nothing is kept in memory), then times

* ``stemkit.evaluation.evaluate(model, root, "test", metrics="full")`` over every track, end
  to end: reading the stems, separating with an oracle (``irm1``: ratio masks from the true
  stems, whole tracks), BSS Eval v4 (SDR, ISR, SIR, SAR) of every source, the mixture
  baseline and the aggregation; the evaluation's own meters give the scoring share;
* for the first ``--museval-tracks`` tracks (``--part museval``: in a second process, beside
  ``--part stemkit``, then ``--merge``), the same estimates scored by
  ``museval.evaluate`` and by ``stemkit.metrics.bss_eval_v4`` side by side (and their
  agreement); museval's time for the whole set is extrapolated from them, and labelled so.

Writes ``bench/results/evaluation_scale.json`` and ``.md``, after each phase (a long run
interrupted late still leaves its numbers). Thread counts follow the environment
(``OMP_NUM_THREADS``); they and the load average are recorded.

Usage:
    OMP_NUM_THREADS=1 python bench/evaluation_scale.py [--tracks 50] [--minutes 4]
        [--museval-tracks 2] [--root DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metrics import RATE, _compare, _machine, make_case
from stemkit.audio import read_audio, write_audio
from stemkit.metrics import bss_eval_v4

SOURCES = ("vocals", "drums", "bass", "other")
PARTS = ("stemkit", "museval")
RESULTS = Path(__file__).resolve().parent / "results"


def generate(root: Path, nb_tracks: int, minutes: float) -> float:
    """Write ``nb_tracks`` tracks under ``root/test``; returns the seconds it took.

    Each track strings together 30-second pieces drawn (seeded) from a pool of 24 made once
    by :func:`metrics.make_case`, each with its own gain per source: synthesising four hours
    of stems from scratch would take longer than the evaluation being timed.
    """
    start = time.perf_counter()
    piece = 30 * RATE
    pool = [make_case(30.0, seed=1000 + index)[0] for index in range(24)]
    nb_pieces = -(-int(minutes * 60 * RATE) // piece)
    for index in range(nb_tracks):
        folder = root / "test" / f"track {index:02d}"
        if all((folder / f"{s}.wav").is_file() for s in (*SOURCES, "mixture")):
            continue  # a previous run's (--root): the generator is seeded
        rng = np.random.default_rng(index)
        chosen = rng.integers(len(pool), size=nb_pieces)
        gains = rng.uniform(0.3, 1.0, size=(nb_pieces, len(SOURCES), 1, 1))
        refs = np.concatenate([gain * pool[i] for i, gain in zip(chosen, gains, strict=True)], -1)
        refs = refs[..., : int(minutes * 60 * RATE)]
        refs *= 0.25 / np.abs(refs).max()  # headroom: their sum must not clip either
        folder.mkdir(parents=True, exist_ok=True)
        for name, stem in zip(SOURCES, refs, strict=True):
            write_audio(folder / f"{name}.wav", stem.astype(np.float32), RATE, subtype="PCM_16")
        mixture = refs.sum(axis=0).astype(np.float32)
        write_audio(folder / "mixture.wav", mixture, RATE, subtype="PCM_16")
    return time.perf_counter() - start


def run_evaluation(root: Path, out: Path) -> dict[str, Any]:
    """stemkit's evaluation of every track, timed end to end."""
    from stemkit.evaluation.musdb import evaluate
    from stemkit.models import build

    model = build("irm1", sources=SOURCES)
    wall, cpu = time.perf_counter(), time.process_time()
    report = evaluate(model, root, "test", method="irm1", metrics="full", out_dir=out)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    nb_tracks = len(report.tracks)
    cost = report.cost
    return {
        "tracks": nb_tracks,
        "wall_s": wall,
        "cpu_s": cpu,
        "wall_s_per_track": wall / nb_tracks,
        "scoring_s": cost.get("scoring", {}).get("seconds"),
        "scoring_cpu_s": cost.get("scoring", {}).get("cpu_seconds"),
        "separation_s": cost.get("separation", {}).get("seconds"),
        "audio_s": cost.get("audio_seconds"),
        "cSDR_average_db": report.summary()["sources"]["average"]["cSDR"],
    }


def run_museval(root: Path, nb_tracks: int) -> list[dict[str, Any]]:
    """museval and stemkit's BSS Eval on the first tracks' oracle estimates, side by side."""
    import museval

    from stemkit.inference import separate
    from stemkit.models import build

    model = build("irm1", sources=SOURCES)
    rows = []
    for index in range(nb_tracks):
        folder = root / "test" / f"track {index:02d}"
        refs = torch.stack([read_audio(folder / f"{s}.wav", channels=2)[0] for s in SOURCES])
        model.set_references(refs)
        ests = separate(model, refs.sum(dim=0), segment=None)
        refs_np, ests_np = refs.double().numpy(), ests.double().numpy()
        wall, cpu = time.perf_counter(), time.process_time()
        ours = bss_eval_v4(refs_np, ests_np, window=RATE, hop=RATE)
        ours_wall, ours_cpu = time.perf_counter() - wall, time.process_time() - cpu
        wall, cpu = time.perf_counter(), time.process_time()
        theirs = np.stack(
            museval.evaluate(
                refs_np.transpose(0, 2, 1), ests_np.transpose(0, 2, 1), win=RATE, hop=RATE
            )
        )
        museval_wall, museval_cpu = time.perf_counter() - wall, time.process_time() - cpu
        stacked = np.stack([ours.sdr, ours.isr, ours.sir, ours.sar])
        rows.append(
            {
                "track": folder.name,
                "stemkit_wall_s": ours_wall,
                "stemkit_cpu_s": ours_cpu,
                "museval_wall_s": museval_wall,
                "museval_cpu_s": museval_cpu,
                "agreement": _compare(stacked, theirs),
            }
        )
        print(f"museval {folder.name}: {museval_wall:.1f} s, stemkit {ours_wall:.2f} s", flush=True)
    return rows


def _write(result: dict[str, Any], part: str = "all") -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    if part != "all":  # one of two processes run side by side; --merge joins them
        (RESULTS / f"evaluation_scale.{part}.json").write_text(json.dumps(result, indent=2) + "\n")
        return
    (RESULTS / "evaluation_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "evaluation_scale.md").write_text(_markdown(result))


def merge() -> dict[str, Any]:
    """Join the two parts' results (run as two processes) into the report."""
    parts = [json.loads((RESULTS / f"evaluation_scale.{p}.json").read_text()) for p in PARTS]
    result = {**parts[1], **parts[0]}  # the stemkit part's header, the museval part's rows
    result["load_average_end"] = parts[1].get("load_average_end")
    result["parts_run_side_by_side"] = True
    _write(result)
    for part in PARTS:
        (RESULTS / f"evaluation_scale.{part}.json").unlink()
    return result


def main(args: argparse.Namespace) -> dict[str, Any]:
    keep = args.root is not None
    root = Path(args.root) if keep else Path(tempfile.mkdtemp(prefix="stemkit-evalscale-"))
    part = args.part
    result: dict[str, Any] = {
        "benchmark": "MUSDB18-size evaluation, full BSS Eval v4, end to end",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": {
            "tracks": args.tracks,
            "minutes_per_track": args.minutes,
            "sources": list(SOURCES),
            "channels": 2,
            "rate": RATE,
            "format": "16-bit wav, MUSDB18-HQ layout, mixture.wav = sum of the stems",
            "signal": "30 s pieces of bench/metrics.py's synthetic stems (a seeded pool of 24), "
            "each piece with its own gain per source",
        },
        "model": "irm1 oracle (ratio masks from the true stems), whole tracks",
        "note": args.note,
        "machine": _machine(),
        "load_average_start": list(os.getloadavg()),
    }
    try:
        result["generation_s"] = generate(root, args.tracks, args.minutes)
        if args.generate_only:
            return result
        _write(result, part)
        if part in ("all", "stemkit"):
            result["stemkit"] = run_evaluation(root, root / "scores")
            result["load_average_after_stemkit"] = list(os.getloadavg())
            _write(result, part)
        if args.museval_tracks and part in ("all", "museval"):
            rows = run_museval(root, args.museval_tracks)
            result["museval_subset"] = rows
            museval_per_track = sum(r["museval_wall_s"] for r in rows) / len(rows)
            result["museval_extrapolated"] = {
                "tracks_measured": len(rows),
                "wall_s_per_track": museval_per_track,
                "wall_s_whole_set_extrapolated": museval_per_track * args.tracks,
                "cpu_s_per_track": sum(r["museval_cpu_s"] for r in rows) / len(rows),
            }
            result["load_average_end"] = list(os.getloadavg())
            _write(result, part)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return result


def _markdown(result: dict[str, Any]) -> str:
    data, machine = result["dataset"], result["machine"]
    lines = [
        "# Evaluation at test-set scale: MUSDB18-size, full BSS Eval v4",
        "",
        f"{data['tracks']} generated tracks of {data['minutes_per_track']:g} min, "
        f"{len(data['sources'])} stereo sources at {data['rate']} Hz ({data['format']}); "
        f"model: {result['model']}. Date {result['date']}.",
        "",
        f"Machine: {machine['cpu']}, {machine['logical_cores']} logical cores, torch "
        f"{machine['torch']} ({machine['torch_threads']} threads, OMP_NUM_THREADS="
        f"{machine['OMP_NUM_THREADS']}), museval {machine['museval']}. Load average at the "
        f"start {_load(result['load_average_start'])}"
        + (
            f", after stemkit's run {_load(result['load_average_after_stemkit'])}"
            if "load_average_after_stemkit" in result
            else ""
        )
        + (
            f", at the end {_load(result['load_average_end'])}"
            if "load_average_end" in result
            else ""
        )
        + ".",
        *([f"Note: {result['note']}."] if result.get("note") else []),
        "",
        f"Generating and writing the set: {result.get('generation_s', float('nan')):.0f} s "
        "(not part of the evaluation; near 0 when a set kept with --root is reused).",
        "",
    ]
    ours = result.get("stemkit")
    if ours:
        lines += [
            '| stemkit evaluate (metrics="full") | value |',
            "| --- | --- |",
            f"| tracks | {ours['tracks']} |",
            f"| total wall time, end to end | {ours['wall_s']:.0f} s "
            f"({ours['wall_s'] / 60:.1f} min) |",
            f"| process CPU time | {ours['cpu_s']:.0f} s |",
            f"| wall time per track | {ours['wall_s_per_track']:.2f} s |",
            f"| of which scoring (BSS Eval v4 + baseline + uSDR), evaluation's meter | "
            f"{_num(ours['scoring_s'])} s wall, {_num(ours['scoring_cpu_s'])} s CPU |",
            f"| of which separation (oracle) | {_num(ours['separation_s'])} s wall |",
            "",
        ]
    rows = result.get("museval_subset")
    if rows and ours:
        extra = result["museval_extrapolated"]
        lines += [
            "| track (same oracle estimates) | museval wall s | museval CPU s | stemkit "
            "bss_eval_v4 wall s | CPU s | ratio (wall) | max abs diff dB (SDR/ISR/SIR/SAR) "
            "| NaN masks equal |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in rows:
            agreement = row["agreement"]
            diffs = "/".join(_num(agreement[m]["max_abs_diff_db"], ".1e") for m in agreement)
            equal = all(agreement[m]["nan_masks_equal"] for m in agreement)
            lines.append(
                f"| {row['track']} | {row['museval_wall_s']:.1f} | {row['museval_cpu_s']:.1f} | "
                f"{row['stemkit_wall_s']:.2f} | {row['stemkit_cpu_s']:.2f} | "
                f"{row['museval_wall_s'] / row['stemkit_wall_s']:.1f}× | {diffs} | {equal} |"
            )
        museval_total = extra["wall_s_whole_set_extrapolated"]
        lines += [
            "",
            f"**museval for the whole set, EXTRAPOLATED** from {extra['tracks_measured']} "
            f"tracks: {museval_total:.0f} s ({museval_total / 3600:.2f} h) of BSS Eval alone, "
            f"against stemkit's whole evaluation end to end {ours['wall_s']:.0f} s "
            f"({museval_total / ours['wall_s']:.1f}× less time, separation and I/O included); "
            f"against stemkit's scoring alone {_num(ours['scoring_s'])} s "
            f"({museval_total / ours['scoring_s']:.1f}×)."
            if ours.get("scoring_s")
            else "",
        ]
    notes = RESULTS / "evaluation_scale-notes.md"
    if notes.is_file():  # the hand-written reading of the numbers, kept across runs
        lines += ["", notes.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def _num(value: float | None, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def _load(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--museval-tracks", type=int, default=2)
    parser.add_argument("--root", default=None, help="keep the generated set here (reused)")
    parser.add_argument("--generate-only", action="store_true", help="write the set (--root)")
    parser.add_argument(
        "--part",
        choices=("all", *PARTS),
        default="all",
        help="run one part only (two processes side by side on a kept --root), then --merge",
    )
    parser.add_argument("--merge", action="store_true", help="join the two parts' results")
    parser.add_argument("--note", default="", help="conditions to record (e.g. other load)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = _parse()
    if arguments.merge:
        merge()
    else:
        main(arguments)
    if not arguments.generate_only and arguments.part == "all":
        print((RESULTS / "evaluation_scale.md").read_text())
