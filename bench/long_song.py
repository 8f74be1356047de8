"""Benchmark: peak memory of separating a 10-minute song with Open-Unmix and Wiener EM.

Separates a long stereo 44.1 kHz noise signal (10 minutes by default) with our ``umx`` at paper
size (umxhq: hidden 512, 4 targets, random weights) and ``niter=1`` (Wiener EM in blocks of
``wiener_win_len=300`` frames), each mode in a fresh subprocess:

* ``whole``: the whole song at once (``segment=None``). The worker runs the separator's
  frame-block path (``Separator.streams``) stage by stage (STFT + encoders in frame blocks,
  LSTMs over the whole song, per Wiener block STFT + decoders + EM + iSTFT), resetting the
  kernel's high-water mark (``VmHWM``, via ``/proc/self/clear_refs``) before each stage, so
  that the result says where the memory goes; the overall peak is the largest stage peak.
* ``chunked``: :func:`stemkit.inference.separate` with 30 s segments (or each of
  ``--segments``), overlap 0.1.

The budget is 2 GiB of peak RSS for the whole process (Python, torch, model, the mixture and
the stems included). The mixture is generated inside the worker; the peak is reset after the
model and the mixture exist, and both the absolute peak and the part above that baseline are
reported.

Merges its runs into ``bench/results/long_song.json`` (a run with the same mode, length and
segment replaces the stored one) and rewrites ``bench/results/long_song.md`` from it.

Usage:
    python bench/long_song.py [--minutes 10] [--modes whole chunked] [--segments 30 15]
        [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

RATE = 44100
SEGMENT_S = 30.0
OVERLAP = 0.1
WIENER_WIN_LEN = 300
BUDGET_MIB = 2048.0
MODES = ("whole", "chunked")
#: Findings, written after reading the stage tables of a 10-minute run (1 thread, torch 2.13
#: CPU); re-render the results with ``--rewrite`` after editing them.
NOTES: list[str] = [
    "Whole song, frame-block path (issue 5): 1.7 GiB peak for 10 minutes (4.4 GiB before it, "
    "8.2 GiB before the block-wise filter), within the 2 GiB budget. An Open-Unmix core is "
    "per-frame except its LSTM (encode: standardise, fc1, bn1, tanh; decode: fc2, bn2, fc3, "
    "bn3, × mixture magnitude; BatchNorm in eval mode), so `Separator.forward` (eval, no "
    "autograd) keeps only per-frame features for the whole song: (1) `encode_frames`: the "
    "mixture STFT computed per block of 256 frames (`STFT.frames`, reflect padding at the "
    "edges reproduced exactly: bitwise equal to the whole transform) and encoded, keeping the "
    "encoder outputs (4 × 25840 × 512 floats, 202 MiB); (2) `run_sequence`: each target's "
    "LSTM over the whole song, freeing its encoder output (the LSTM outputs, 202 MiB, stay); "
    "(3) `decode_and_invert`: per Wiener block, the block's STFT again, every target decoded "
    "for those frames (encoder recomputed), Wiener EM, iSTFT overlap-added into the "
    "preallocated stems. Stems equal the whole-signal computation within float rounding "
    "(max rel. error ~2e-7 in the tests; umx and xumx, niter 0/1/2, residual, softmask, "
    "mono).",
    "Peak = baseline (0.57 GiB: Python, torch, model, mixture) + LSTM outputs (0.2 GiB) + "
    "returned stems (0.8 GiB) + one block's working set (~0.15 GiB). The LSTM stage's own "
    "transient (~0.4 GiB: encoder outputs + one target's LSTM activations) is below it.",
    "Wiener EM per block: the EM is per frequency bin (its statistics pool over the block's "
    "frames) except the block's rescaling `max(1, max|x| / 10)`, so `Separator` filters a "
    "block 256 bins at a time with the scale of the whole block, and overlap-adds its iSTFT "
    "64 frames at a time; this took the block's working set from ~0.45 GiB to ~0.15 GiB "
    "(the first frame-block run peaked at 2058 MiB without it).",
    "X-UMX (bridging) takes the same path keeping only the mean encoder output and the mean "
    "LSTM output (the bridges make every branch's LSTM read the former and every decoder "
    "read [mean encoder, mean LSTM]): 2 × 53 MiB for 10 minutes. Cores that are not "
    "Open-Unmix-like, training mode or autograd keep the whole-signal path.",
    "Times: the whole-song run shared the 2 cores with other jobs (load average 3.6 → 5.6); "
    "stages took 14 s (encode), 55 s (LSTMs) and 92 s (decode, bin-chunked EM, iSTFT). "
    "Earlier whole-song times (141 s, 360 s) were taken under "
    "other loads.",
    "Chunked application: the working set is that of one chunk; what grows with the song is "
    "the mixture (0.2 GiB in the baseline) and the returned stems (0.8 GiB). The 30 s and "
    "10 s rows predate the block-wise filter; the 15 s row was re-run with the frame-block "
    "path (each chunk takes it too): 1604 MiB, was 1898 MiB (its 182 s ran beside the "
    "test suite, load average ~5). Chunking is still the way to bound the EM's pooling "
    "window by the segment, but whole-song separation no longer needs it for memory.",
    "Would lower the whole-song peak further: writing the stems to disk as blocks complete "
    "instead of returning them (0.8 GiB), and half-precision LSTM outputs (0.1 GiB).",
]
RESULTS = Path(__file__).resolve().parent / "results"


def _status_mib(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from /proc (Linux), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field} line: this benchmark needs Linux")


def _reset_peak() -> None:
    """Reset ``VmHWM`` to the current RSS (Linux ≥ 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def _mib(tensor: torch.Tensor) -> float:
    return tensor.numel() * tensor.element_size() / 2**20


def worker(args: argparse.Namespace) -> None:
    """Fresh process: build the model and the song, separate once, report one JSON line."""
    from stemkit.inference import separate
    from stemkit.models import build
    from stemkit.models.spectral import Separator

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build("umx", niter=1, wiener_win_len=WIENER_WIN_LEN).eval()
    assert isinstance(model, Separator)
    gen = torch.Generator().manual_seed(args.seed)
    mixture = 0.25 * torch.randn(2, int(args.minutes * 60 * RATE), generator=gen)
    gc.collect()
    baseline = _status_mib("VmRSS")
    stages: list[dict[str, Any]] = []

    def stage(name: str, started: float, tensors: list[torch.Tensor]) -> None:
        stages.append(
            {
                "stage": name,
                "peak_mib": _status_mib("VmHWM"),
                "rss_after_mib": _status_mib("VmRSS"),
                "output_tensor_mib": sum(_mib(tensor) for tensor in tensors),
                "seconds": time.perf_counter() - started,
            }
        )
        _reset_peak()

    _reset_peak()
    start = time.perf_counter()
    with torch.inference_mode():
        if args.mode == "chunked":
            stems = separate(model, mixture, segment=args.segment, overlap=OVERLAP)
            stage("separate (chunked)", start, [stems])
        else:
            # Separator.forward's frame-block path, one stage at a time
            batch = mixture.unsqueeze(0)
            assert model.streams(batch)
            t = time.perf_counter()
            encoded = model.encode_frames(batch)
            stage("STFT + encoders in frame blocks (4 targets)", t, encoded)
            t = time.perf_counter()
            context = model.run_sequence(encoded)
            stage("LSTMs over the whole song (4 targets)", t, context)
            t = time.perf_counter()
            stems = model.decode_and_invert(batch, context)[0]
            del context
            stage(
                f"STFT + decoders + Wiener EM + iSTFT (blocks of {WIENER_WIN_LEN} frames)",
                t,
                [stems],
            )
    seconds = time.perf_counter() - start
    report = {
        "mode": args.mode,
        "minutes": args.minutes,
        "segment_s": args.segment if args.mode == "chunked" else None,
        "overlap": OVERLAP if args.mode == "chunked" else None,
        "seconds": seconds,
        "rtf": seconds / (args.minutes * 60),
        "baseline_rss_mib": baseline,
        "peak_rss_mib": max(s["peak_mib"] for s in stages),
        "mixture_mib": _mib(mixture),
        "stems_mib": _mib(stems),
        "stages": stages,
        "threads": torch.get_num_threads(),
        "stems_shape": list(stems.shape),
    }
    print(json.dumps(report))


def _run(mode: str, args: argparse.Namespace, segment: float) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        mode,
        "--minutes",
        str(args.minutes),
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
        "--segment",
        str(segment),
    ]
    print(f"running {mode} ({args.minutes:g} min, segment {segment:g} s) ...", flush=True)
    load_before = os.getloadavg()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    load_after = os.getloadavg()
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed (exit {done.returncode}):\n{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    report["load_average_before_after"] = [load_before, load_after]
    report["within_budget"] = report["peak_rss_mib"] <= BUDGET_MIB
    return report


def _key(run: dict[str, Any]) -> tuple[str, float, float | None]:
    segment = run.get("segment_s", SEGMENT_S if run["mode"] == "chunked" else None)
    return run["mode"], run["minutes"], segment


def _available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def main(args: argparse.Namespace) -> None:
    # The whole-song run needs about 0.6 GiB plus 0.12 GiB per minute of audio (see the
    # results); refuse rather than push a shared machine into the OOM killer.
    needed = 600.0 + 150.0 * args.minutes
    if "whole" in args.modes and _available_mib() < 1.5 * needed:
        raise SystemExit(
            f"the whole-song mode needs about {needed:.0f} MiB and only "
            f"{_available_mib():.0f} MiB are available: use --minutes smaller or "
            "--modes chunked"
        )
    new_runs = []
    for mode in args.modes:
        for segment in args.segments if mode == "chunked" else [SEGMENT_S]:
            new_runs.append(_run(mode, args, segment))
    path = RESULTS / "long_song.json"
    stored = json.loads(path.read_text())["runs"] if path.exists() else []
    fresh = {_key(run) for run in new_runs}
    runs = [run for run in stored if _key(run) not in fresh] + new_runs
    runs.sort(key=lambda run: (-run["minutes"], run["mode"] != "whole", -(run["segment_s"] or 0)))
    result = {
        "benchmark": "peak RSS separating a long song, umx (umxhq size, random weights), niter=1",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "audio": {"minutes": args.minutes, "rate": RATE, "channels": 2, "signal": "noise"},
        "wiener_win_len": WIENER_WIN_LEN,
        "budget_mib": BUDGET_MIB,
        "machine": {
            "platform": platform.platform(),
            "logical_cores": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "runs": runs,
        "notes": NOTES,
    }
    table = _markdown(result)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "long_song.md").write_text(table)


def rewrite() -> None:
    """Re-render the Markdown (and the notes) from the stored JSON, without running."""
    path = RESULTS / "long_song.json"
    result = json.loads(path.read_text())
    result["notes"] = NOTES
    path.write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "long_song.md").write_text(_markdown(result))


