"""Benchmark: peak memory of ``stemkit separate`` against song length, streamed and whole-song.

For each model and song length, a fresh interpreter separates one generated 44.1 kHz stereo
song (16-bit wav of tones and noise, written block by block) into a stem folder of 16-bit wav
files and reports its peak RSS (``ru_maxrss``), its RSS after building the model (the baseline)
and the wall time, with glibc's default allocator and (``--allocators fixed``) with its mmap
threshold fixed at 128 KiB (``MALLOC_MMAP_THRESHOLD_``): by default glibc raises the threshold
whenever a large block is freed, and freed blocks then stay in the heap, so the peak wanders
with the order of allocations; a fixed threshold shows what the program holds:

* ``streamed``: ``Separator.separate_file`` (decode, resample, separate, encode in blocks;
  :mod:`stemkit.inference.files`);
* ``whole``: the path ``stemkit separate`` took before: ``read_audio`` the whole song,
  ``resample``, ``stemkit.inference.separate``, resample back, ``write_audio`` each stem.

Models: ``identity`` (4 stems, 44.1 kHz, 15 s segments: the I/O alone), ``umx-h16``
(Open-Unmix at the paper's STFT, 4 targets, hidden size 16, random weights, Wiener EM
``niter=1``: a whole-song model, cut into 60 s segments past 10 minutes), ``umxhq`` (the same
at paper size: hidden 512, 16 kHz bandwidth), ``convtasnet`` (random weights, its default
segment) and ``demucs-c100`` (Demucs v1 at paper size, C1=100, 648.5 M parameters: the
largest working memory of bench/results/separation.md; its default segment). Every model
runs with the settings ``stemkit separate`` gives it by default.

Merges each run into ``bench/results/memory.json`` as soon as it is measured (a run with the
same model, path, allocator and length replaces the stored one) and rewrites
``bench/results/memory.md`` from it (``--rewrite`` only re-renders).

Usage:
    python bench/memory.py [--models identity umx-h16] [--minutes 1 5 10 20]
        [--paths streamed whole] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

RATE = 44100
RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("identity", "umx-h16", "umxhq", "convtasnet", "demucs-c100")
PATHS = ("streamed", "whole")
ALLOCATORS = {"default": {}, "fixed": {"MALLOC_MMAP_THRESHOLD_": "131072"}}
#: Findings, written after reading a run; re-rendered with the table (``--rewrite``).
NOTES: list[str] = [
    "Identity (4 stems, 15 s segments): the whole-song path grows by 123 MiB per minute of "
    "song (2.0 MB per second: the song, four stems and the writer's copies), 2.7 GiB for 20 "
    "minutes; streamed, the program holds the same 99 MiB above its baseline for 1 to 60 "
    "minutes (fixed allocator: 325 → 324 MiB). With glibc's default allocator the peak "
    "wanders between 401 and 468 MiB with no trend in the song's length (freed blocks kept in "
    "the heap; 1.1 MiB per minute from 1 to 60 minutes, under 1 % of the whole-song path's "
    "slope).",
    "Open-Unmix (whole-song model): streamed, songs up to 10 minutes still go through the "
    "model whole (their stems are unchanged), so their peak still grows with the song, "
    "though less than before (10 minutes: 1462 MiB streamed against 2334 MiB whole, the stems "
    "no longer held); past 10 minutes the song is cut into segments and the peak stops "
    "growing. With 120 s segments (the first setting) 20 and 60 minutes peaked at 1083 and "
    "1097 MiB, twice the 1-minute peak (523 MiB); 60 s segments (the setting kept) bring a "
    "20-minute song to 745 MiB and a 60-minute one to 762 MiB, 1.46 times the 1-minute song "
    "(the fixed-allocator 20-minute row was measured with 120 s segments, as its segment "
    "column says).",
    "Open-Unmix at paper size (umxhq: hidden 512, 4 targets, niter=1, the settings `stemkit "
    "separate` gives it): 1 minute peaks at 686 MiB and 60 minutes (60 s segments) at 929 MiB, "
    "1.36 times the 1-minute song, within the 1.5× target. A 10-minute song, still separated "
    "whole so that its stems are exactly those of whole-song separation, peaks at 1776 MiB "
    "(2.6×): the whole song's stems (4 × stereo float32, 81 MiB per minute of song), the "
    "mixture (20 MiB per minute) and the per-frame features of the frame-block path (4 targets "
    "× 512 floats × 43 frames per second, 21 MiB per minute) exist at once. That is the price "
    "of WHOLE_SONG_LIMIT; lowering it to about 1 minute would hold every length near the "
    "1-minute peak, but would cut songs of 1 to 10 minutes into segments whose cross-fades "
    "change the stems (up to 1.8 % relative over the last second, reference/pitfalls.md), so "
    "the limit is left at 10 minutes.",
    "Demucs v1 at paper size (demucs-c100, 648.5 M parameters, 2.6 GB of float32 weights: "
    "the largest working memory of bench/results/separation.md), its default 15 s segments "
    "four per model call (its default batch since 2026-12-04), 1 thread: 1 minute peaks at "
    "4206 MiB (1500 MiB above the loaded model) and 60 minutes at 4250 MiB, 1.01 times the "
    "1-minute peak: the model holds one batch of segments at a time, so nothing in it grows "
    "with the song. The 60-minute song took 2214 s (0.62 of real time, one thread, the "
    "overlaps' extra quarter included). With one segment per call (the previous default) "
    "the same runs peaked at 3491 and 3563 MiB (1.02×).",
    "Times are not comparable across rows: the runs shared 2 cores with other jobs (load "
    "average 5 to 7), and the fixed allocator is slow (every block over 128 KiB is mapped and "
    "unmapped).",
]
#: Bytes per second of a 44.1 kHz stereo song held once as float32.
HELD_PER_SECOND = RATE * 2 * 4


def build_model(name: str) -> Any:
    from stemkit.models import build

    sources = ("vocals", "drums", "bass", "other")
    if name == "identity":
        return build("identity", sources=sources, sample_rate=RATE)
    if name == "umx-h16":
        return build("umx", sources=sources, hidden_size=16, niter=1)
    if name == "umxhq":
        # the paper-size Open-Unmix (umxhq: hidden 512, 16 kHz input band) separating as the
        # published model does, with one Wiener EM iteration
        return build("umx", sources=sources, niter=1)
    if name == "convtasnet":
        return build("convtasnet", sources=sources)
    if name == "demucs-c100":
        # the largest model by working memory (bench/results/separation.md): Demucs v1 at paper
        # size, 648.5 M parameters (2.6 GB of float32 weights), its default 15 s segments
        return build("demucs", sources=sources, channels=100)
    raise ValueError(name)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS line: this benchmark needs Linux")


def worker(args: argparse.Namespace) -> None:
    """Fresh process: one separation, one JSON line."""
    import resource

    import torch

    from stemkit.api import Separator, StemFiles, _at_rate
    from stemkit.audio import read_audio, resample, write_audio

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.model)
    separator = Separator(model, name=args.model)
    baseline = rss_mib()
    out = Path(args.out)
    start = time.perf_counter()
    if args.path == "streamed":
        separator.separate_file(args.song, out)
    else:
        audio, song_rate = read_audio(args.song, channels=separator.audio_channels)
        stems = separator._separate(resample(audio, song_rate, separator.sample_rate))
        rate = StemFiles().rate_for(song_rate, separator.sample_rate)
        (out / "song").mkdir(parents=True)
        for name, stem in zip(separator.sources, stems, strict=True):
            signal = _at_rate(stem, separator.sample_rate, rate, audio.shape[-1])
            write_audio(out / "song" / f"{name}.wav", signal, rate, clip="clamp")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    segment = separator.segment
    if args.path == "streamed" and segment is None and args.minutes * 60 > 600:
        from stemkit.inference.files import LONG_SONG_SEGMENT

        segment = LONG_SONG_SEGMENT
    print(
        json.dumps(
            {
                "model": args.model,
                "path": args.path,
                "minutes": args.minutes,
                "segment_s": segment,
                "batch_size": separator.batch_size,
                "baseline_rss_mib": baseline,
                "peak_rss_mib": peak,
                "seconds": seconds,
                "rtf": seconds / (args.minutes * 60),
                "threads": torch.get_num_threads(),
            }
        )
    )


def write_song(path: Path, minutes: float) -> Path:
    """Tones and noise, written 10 s at a time."""
    rng = np.random.default_rng(0)
    block = 10 * RATE
    with sf.SoundFile(path, "w", RATE, 2, subtype="PCM_16") as handle:
        for start in range(0, round(minutes * 60 * RATE), block):
            t = np.arange(start, start + block) / RATE
            tones = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)])
            handle.write((tones + 0.1 * rng.standard_normal((2, block))).T.astype(np.float32))
    return path


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="stemkit-memory-") as folder:
        for minutes in args.minutes:
            song = write_song(Path(folder) / "song.wav", minutes)
            for model, path, allocator in (
                (m, p, a) for m in args.models for p in args.paths for a in args.allocators
            ):
                if path == "whole" and (minutes > args.whole_max or allocator != "default"):
                    continue
                out = Path(folder) / f"out-{model}-{path}-{minutes}"
                command = [
                    sys.executable, str(Path(__file__).resolve()), "--worker",
                    "--model", model, "--path", path, "--minutes", str(minutes),
                    "--song", str(song), "--out", str(out), "--threads", str(args.threads),
                ]  # fmt: skip
                print(f"{model} {path} {allocator} {minutes:g} min ...", flush=True)
                load = os.getloadavg()[0]
                env = {**os.environ, **ALLOCATORS[allocator]}
                done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
                if done.returncode != 0:
                    raise RuntimeError(done.stderr)
                report = json.loads(done.stdout.splitlines()[-1])
                report["load_average"] = [load, os.getloadavg()[0]]
                report["allocator"] = allocator
                print(
                    f"  peak {report['peak_rss_mib']:.0f} MiB, {report['seconds']:.1f} s",
                    flush=True,
                )
                runs.append(report)
                save([report])  # row by row: a long run interrupted keeps what it measured
                shutil.rmtree(out, ignore_errors=True)
    return runs


def save(runs: list[dict[str, Any]]) -> None:
    """Merge ``runs`` into the stored results and rewrite both files."""
    merged = merge(runs)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps({"runs": merged}, indent=2) + "\n")
    (RESULTS / "memory.md").write_text(render(merged))


def merge(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stored_path = RESULTS / "memory.json"
    stored = json.loads(stored_path.read_text())["runs"] if stored_path.exists() else []
    key = lambda r: (r["model"], r["path"], r["allocator"], r["minutes"])  # noqa: E731
    fresh = {key(r) for r in runs}
    merged = [r for r in stored if key(r) not in fresh] + runs
    return sorted(merged, key=lambda r: (MODELS.index(r["model"]), *key(r)[1:]))


def render(runs: list[dict[str, Any]]) -> str:
    lines = [
        "# Peak memory of `stemkit separate` against song length",
        "",
        "Generated 44.1 kHz stereo 16-bit wav songs, 4 stems written as 16-bit wav, one fresh "
        "process per run, peak RSS (`ru_maxrss`; allocator `default`: glibc as it comes, "
        "`fixed`: mmap threshold fixed at 128 KiB, so freed blocks go back to the system and "
        "the peak is what the program holds), "
        f"{runs[0]['threads'] if runs else 1} thread. `streamed`: `Separator.separate_file` "
        "(blocks in, blocks out); `whole`: the path before it (whole song read, separated, "
        "written). Growth: MiB per minute of song between the shortest and the longest run of "
        "the row's model and path; holding a 44.1 kHz stereo song once as float32 costs "
        f"{HELD_PER_SECOND * 60 / 2**20:.1f} MiB per minute.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), "
        f"Python {platform.python_version()}; "
        f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Times are upper "
        "bounds: the machine was shared (load average in the json).",
        "",
        "| model | path | allocator | minutes | segment (s) | chunks per call | baseline (MiB) "
        "| peak (MiB) | peak − baseline (MiB) | time (s) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        segment = "whole" if r["segment_s"] is None else f"{r['segment_s']:g}"
        lines.append(
            f"| {r['model']} | {r['path']} | {r['allocator']} | {r['minutes']:g} | {segment} | "
            f"{r.get('batch_size', 1)} | {r['baseline_rss_mib']:.0f} | {r['peak_rss_mib']:.0f} | "
            f"{r['peak_rss_mib'] - r['baseline_rss_mib']:.0f} | {r['seconds']:.1f} |"
        )
    lines += [
        "",
        "| model | path | allocator | minutes | peak growth (MiB per minute of song) | "
        "peak ratio longest / shortest |",
        "| --- | --- | --- | --- | ---: | ---: |",
    ]
    for model, path, allocator in ((m, p, a) for m in MODELS for p in PATHS for a in ALLOCATORS):
        rows = [
            r for r in runs if (r["model"], r["path"], r["allocator"]) == (model, path, allocator)
        ]
        if len(rows) < 2:
            continue
        short, long = rows[0], rows[-1]
        slope = (long["peak_rss_mib"] - short["peak_rss_mib"]) / (
            long["minutes"] - short["minutes"]
        )
        lines.append(
            f"| {model} | {path} | {allocator} | {short['minutes']:g} → {long['minutes']:g} | "
            f"{slope:.2f} | {long['peak_rss_mib'] / short['peak_rss_mib']:.2f} |"
        )
    lines += ["", *(f"- {note}" for note in NOTES)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["identity", "umx-h16"], choices=MODELS)
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--minutes", nargs="+", type=float, default=[1, 5, 10, 20])
    parser.add_argument("--whole-max", type=float, default=20, help="longest whole-path song")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--allocators", nargs="+", default=["default"], choices=list(ALLOCATORS))
    parser.add_argument("--rewrite", action="store_true", help="re-render the stored results")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--song", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.minutes = args.minutes[0]
        worker(args)
        return
    if args.rewrite:
        save([])
    else:
        run(args)
    print((RESULTS / "memory.md").read_text())


if __name__ == "__main__":
    main()
