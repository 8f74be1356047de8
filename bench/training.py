"""Benchmark: training throughput on CPU, in seconds of excerpt audio per wall-clock second.

Times full optimiser steps (loss forward, backward, gradient clipping, Adam step) of two
presets on random stereo excerpts at 44.1 kHz, after warm-up steps:

* ``umxhq``: Open-Unmix at the UMX-HQ size (hidden 512, n_fft 4096, hop 1024, bandwidth
  16 kHz), four targets, magnitude MSE, 6 s excerpts;
* ``bsrnn_small``: band-split RNN at the replication's "bsrnn" size (N=64, R=8), one source
  (vocals), t+tf L1 loss, 3 s excerpts;
* ``bsrnn_large``: the same at the large size (N=128, R=12).

The batch is smaller than the recipes' 16 so that the run stays short; throughput per excerpt
second barely depends on it on CPU. Writes ``bench/results/training.json`` and ``.md`` with the
machine, the thread count and the load average before and after (on a shared machine the
timings are lower bounds of the throughput). Presets not run this time keep their earlier row
(each row records its own date and load), so a slow preset can be re-measured alone.

Usage:
    python bench/training.py [--steps 3] [--warmup 1] [--batch 2] [--threads 1] [--presets ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

RATE = 44100
RESULTS = Path(__file__).resolve().parent / "results"

PRESETS: dict[str, dict[str, Any]] = {
    "umxhq": dict(
        model="umx",
        sources=["vocals", "drums", "bass", "other"],
        kwargs=dict(hidden_size=512, n_fft=4096, n_hop=1024, bandwidth=16000),
        loss="spectral_mse",
        excerpt=6.0,
    ),
    "bsrnn_small": dict(
        model="bsrnn",
        sources=["vocals"],
        kwargs=dict(n_features=64, n_layers=8, fac_sep=2, fac_mask=4, n_fft=2048, n_hop=512),
        loss="tf_l1",
        excerpt=3.0,
    ),
    "bsrnn_large": dict(
        model="bsrnn",
        sources=["vocals"],
        kwargs=dict(n_features=128, n_layers=12, fac_sep=2, fac_mask=4, n_fft=2048, n_hop=512),
        loss="tf_l1",
        excerpt=3.0,
    ),
}


def bench_preset(name: str, steps: int, warmup: int, batch: int) -> dict[str, Any]:
    """Time ``steps`` training steps of preset ``name`` after ``warmup`` untimed ones."""
    from stemkit import models
    from stemkit.models.base import SeparationModel
    from stemkit.train.objectives import compute_loss

    preset = PRESETS[name]
    torch.manual_seed(0)
    model = models.build(preset["model"], sources=preset["sources"], **preset["kwargs"])
    assert isinstance(model, SeparationModel)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    nb_samples = int(preset["excerpt"] * RATE)
    stems = 0.1 * torch.randn(batch, len(preset["sources"]), 2, nb_samples)
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        loss = compute_loss(model, stems.sum(dim=1), stems, preset["loss"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    audio_per_step = batch * preset["excerpt"]
    median = statistics.median(times)
    return {
        "model": preset["model"],
        "sources": preset["sources"],
        "kwargs": preset["kwargs"],
        "loss": preset["loss"],
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "batch": batch,
        "excerpt_seconds": preset["excerpt"],
        "steps": steps,
        "warmup": warmup,
        "step_seconds": times,
        "median_step_seconds": median,
        "excerpt_seconds_per_second": audio_per_step / median,
    }


def main() -> None:
    """Run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    results = {}
    for name in args.presets:
        row_load = os.getloadavg()[0]
        results[name] = bench_preset(name, args.steps, args.warmup, args.batch)
        results[name]["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        results[name]["load_average"] = [row_load, os.getloadavg()[0]]
        rate = results[name]["excerpt_seconds_per_second"]
        step = results[name]["median_step_seconds"]
        print(f"{name}: {rate:.2f} excerpt-s/s (median step {step:.2f} s)")
    document = {
        "benchmark": "training throughput (CPU)",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_seconds": time.perf_counter() - started,
        "presets": results,
    }
    previous = RESULTS / "training.json"
    if previous.is_file():
        earlier = json.loads(previous.read_text())
        kept = earlier.get("presets", {})
        for row in kept.values():  # rows written before rows carried their own date and load
            row.setdefault("date", earlier.get("date"))
            loads = earlier.get("load_average_before", [None]), earlier.get("load_average_after")
            row.setdefault("load_average", [loads[0][0], (loads[1] or [None])[0]])
        document["presets"] = {**{k: v for k, v in kept.items() if k in PRESETS}, **results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "training.json").write_text(json.dumps(document, indent=2))
    (RESULTS / "training.md").write_text(_markdown(document))
    print(f"wrote {RESULTS / 'training.json'} and {RESULTS / 'training.md'}")


def _load(pair: list[float] | None) -> str:
    return "-" if pair is None else f"{pair[0]:.2f} → {pair[1]:.2f}"


def _markdown(document: dict[str, Any]) -> str:
    machine = document["machine"]
    lines = [
        "# Training throughput (CPU)",
        "",
        f"{document['date']}, {machine['platform']}, {machine['cpu_count']} cores, "
        f"torch {machine['torch']}, {machine['threads']} thread(s); load average before "
        f"{document['load_average_before'][0]:.2f}, after {document['load_average_after'][0]:.2f}"
        " (other jobs share the machine: the throughput is a lower bound). Rows keep the date "
        "and load of their own measurement.",
        "",
        "| preset | params (M) | loss | batch × excerpt | median step (s) | excerpt-s / s "
        "| date | load (1 min) |",
        "|---|---:|---|---:|---:|---:|---|---|",
    ]
    for name, row in document["presets"].items():
        lines.append(
            f"| {name} | {row['parameters_m']:.2f} | {row['loss']} | "
            f"{row['batch']} × {row['excerpt_seconds']:g} s | {row['median_step_seconds']:.2f} | "
            f"{row['excerpt_seconds_per_second']:.2f} | {row.get('date', document['date'])} | "
            f"{_load(row.get('load_average'))} |"
        )
    lines += [
        "",
        "One step = loss forward, backward, gradient clipping (5) and an Adam step, on random "
        "stereo audio at 44.1 kHz, after warm-up steps. At this rate one epoch of the recipes "
        "(UMX-HQ: 5504 excerpts of 6 s; BSRNN: 20000 of 3 s) takes the excerpt seconds divided "
        "by the throughput.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
