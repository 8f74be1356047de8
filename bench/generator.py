"""Benchmark: seconds of song the generator writes per second per core, production on and off.

Writes a few songs (3 × 20 s by default) with ``synthesize(..., workers=1)`` for each soundfont
on its own and for the default pool, with production on and off, and reports seconds of song
per wall second and per CPU second of the process (one worker: one core), and the cost of
production as a ratio. The soundfont screening (cached per process) is done before the clock
starts, so the figures are the steady-state rate of a long run.

Writes ``bench/results/generator.json`` and ``bench/results/generator.md``.

Usage:
    python bench/generator.py [--songs 3] [--duration 20]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from stemkit.data.synth import GENERATOR_VERSION, synthesize
from stemkit.data.synth.generate import select_soundfonts
from stemkit.data.synth.render import fluidsynth_version
from stemkit.data.synth.soundfonts import discover

RESULTS = Path(__file__).parent / "results"


def measure(soundfonts: str, production: bool, songs: int, duration: float) -> dict[str, Any]:
    """Time one dataset of ``songs`` songs; returns the rates."""
    select_soundfonts(soundfonts)  # screening, outside the clock
    with tempfile.TemporaryDirectory(prefix="stemkit-bench-") as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        synthesize(
            Path(tmp) / "data",
            songs,
            duration,
            seed=1,
            soundfonts=soundfonts,
            production=production,
            n_test=0,
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    audio = songs * duration
    return {
        "soundfonts": soundfonts,
        "production": production,
        "songs": songs,
        "duration_s": duration,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "song_s_per_wall_s": round(audio / wall, 2),
        "song_s_per_cpu_s": round(audio / cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args()

    conditions = [font.name for font in discover()] + ["all"]
    load_before = os.getloadavg()[0]
    rows = []
    for fonts in conditions:
        for production in (False, True):
            row = measure(fonts, production, args.songs, args.duration)
            rows.append(row)
            print(json.dumps(row))
    load_after = os.getloadavg()[0]
    for row in rows:
        if row["production"]:
            dry = next(
                r for r in rows if r["soundfonts"] == row["soundfonts"] and not r["production"]
            )
            row["cpu_cost_of_production"] = round(row["cpu_s"] / dry["cpu_s"], 2)
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "generator_version": GENERATOR_VERSION,
        "fluidsynth": fluidsynth_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "workers": 1,
        "load_avg_1min": [round(load_before, 2), round(load_after, 2)],
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "generator.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Synthetic song generator: throughput",
        "",
        f"{args.songs} songs of {args.duration:g} s per row, written with `synthesize(..., "
        "workers=1)` (one process, one core) into a temporary folder: compose, render with "
        "FluidSynth, produce (per-stem pedalboard chain, bus compressor and limiter) when on, "
        "mix exactly, write 5 WAVs + MIDI + JSON. 'all' is the default pool (every installed "
        "soundfont but the one reserved for held-out songs). Soundfont screening is done "
        f"before the clock starts. Generator {GENERATOR_VERSION}, FluidSynth "
        f"{result['fluidsynth']}, {result['machine']}; load average "
        f"{load_before:.2f} → {load_after:.2f}. Date {result['date']}.",
        "",
        "| soundfonts | production | song s per wall s | song s per CPU s | CPU cost of "
        "production |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        cost = f"{row['cpu_cost_of_production']:.2f}×" if row["production"] else ""
        lines.append(
            f"| {row['soundfonts']} | {'on' if row['production'] else 'off'} | "
            f"{row['song_s_per_wall_s']:.1f} | {row['song_s_per_cpu_s']:.1f} | {cost} |"
        )
    lines += [
        "",
        "Seconds of song, not of stem audio: each song second is four stems and a mixture. "
        "The machine is shared (2 cores), so wall rates move with its load; CPU rates less so.",
    ]
    (RESULTS / "generator.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
