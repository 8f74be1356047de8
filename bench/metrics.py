"""Benchmark: stemkit's BSS Eval v4 against museval on the same 4-source stereo 44.1 kHz case.

Generates four stereo sources (tonal parts, noise bursts, a faint broadband floor) and
imperfect estimates of them (gain, a short filter, bleed of the other sources, noise), then

* times ``stemkit.metrics.bss_eval_v4`` (best of ``--repeats`` after a warm-up) and
  ``museval.evaluate`` (once: it is slow) on exactly the same arrays;
* checks that the numbers are equal: largest absolute difference over the frames both find
  finite, per metric, and that NaN masks agree;
* times the filter-free fast path ``stemkit.metrics.framewise_sdr`` (seconds per minute of
  audio);
* times stemkit on the first 3 s alone (about its fixed cost: correlations, the filters'
  solve), so that the ratio at other durations can be read, and stemkit with its block
  Toeplitz (Schur) solver switched off, i.e. with a dense 4096 × 4096 Cholesky factorisation
  as the fallback path does;
* times, side by side in the same process, stemkit's one-pass path for frames that tile the
  signal (the default) and its two-pass path (stored block spectra filtered frame by frame:
  the previous default, kept for overlapping frames), alternating, min of the repeats.

Writes ``bench/results/metrics.json`` and ``bench/results/metrics.md``. Thread counts follow
the environment (``OMP_NUM_THREADS``); they and the load average are recorded.

Usage:
    python bench/metrics.py [--duration 180] [--repeats 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemkit.metrics import bss_eval_v4, bsseval, framewise_sdr

RATE = 44100
NB_SOURCES = 4
NB_CHANNELS = 2
METRICS = ("SDR", "ISR", "SIR", "SAR")
RESULTS = Path(__file__).resolve().parent / "results"


def make_case(duration: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """References and estimates ``(4, 2, nb_samples)`` float64, seeded."""
    rng = np.random.default_rng(seed)
    nb_samples = int(duration * RATE)
    t = np.arange(nb_samples) / RATE
    refs = np.empty((NB_SOURCES, NB_CHANNELS, nb_samples))
    for j in range(NB_SOURCES):
        if j == 1:  # drum-like: decaying noise bursts
            period = int(RATE * rng.uniform(0.25, 0.5))
            envelope = np.exp(-(np.arange(nb_samples) % period) / (0.05 * RATE))
            mono = 0.5 * envelope * rng.standard_normal(nb_samples)
        else:  # tonal, slowly modulated
            partials = [
                rng.uniform(0.1, 0.4) * np.sin(2 * np.pi * rng.uniform(40, 4000) * t)
                for _ in range(4)
            ]
            modulation = 1.0 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * t)
            mono = np.sum(partials, axis=0) * modulation
        for c in range(NB_CHANNELS):
            floor = 0.03 * np.sqrt(np.mean(mono**2)) * rng.standard_normal(nb_samples)
            refs[j, c] = rng.uniform(0.5, 1.0) * mono + floor
    bleed = (refs.sum(axis=0, keepdims=True) - refs) / (NB_SOURCES - 1)
    taps = rng.normal(0.0, 0.15, size=(NB_SOURCES, NB_CHANNELS, 8))
    filtered = np.stack(
        [
            np.stack([np.convolve(refs[j, c], taps[j, c])[:nb_samples] for c in range(NB_CHANNELS)])
            for j in range(NB_SOURCES)
        ]
    )
    noise = 0.05 * refs.std() * rng.standard_normal(refs.shape)
    ests = 0.85 * refs + filtered + 0.2 * bleed + noise
    return refs, ests


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": _version("scipy"),
        "museval": _version("museval"),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
    }


def _compare(ours: np.ndarray, theirs: np.ndarray) -> dict[str, Any]:
    """Per metric: largest |difference| over frames both give finite, and NaN agreement."""
    theirs = theirs.copy()
    theirs[~np.isfinite(theirs)] = np.nan  # museval's stores write ±inf as NaN
    out: dict[str, Any] = {}
    for name, mine, ref in zip(METRICS, ours, theirs, strict=True):
        both = np.isfinite(mine) & np.isfinite(ref)
        out[name] = {
            "max_abs_diff_db": float(np.abs(mine[both] - ref[both]).max()) if both.any() else None,
            "nan_masks_equal": bool(np.array_equal(np.isnan(mine), np.isnan(ref))),
            "finite_frames": int(both.sum()),
        }
    return out


def _time(function: Any, repeats: int, cpu: list[float] | None = None) -> list[float]:
    """Wall seconds of each run; the process CPU seconds go to ``cpu`` when given."""
    times = []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        times.append(time.perf_counter() - start)
        if cpu is not None:
            cpu.append(time.process_time() - start_cpu)
    return times


def _dense_path_seconds(refs: np.ndarray, ests: np.ndarray, repeats: int) -> float:
    """stemkit with the block Toeplitz solver disabled: the dense Cholesky fallback."""
    original = bsseval._solve_block_toeplitz
    bsseval._solve_block_toeplitz = lambda *args: None
    try:
        return min(_time(lambda: bss_eval_v4(refs, ests), repeats))
    finally:
        bsseval._solve_block_toeplitz = original


def _paths_side_by_side(refs: np.ndarray, ests: np.ndarray, repeats: int) -> dict[str, float]:
    """CPU seconds (min over alternating runs) of the one-pass and the two-pass paths."""
    cpu: dict[str, list[float]] = {"one_pass": [], "two_pass": []}
    for _ in range(repeats):
        for name, tiled in (("one_pass", True), ("two_pass", False)):
            bsseval._TILED = tiled
            try:
                _time(lambda: bss_eval_v4(refs, ests), 1, cpu[name])
            finally:
                bsseval._TILED = True
    return {name: min(values) for name, values in cpu.items()}


def main(args: argparse.Namespace) -> dict[str, Any]:
    import museval

    load_before = os.getloadavg()
    refs, ests = make_case(args.duration, args.seed)
    minutes = args.duration / 60.0

    # warm-up on a short piece (allocator, FFT plans), then the timed runs
    bss_eval_v4(refs[..., : 3 * RATE], ests[..., : 3 * RATE])
    ours_result = bss_eval_v4(refs, ests)
    ours_cpu: list[float] = []
    ours_times = _time(lambda: bss_eval_v4(refs, ests), args.repeats, ours_cpu)
    fast_times = _time(lambda: framewise_sdr(refs, ests), args.repeats)
    short = (refs[..., : 3 * RATE], ests[..., : 3 * RATE])
    short_time = min(_time(lambda: bss_eval_v4(*short), args.repeats))
    dense_time = _dense_path_seconds(refs, ests, min(args.repeats, 2))
    paths_cpu = _paths_side_by_side(refs, ests, args.repeats)

    start, start_cpu = time.perf_counter(), time.process_time()
    theirs = np.stack(
        museval.evaluate(refs.transpose(0, 2, 1), ests.transpose(0, 2, 1), win=RATE, hop=RATE)
    )
    museval_time = time.perf_counter() - start
    museval_cpu = time.process_time() - start_cpu
    load_after = os.getloadavg()

    ours = np.stack([ours_result.sdr, ours_result.isr, ours_result.sir, ours_result.sar])
    best = min(ours_times)
    result = {
        "benchmark": "BSS Eval v4 (museval.evaluate, mode v4) vs stemkit.metrics.bss_eval_v4",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "audio": {
            "duration_s": args.duration,
            "rate": RATE,
            "sources": NB_SOURCES,
            "channels": NB_CHANNELS,
            "window": RATE,
            "hop": RATE,
            "filters_len": 512,
            "frames": int(ours.shape[-1]),
            "signal": "synthetic tonal/noise-burst stems with a -30 dB floor; imperfect estimates",
            "seed": args.seed,
        },
        "note": args.note,
        "machine": _machine(),
        "load_average_before_after": [list(load_before), list(load_after)],
        "stemkit_seconds": ours_times,
        "stemkit_best_s": best,
        "museval_seconds": museval_time,
        "speedup_museval_over_stemkit": museval_time / best,
        # CPU seconds of the process: less sensitive than wall time to other jobs' load
        "stemkit_cpu_seconds": ours_cpu,
        "museval_cpu_seconds": museval_cpu,
        "speedup_cpu_time": museval_cpu / min(ours_cpu),
        "agreement": _compare(ours, theirs),
        "framewise_sdr_seconds": fast_times,
        "framewise_sdr_s_per_minute": min(fast_times) / minutes,
        "stemkit_s_per_minute": best / minutes,
        "museval_s_per_minute": museval_time / minutes,
        "stemkit_first_3s_best_s": short_time,
        "stemkit_dense_cholesky_path_best_s": dense_time,
        "side_by_side_cpu_s": paths_cpu,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "metrics.md").write_text(_markdown(result))
    return result


def _markdown(result: dict[str, Any]) -> str:
    audio, machine = result["audio"], result["machine"]
    load = result["load_average_before_after"]
    lines = [
        "# Metrics benchmark: stemkit `bss_eval_v4` vs `museval.evaluate` (v4)",
        "",
        f"{audio['duration_s']:g} s of {audio['sources']}-source stereo at {audio['rate']} Hz "
        f"({audio['frames']} one-second frames, 512-tap filters, images variant); "
        f"{audio['signal']}. stemkit: best of {len(result['stemkit_seconds'])} after a "
        "warm-up; museval: one run.",
        "",
        f"Machine: {machine['cpu']}, {machine['logical_cores']} logical cores, "
        f"{machine['memory_gib']} GiB, {machine['platform']}, Python {machine['python']}, "
        f"torch {machine['torch']} ({machine['torch_threads']} threads, OMP_NUM_THREADS="
        f"{machine['OMP_NUM_THREADS']}), numpy {machine['numpy']}, scipy {machine['scipy']}, "
        f"museval {machine['museval']}. Load average (1/5/15 min) before "
        f"{_fmt_load(load[0])}, after {_fmt_load(load[1])}. Date {result['date']}.",
        *([f"Note: {result['note']}."] if result["note"] else []),
        "",
        "| implementation | seconds | s per minute of audio |",
        "| --- | --- | --- |",
        f"| museval.evaluate | {result['museval_seconds']:.2f} | "
        f"{result['museval_s_per_minute']:.2f} |",
        f"| stemkit bss_eval_v4 | {result['stemkit_best_s']:.2f} | "
        f"{result['stemkit_s_per_minute']:.2f} |",
        f"| stemkit framewise_sdr (SDR only, no filters) | "
        f"{min(result['framewise_sdr_seconds']):.3f} | "
        f"{result['framewise_sdr_s_per_minute']:.3f} |",
        "",
        f"**Speed-up: {result['speedup_museval_over_stemkit']:.1f}×** "
        "(museval time / stemkit time, wall clock); in process CPU time, less sensitive to "
        f"other jobs on the machine: {result['speedup_cpu_time']:.1f}× "
        f"({result['museval_cpu_seconds']:.2f} s / {min(result['stemkit_cpu_seconds']):.2f} s). "
        "stemkit on the first 3 s alone, about its fixed cost "
        f"(correlations, filters): {result['stemkit_first_3s_best_s']:.2f} s. stemkit with the "
        "block Toeplitz solver off (dense 4096 × 4096 Cholesky, the fallback path): "
        f"{result['stemkit_dense_cholesky_path_best_s']:.2f} s. Side by side in this process "
        "(CPU s, min of alternating runs): one-pass path (default for tiling frames) "
        f"{result['side_by_side_cpu_s']['one_pass']:.2f}, two-pass path (the previous "
        f"default) {result['side_by_side_cpu_s']['two_pass']:.2f}.",
        "",
        "| metric | max abs difference (dB), frames finite in both | NaN masks equal | frames |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in result["agreement"].items():
        diff = "n/a" if row["max_abs_diff_db"] is None else f"{row['max_abs_diff_db']:.2e}"
        lines.append(f"| {name} | {diff} | {row['nan_masks_equal']} | {row['finite_frames']} |")
    notes = RESULTS / "metrics-notes.md"
    if notes.is_file():  # the hand-written analysis (bound, history), kept across runs
        lines += ["", notes.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def _fmt_load(load: list[float] | tuple[float, ...]) -> str:
    return "/".join(f"{value:.2f}" for value in load)


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of audio")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of stemkit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="conditions to record (e.g. other load)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(_parse())
    print((RESULTS / "metrics.md").read_text())
