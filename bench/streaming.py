"""Benchmark: real-time streaming with causal Open-Unmix (umx size, hidden 512, 4 targets).

Builds ``umx`` with ``unidirectional=True`` (n_fft 4096, hop 1024, 44.1 kHz stereo) and random
weights with non-trivial statistics, streams stereo noise through
:class:`stemkit.inference.streaming.StreamingSeparator` in blocks of ``--block`` samples, and
measures

* real-time factor: total processing time / audio duration (1 = just keeps up);
* per-block time against the block's deadline (``block / sample_rate``): median, 95th
  percentile, maximum, and how many blocks missed it;
* the algorithmic latency of the stream;
* the offline real-time factor of the same model on the same audio, and the largest deviation
  of the (latency-shifted) stream from the offline output.

Writes ``bench/results/streaming.json`` and ``bench/results/streaming.md``. The load average
before and after is recorded: on a shared machine the timings are upper bounds.

Usage:
    python bench/streaming.py [--duration 10] [--block 1024] [--threads 1]
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


@torch.no_grad()
def _randomize(core: torch.nn.Module, gen: torch.Generator) -> None:
    for name, param in core.named_parameters():
        if name in {"input_scale", "output_scale"} or name.endswith("bn1.weight"):
            param.copy_(0.5 + torch.rand(param.shape, generator=gen))
        elif name in {"input_mean", "output_mean"} or name.startswith("bn"):
            param.copy_(0.3 * torch.randn(param.shape, generator=gen))
    for name, buf in core.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(0.2 * torch.randn(buf.shape, generator=gen))
        elif name.endswith("running_var"):
            buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))


def _machine(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(args: argparse.Namespace) -> dict[str, Any]:
    from stemkit.inference.streaming import StreamingSeparator
    from stemkit.models import build

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    model = build("umx", hidden_size=512, unidirectional=True)
    for core in model.target_models.values():
        _randomize(core, gen)
    model = model.to(device).eval()
    n = int(args.duration * RATE)
    mixture = 0.25 * torch.randn(2, n, generator=gen)
    block = args.block

    load_before = os.getloadavg()
    stream = StreamingSeparator(model, block_size=block)  # type: ignore[arg-type]
    # warm-up: a second of audio, then a fresh stream
    for start in range(0, RATE - block + 1, block):
        stream.process(mixture[:, start : start + block].to(device))
    stream.reset()

    times, outputs = [], []
    nb_blocks = n // block
    for index in range(nb_blocks):
        piece = mixture[:, index * block : (index + 1) * block].to(device)
        _sync(device)
        tic = time.perf_counter()
        out = stream.process(piece)
        _sync(device)
        times.append(time.perf_counter() - tic)
        outputs.append(out.cpu())
    tic = time.perf_counter()
    outputs.append(stream.flush(mixture[:, nb_blocks * block :].to(device)).cpu())
    flush_s = time.perf_counter() - tic
    streamed = torch.cat(outputs, dim=-1)

    with torch.no_grad():
        model(mixture[None, :, :RATE].to(device))  # warm-up
        _sync(device)
        tic = time.perf_counter()
        offline = model(mixture[None].to(device))[0].cpu()
        _sync(device)
        offline_s = time.perf_counter() - tic
    load_after = os.getloadavg()

    latency = stream.latency_samples
    deadline = block / RATE
    max_rel_err = float((streamed[..., latency:] - offline).abs().max() / offline.abs().max())
    ordered = sorted(times)
    result = {
        "description": stream.describe(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": args.duration,
        "block_samples": block,
        "block_deadline_ms": deadline * 1e3,
        "latency_samples": latency,
        "latency_ms": latency / RATE * 1e3,
        "rtf": sum(times) / (nb_blocks * deadline),
        "block_ms_median": statistics.median(times) * 1e3,
        "block_ms_p95": ordered[int(0.95 * (len(ordered) - 1))] * 1e3,
        "block_ms_max": ordered[-1] * 1e3,
        "blocks": nb_blocks,
        "blocks_over_deadline": sum(t > deadline for t in times),
        "flush_ms": flush_s * 1e3,
        "offline_rtf": offline_s / args.duration,
        "max_rel_err_vs_offline": max_rel_err,
        "parameters": sum(p.numel() for p in model.parameters()),
        "machine": _machine(device),
        "load_average_before_after": [list(load_before), list(load_after)],
    }
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    (RESULTS / f"streaming{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"streaming{suffix}.md").write_text(_markdown(result))
    print(_markdown(result))
    return result


def _markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    load = result["load_average_before_after"]
    hardware = machine.get("gpu", machine["cpu"])
    return "\n".join(
        [
            "# Streaming benchmark: causal Open-Unmix, block by block",
            "",
            f"{result['description']}.",
            "",
            f"{result['duration_s']:g} s of stereo noise, umx size (hidden 512, 4 targets, "
            f"{result['parameters']:,} parameters), random weights; real-time factor = "
            "processing time / audio duration over all blocks after a 1 s warm-up.",
            "",
            f"Machine: {hardware}, {machine['logical_cores']} logical cores, "
            f"{machine['platform']}, Python {machine['python']}, torch {machine['torch']}, "
            f"device {machine['device']}, {machine['threads']} torch thread(s). Load average "
            f"(1/5/15 min) before {_fmt_load(load[0])}, after {_fmt_load(load[1])}: the CPU was "
            f"shared with other work, so times are upper bounds. Date {result['date']}.",
            "",
            "| block | deadline (ms) | latency | RTF | median (ms) | p95 (ms) | max (ms) "
            "| late blocks | offline RTF | max rel. error vs offline |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| {result['block_samples']} | {result['block_deadline_ms']:.1f} "
            f"| {result['latency_samples']} samples ({result['latency_ms']:.1f} ms) "
            f"| {result['rtf']:.3f} | {result['block_ms_median']:.2f} "
            f"| {result['block_ms_p95']:.2f} | {result['block_ms_max']:.2f} "
            f"| {result['blocks_over_deadline']} / {result['blocks']} "
            f"| {result['offline_rtf']:.3f} | {result['max_rel_err_vs_offline']:.1e} |",
            "",
        ]
    )


def _fmt_load(load: list[float]) -> str:
    return "/".join(f"{value:.2f}" for value in load)


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of audio")
    parser.add_argument("--block", type=int, default=1024, help="samples per block")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(_parse())