def _markdown(result: dict[str, Any]) -> str:
    minutes = result["audio"]["minutes"]
    lines = [
        f"# Peak memory separating a {minutes:g}-minute song",
        "",
        f"{minutes:g} min of stereo noise at {RATE} Hz, `umx` at umxhq size (hidden 512, 4 "
        f"targets, random weights), `niter=1`, `wiener_win_len={WIENER_WIN_LEN}`. Peak RSS of a "
        "fresh process per mode (`VmHWM`, reset after building the model and the mixture; "
        "'baseline' is the RSS at that point: Python, torch, the model and the mixture). "
        f"Budget: {result['budget_mib']:.0f} MiB for the whole process. Date {result['date']}.",
        "",
        "| minutes | mode | peak RSS (MiB) | baseline (MiB) | above baseline (MiB) | within budget "
        "| time (s) | RTF | threads | load avg before → after (1 min) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in result["runs"]:
        before, after = run["load_average_before_after"]
        label = (
            "whole song (segment None)"
            if run["mode"] == "whole"
            else f"chunked ({run['segment_s']:g} s, overlap {run['overlap']:g})"
        )
        lines.append(
            f"| {run['minutes']:g} | {label} | {run['peak_rss_mib']:.0f} "
            f"| {run['baseline_rss_mib']:.0f} "
            f"| {run['peak_rss_mib'] - run['baseline_rss_mib']:.0f} "
            f"| {'yes' if run['within_budget'] else 'no'} | {run['seconds']:.1f} "
            f"| {run['rtf']:.3f} | {run['threads']} | {before[0]:.2f} → {after[0]:.2f} |"
        )
    for whole in (run for run in result["runs"] if run["mode"] == "whole"):
        lines += [
            "",
            f"## Whole song ({whole['minutes']:g} min): where the memory goes",
            "",
            "Each stage's peak is measured with the high-water mark reset at its start; "
            "'held after' is the RSS when the stage returns (tensors kept for later stages, "
            "and freed memory the allocator has not handed back); 'transient' = the stage's "
            "peak minus the RSS held before it.",
            "",
            "| stage | peak RSS (MiB) | transient (MiB) | held after (MiB) "
            "| its output tensors (MiB) | time (s) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        held = whole["baseline_rss_mib"]
        for item in whole["stages"]:
            size = item["output_tensor_mib"]
            lines.append(
                f"| {item['stage']} | {item['peak_mib']:.0f} | {item['peak_mib'] - held:.0f} "
                f"| {item['rss_after_mib']:.0f} | {'-' if size is None else f'{size:.0f}'} "
                f"| {item['seconds']:.1f} |"
            )
            held = item["rss_after_mib"]
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="song length in minutes")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--segments",
        type=float,
        nargs="+",
        default=[SEGMENT_S],
        help="chunk lengths in seconds for the chunked mode",
    )
    parser.add_argument("--segment", type=float, default=SEGMENT_S, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rewrite",
        action="store_true",
        help="only re-render long_song.md (and the notes in the JSON) from the stored JSON",
    )
    parser.add_argument("--worker", choices=MODES, dest="mode", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = _parse()
    if arguments.mode:
        worker(arguments)
    elif arguments.rewrite:
        rewrite()
    else:
        main(arguments)
