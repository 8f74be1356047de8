"""Benchmark for a GPU session: every system's speed and memory in float32 and bf16, BSS Eval on
the device, and training throughput with bf16 autocast, in one short run.

GPU time is scarce (a session may get 15 minutes of a machine), so this script is prepared to
run once, unattended, in a few minutes, and to leave its results behind even if it is cut off:
``bench/results/gpu.json`` and ``gpu.md`` are rewritten after every row.

Measured per system, at the published size, with random weights (speed does not depend on them):

* **FLOPs per second of audio**, counted on a 1 s input with :class:`torch.utils.flop_counter.
  FlopCounterMode` (matrix products and convolutions; STFTs and element-wise work are not
  counted, so the achieved FLOP/s is a lower bound of the work done);
* **real-time factor** (seconds of audio per second of wall time, after a warm-up, the best of
  ``--repeats``) of :func:`stemkit.inference.separate` on ``--duration`` seconds, with the
  model's own chunking, in float32 and under bf16 autocast; and the **achieved FLOP/s**;
* **peak device memory** (``torch.cuda.max_memory_allocated``) of each run;
* **bf16 error**: the largest difference between the bf16 and float32 stems, relative to the
  float32 stems' peak (bf16 keeps 8 bits of mantissa: about 4e-3 per rounding).

Then BSS Eval v4 (:func:`stemkit.metrics.bsseval.bss_eval_v4`) of 3 minutes of 4-source stereo
on the device against the CPU (time and the largest SDR difference), and training steps per
second of Open-Unmix (UMX-HQ size) in float32 and bf16 autocast.

``--device cpu --quick`` runs every row at tiny sizes, to check the script before a GPU session.

Usage:
    python bench/gpu.py [--device cuda] [--duration 60] [--repeats 3] [--only umx,bsrnn,...]
        [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from stemkit import models
from stemkit.inference import separate

RESULTS = Path(__file__).resolve().parent / "results"

#: name → (registry name, kwargs at the published size, kwargs of --quick, rate, channels).
SYSTEMS: dict[str, tuple[str, dict[str, Any], dict[str, Any], int, int]] = {
    "umx": ("umx", {"hidden_size": 512, "niter": 1}, {"hidden_size": 16, "niter": 1}, 44100, 2),
    "xumx": ("xumx", {"hidden_size": 512, "niter": 1}, {"hidden_size": 16, "niter": 1}, 44100, 2),
    "bsrnn": (
        "bsrnn",
        {"sources": ["vocals"], "n_features": 64, "n_layers": 8},
        {"sources": ["vocals"], "n_features": 8, "n_layers": 1},
        44100,
        2,
    ),
    "bsrnn-large": (
        "bsrnn",
        {"sources": ["vocals"], "n_features": 128, "n_layers": 12},
        {"sources": ["vocals"], "n_features": 8, "n_layers": 2},
        44100,
        2,
    ),
    "convtasnet": ("convtasnet", {}, {"N": 16, "B": 16, "H": 16, "X": 2, "R": 1}, 44100, 2),
    "demucs": ("demucs", {"channels": 100}, {"channels": 4, "depth": 3}, 44100, 2),
    "shnet": ("shnet", {}, {"channels": 16, "nb_stacks": 1}, 8000, 1),
}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _precision(device: torch.device, dtype: str) -> Iterator[None]:
    if dtype == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def _best_time(run: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    run()  # warm-up: kernels chosen, caches filled
    best, out = float("inf"), None
    for _ in range(repeats):
        _synchronize(device)
        started = time.perf_counter()
        out = run()
        _synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best, out


def _flops_per_second(
    model: torch.nn.Module, rate: int, channels: int, device: torch.device
) -> int:
    x = torch.randn(1, channels, rate, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def system_rows(name: str, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """float32 and bf16 rows of one system."""
    registry, full, quick, rate, channels = SYSTEMS[name]
    torch.manual_seed(0)
    model = models.build(registry, **(quick if args.quick else full)).eval().to(device)
    nb_params = sum(p.numel() for p in model.parameters())
    flops = _flops_per_second(model, rate, channels, device)
    duration = min(args.duration, 4.0) if args.quick else args.duration
    mixture = 0.1 * torch.randn(channels, int(duration * rate), generator=torch.Generator())
    rows, reference = [], None
    for dtype in ("float32", "bf16"):
        _peak_reset(device)

        def run(dtype: str = dtype) -> torch.Tensor:
            with torch.no_grad(), _precision(device, dtype):
                return separate(
                    model,
                    mixture,
                    segment=model.default_segment,
                    batch_size=model.default_batch_size,  # as `stemkit separate` runs it
                    device=device,
                ).float()

        try:
            seconds, stems = _best_time(run, device, args.repeats)
        except RuntimeError as error:  # an op without a bf16 kernel: say so, keep going
            rows.append({"system": name, "dtype": dtype, "error": str(error).splitlines()[0]})
            continue
        row: dict[str, Any] = {
            "system": name,
            "dtype": dtype,
            "parameters": nb_params,
            "audio_seconds": duration,
            "seconds": seconds,
            "real_time_factor": duration / seconds,
            "gflops_per_audio_second": flops / 1e9,
            "achieved_gflops": flops * duration / seconds / 1e9,
            "peak_mib": _peak_mib(device),
        }
        if reference is None:
            reference = stems
        else:
            scale = float(reference.abs().max()) or 1.0
            row["max_error_vs_float32"] = float((stems - reference).abs().max()) / scale
        rows.append(row)
    return rows


def bss_eval_row(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """BSS Eval v4 of ``3 min`` (``--quick``: 10 s) of 4 stereo sources, device vs CPU."""
    from stemkit.metrics.bsseval import bss_eval_v4

    seconds = 10.0 if args.quick else 180.0
    generator = torch.Generator().manual_seed(0)
    references = torch.randn(4, 2, int(seconds * 44100), generator=generator).double()
    estimates = references + 0.3 * torch.randn(references.shape, generator=generator).double()
    timings, results = {}, {}
    for where in ("cpu", device.type):
        if where in timings:
            continue
        started = time.perf_counter()
        results[where] = bss_eval_v4(references.numpy(), estimates.numpy(), device=where)
        _synchronize(device)
        timings[where] = time.perf_counter() - started
    row: dict[str, Any] = {"audio_seconds": seconds, "cpu_seconds": timings["cpu"]}
    if device.type != "cpu":
        diff = abs(results["cpu"].sdr - results[device.type].sdr)
        row.update(
            device_seconds=timings[device.type],
            speedup=timings["cpu"] / timings[device.type],
            max_sdr_difference_db=float(diff[~(diff != diff)].max()),
        )
    return row


def training_rows(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Optimiser steps per second of Open-Unmix (UMX-HQ size), float32 and bf16 autocast."""
    return [_training_row(dtype, args, device) for dtype in ("float32", "bf16")]


