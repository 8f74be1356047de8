"""Benchmark: a catalogue of songs separated by one process, and by 1 and 2 Ray workers.

Generates ``--songs`` stereo songs of ``--seconds`` s (seeded tones, noise bursts and a noise
floor at 44.1 kHz, float wav) and separates them with the bundled default model (Open-Unmix
small) three ways, each as its own ``stemkit separate`` process, end to end (start-up, model
loading, every song written):

* ``single``: the plain command, one process, one torch thread;
* ``ray-1`` / ``ray-2``: ``--ray ADDRESS --workers N --manifest FILE`` against a local Ray
  cluster of 2 CPUs started once by this script (its start-up, about 9 s here, is reported
  apart, as a cluster outlives its jobs).

Throughput is audio hours per wall-clock hour of the command. The stem files of every Ray run
are checked to be byte-identical to the single-process run's. Per-song seconds and CPU seconds
come from the markers' cost records; the manifest's summary gives the Green Algorithms
energy. A profile of one song splits a worker's time into decode, model, encode and write.

Writes ``bench/results/catalogue.json`` and ``bench/results/catalogue.md``. The load average
before and after is recorded: on a shared machine the timings are upper bounds.

Usage:
    python bench/catalogue.py [--songs 12] [--seconds 30] [--model default] [--repeats 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
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
SRC = Path(__file__).resolve().parents[1] / "src"


def _songs(folder: Path, count: int, seconds: float) -> float:
    """Write ``count`` songs; returns their total duration in seconds."""
    folder.mkdir(parents=True)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    for i in range(count):
        rng = np.random.default_rng(i)
        tones = sum(0.1 * np.sin(2 * np.pi * f * t) for f in rng.uniform(60, 1200, size=4))
        bursts = 0.2 * rng.standard_normal(n) * (np.sin(2 * np.pi * 2 * t) > 0.7)
        song = tones + bursts + 1e-3 * rng.standard_normal(n)
        pan = rng.uniform(0.6, 1.0, size=2)
        sf.write(folder / f"song {i:03d}.wav", (song[:, None] * pan).astype(np.float32), RATE)
    return count * n / RATE


def _run(argv: list[str], env: dict[str, str]) -> float:
    """Run ``stemkit`` with ``argv``; its wall time in seconds."""
    start = time.perf_counter()
    # os.environ as it is now: after ray.init it holds the cluster's authentication mode
    command = [sys.executable, "-m", "stemkit.cli.main", "separate", *argv]
    subprocess.run(command, env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _stems(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*.wav"))
        if p.is_file()
    }


def _costs(folder: Path) -> list[dict[str, Any]]:
    return [
        json.loads(marker.read_text())["cost"]
        for marker in sorted(folder.glob("*/.stemkit-stems.json"))
    ]


def _profile(song: Path, model: str) -> dict[str, float]:
    """Seconds per audio second of one song: decode, model, encode (to memory), write."""
    import torch

    from stemkit.api import Separator
    from stemkit.audio import read_audio

    separator = Separator.from_pretrained(model, device="cpu")
    start = time.perf_counter()
    audio, rate = read_audio(song, channels=2)
    decode = time.perf_counter() - start
    seconds = audio.shape[-1] / rate
    with torch.no_grad():
        start = time.perf_counter()
        stems = separator.separate(audio, rate)
        model_time = time.perf_counter() - start
    start = time.perf_counter()
    encoded = []
    for stem in stems.values():
        buffer = io.BytesIO()
        sf.write(buffer, stem.numpy().T, rate, subtype="PCM_16", format="WAV")
        encoded.append(buffer.getvalue())
    encode = time.perf_counter() - start
    with tempfile.TemporaryDirectory(dir=song.parent) as folder:
        start = time.perf_counter()
        for i, data in enumerate(encoded):
            with open(Path(folder) / f"{i}.wav", "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        write = time.perf_counter() - start
    return {
        "audio_seconds": seconds,
        "decode": decode / seconds,
        "model": model_time / seconds,
        "encode": encode / seconds,
        "write": write / seconds,
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    import torch

    import stemkit

    load_before = list(os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="cat", dir="/tmp"))  # Ray's socket paths stay short
    env = {
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    os.environ["PYTHONPATH"] = env["PYTHONPATH"]  # the cluster's workers inherit it
    try:
        audio = _songs(work / "songs", args.songs, args.seconds)
        common = [str(work / "songs"), "--model", args.model, "-q", "--device", "cpu"]
        reference: dict[str, bytes] = {}
        best: dict[str, dict[str, Any]] = {}

        def keep(row: dict[str, Any]) -> None:
            # best of the repeats: the run least disturbed by the machine's other work
            if row["run"] not in best or row["wall_seconds"] < best[row["run"]]["wall_seconds"]:
                best[row["run"]] = row

        start = time.perf_counter()
        context = ray.init(
            num_cpus=2,
            include_dashboard=False,
            _temp_dir=str(work / "ray"),
            configure_logging=False,
            log_to_driver=False,
        )
        cluster_start = time.perf_counter() - start
        address = str(context.address_info["address"])
        try:
            # interleaved, so that a change in the machine's load hits every configuration
            for repeat in range(args.repeats):
                single = work / f"single-{repeat}"
                wall = _run([*common, "-o", str(single)], env)
                reference = reference or _stems(single)
                if _stems(single) != reference:
                    raise SystemExit("single: stems differ between repeats")
                keep(_row("single", 1, wall, audio, _costs(single), None))
                for workers in (1, 2):
                    name = f"ray-{workers}"
                    out, manifest = work / f"{name}-{repeat}", work / f"{name}-{repeat}.jsonl"
                    argv = [*common, "-o", str(out), "--ray", address, "--workers", str(workers)]
                    wall = _run([*argv, "--manifest", str(manifest)], env)
                    if _stems(out) != reference:
                        raise SystemExit(f"{name}: stems differ from the single process's")
                    summary = json.loads(manifest.read_text().splitlines()[-1])["summary"]
                    keep(_row(name, workers, wall, audio, _costs(out), summary))
        finally:
            ray.shutdown()
        rows = [best["single"], best["ray-1"], best["ray-2"]]
        profile = _profile(work / "songs" / "song 000.wav", args.model)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]["throughput"]
    for row in rows:
        row["speed-up"] = row["throughput"] / base
    return {
        "benchmark": "catalogue",
        "songs": args.songs,
        "song_seconds": args.seconds,
        "audio_seconds": audio,
        "model": args.model,
        "repeats": args.repeats,
        "cluster_start_seconds": cluster_start,
        "rows": rows,
        "profile": profile,
        "identical_stems": True,
        "machine": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "ray": ray.__version__,
            "stemkit": stemkit.__version__,
            "load_before": load_before,
            "load_after": list(os.getloadavg()),
        },
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _row(
    name: str,
    workers: int,
    wall: float,
    audio: float,
    costs: list[dict[str, Any]],
    summary: dict[str, Any] | None,
) -> dict[str, Any]:
    song_seconds = sum(float(c["seconds"]) for c in costs)
    return {
        "run": name,
        "workers": workers,
        "wall_seconds": wall,
        # audio hours per wall-clock hour, end to end
        "throughput": audio / wall,
        # per worker, while separating (start-up and model loading excluded)
        "per_worker_busy_throughput": audio / song_seconds,
        "song_seconds": song_seconds,
        "cpu_seconds": sum(float(c["cpu_seconds"]) for c in costs),
        "energy_kwh": sum(float(c["energy_kwh"]) for c in costs),
        "job_seconds": summary["wall_seconds"] if summary else None,
    }


def _markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    profile = result["profile"]
    lines = [
        "# Catalogue benchmark: one process against Ray workers",
        "",
        f"{result['songs']} songs of {result['song_seconds']:g} s (44.1 kHz stereo, "
        f"{result['audio_seconds'] / 60:.1f} min of audio), model `{result['model']}` on the "
        "CPU, one torch thread per process. Every run is a separate `stemkit separate` process, "
        "timed end to end (start-up, model loading, all songs written), best of "
        f"{result['repeats']} interleaved runs; the Ray runs join a "
        f"local cluster of 2 CPUs whose start-up ({result['cluster_start_seconds']:.1f} s) is "
        "not included. Throughput = audio hours per wall-clock hour; 'busy' = audio over the "
        "summed per-song seconds of the markers (what one worker does while separating). "
        "The stems of both Ray runs are byte-identical to the single process's.",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} logical cores shared with other jobs, "
        f"{machine['platform']}, Python {machine['python']}, torch {machine['torch']}, "
        f"ray {machine['ray']}. Load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.2f}' for x in machine['load_before'])}, after "
        f"{'/'.join(f'{x:.2f}' for x in machine['load_after'])}: timings are upper bounds. "
        f"Date {result['date']}.",
        "",
        "| run | workers | wall (s) | throughput (audio h / h) | speed-up | busy throughput per "
        "worker | song seconds | CPU seconds | energy (Wh, Green Algorithms) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['run']} | {row['workers']} | {row['wall_seconds']:.1f} | "
            f"{row['throughput']:.1f} | {row['speed-up']:.2f} | "
            f"{row['per_worker_busy_throughput']:.1f} | {row['song_seconds']:.1f} | "
            f"{row['cpu_seconds']:.1f} | {row['energy_kwh'] * 1000:.3f} |"
        )
    total = sum(profile[k] for k in ("decode", "model", "encode", "write"))
    lines += [
        "",
        f"Where a worker's time goes (one {profile['audio_seconds']:.0f} s song, seconds per "
        "audio second, in one process):",
        "",
        "| decode | model | encode (16-bit wav) | write (fsync) | total |",
        "| --- | --- | --- | --- | --- |",
        f"| {profile['decode']:.4f} | {profile['model']:.4f} | {profile['encode']:.4f} | "
        f"{profile['write']:.4f} | {total:.4f} |",
        "",
    ]
    return "\n".join(lines)


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--songs", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=2, help="best of N interleaved runs")
    return parser.parse_args(argv)


if __name__ == "__main__":
    outcome = main(_parse())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "catalogue.json").write_text(json.dumps(outcome, indent=2) + "\n")
    (RESULTS / "catalogue.md").write_text(_markdown(outcome))
    print(_markdown(outcome))