def _training_row(dtype: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    kwargs = {"hidden_size": 16} if args.quick else {"hidden_size": 512}
    batch, excerpt = (2, 2.0) if args.quick else (16, 6.0)
    torch.manual_seed(0)
    model = models.build("umx", **kwargs).to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    stems = 0.1 * torch.randn(batch, 4, 2, int(excerpt * 44100), device=device)
    mixture = stems.sum(dim=1)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with _precision(device, dtype):
            loss = model.training_loss(mixture, stems, "spectral_mse")
        loss.backward()
        optimiser.step()

    steps = 2 if args.quick else 10
    _peak_reset(device)
    step()  # warm-up
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    seconds = (time.perf_counter() - started) / steps
    return {
        "dtype": dtype,
        "batch": batch,
        "excerpt_seconds": excerpt,
        "steps_per_second": 1 / seconds,
        "audio_seconds_per_second": batch * excerpt / seconds,
        "peak_mib": _peak_mib(device),
    }


def _machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    return info


def _markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [
        "# Separation, metrics and training on one device",
        "",
        f"`python bench/gpu.py{' --quick' if result['quick'] else ''}` on {machine['device']}"
        f" ({machine.get('gpu', machine['platform'])}), torch {machine['torch']}, "
        f"{result['date']}. Random weights at the published sizes"
        f"{' (--quick: tiny sizes, a check of the script only)' if result['quick'] else ''}.",
        "",
        "## Separation",
        "",
        "RTF: seconds of audio per second of wall time (higher is faster). GFLOP: matrix "
        "products and convolutions per second of audio (FlopCounterMode); achieved: GFLOP/s "
        "over the run. bf16 error: max |bf16 − float32| over the float32 stems' peak.",
        "",
        "| system | dtype | parameters | RTF | GFLOP per s of audio | achieved GFLOP/s | peak MiB "
        "| bf16 error |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["separation"]:
        if "error" in row:
            lines.append(f"| {row['system']} | {row['dtype']} | failed: {row['error']} |||||")
            continue
        peak = "–" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"
        error = row.get("max_error_vs_float32")
        lines.append(
            f"| {row['system']} | {row['dtype']} | {row['parameters'] / 1e6:.2f} M | "
            f"{row['real_time_factor']:.1f} | {row['gflops_per_audio_second']:.1f} | "
            f"{row['achieved_gflops']:.1f} | {peak} | {'–' if error is None else f'{error:.1e}'} |"
        )
    if "bss_eval" in result:
        row = result["bss_eval"]
        lines += ["", "## BSS Eval v4", "", f"{row['audio_seconds']:g} s of 4 stereo sources: "
                  f"CPU {row['cpu_seconds']:.1f} s"]  # fmt: skip
        if "device_seconds" in row:
            lines[-1] += (
                f", {machine['device']} {row['device_seconds']:.2f} s ({row['speedup']:.0f}×), "
                f"largest SDR difference {row['max_sdr_difference_db']:.2e} dB"
            )
    if "training" in result:
        lines += [
            "",
            "## Training (Open-Unmix, magnitude MSE, Adam)",
            "",
            "| dtype | batch × excerpt | steps/s | audio s per s | peak MiB |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in result["training"]:
            peak = "–" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"
            lines.append(
                f"| {row['dtype']} | {row['batch']} × {row['excerpt_seconds']:g} s | "
                f"{row['steps_per_second']:.2f} | {row['audio_seconds_per_second']:.1f} | {peak} |"
            )
    return "\n".join(lines) + "\n"


def _save(result: dict[str, Any], stem: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(_markdown(result))


def main(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    stem = "gpu-quick" if args.quick else "gpu"
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "machine": _machine(device),
        "separation": [],
    }
    names = args.only.split(",") if args.only else list(SYSTEMS)
    for name in names:
        result["separation"] += system_rows(name, args, device)
        _save(result, stem)  # whatever happens later, this row is on disk
        print(f"{name}: done", flush=True)
    result["bss_eval"] = bss_eval_row(args, device)
    _save(result, stem)
    result["training"] = training_rows(args, device)
    _save(result, stem)
    print(f"results in {RESULTS / stem}.md", flush=True)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=None, help=f"comma-separated of {', '.join(SYSTEMS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check the script")
    return parser.parse_args()


if __name__ == "__main__":
    main(_parse())
