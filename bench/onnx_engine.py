"""Benchmark: onnxruntime as the engine of each system's network, against PyTorch, on the CPU.

For every system, one model with random weights (seeded) is exported
(:func:`stemkit.artifacts.onnx.export_onnx`: the network in the graph, STFT, Wiener filter and
iSTFT in torch around it), and the same noise is separated with both engines through the
chunked inference path (:func:`stemkit.inference.separate`, the model's own default segment)
at one and at two threads (``torch.set_num_threads`` and onnxruntime's intra-op threads set
alike). Reported per system and thread count: the real-time factor (wall time / audio
duration, best of ``--repeats`` runs after a warm-up, the two engines' runs alternated so
that both see the same load on a shared machine) of each engine, their ratio
(onnxruntime / PyTorch: below 1 means onnxruntime is faster), and the largest difference of
the stems. Export time (trace, write and one parity check) is reported once per system.

Sizes: Open-Unmix and X-UMX at the umxhq configuration; BSRNN vocals at N=64/R=8; Conv-TasNet
at the music paper's size; Demucs v1 at C1=64 (v2's and the ablation's width); SH-Net narrowed
to 64 channels so that its row takes seconds on a shared 2-core machine. Each row states its
size. ``--large`` exports Demucs v1 at the paper's C1=100 instead (2.6 GB of weights, above
ONNX's 2 GB single-file limit, so written as the graph and a ``.onnx.data`` file of weights) and
records the export's time, files, peak memory and the engines' difference on 5 s of noise.

Results: ``bench/results/onnx.json`` and ``bench/results/onnx.md``. (The script is not named
``onnx.py``: run as a script, it would shadow the ``onnx`` package.)

Usage:
    python bench/onnx_engine.py [--only umx,xumx,...] [--repeats N] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    registry_name: str
    kwargs: dict[str, Any]
    duration_s: float
    size: str


ROWS = (
    Row("umx", "umx", {}, 10.0, "umxhq: hidden 512, 4 targets, niter 0"),
    Row("umx-causal", "umx", {"unidirectional": True}, 10.0, "hidden 512, unidirectional"),
    Row("umx-wiener", "umx", {"niter": 1}, 10.0, "umxhq, niter 1 (Wiener EM in torch)"),
    Row("xumx", "xumx", {}, 10.0, "hidden 512, 4 targets, bridging"),
    Row("bsrnn", "bsrnn", {"n_features": 64, "n_layers": 8}, 5.0, "vocals, N=64, R=8"),
    Row("convtasnet", "convtasnet", {}, 5.0, "N256 L20 B256 H512 P3 X10 R4, 4 sources"),
    Row("demucs", "demucs", {"channels": 64}, 10.0, "C1=64, depth 6, 2-layer BiLSTM"),
    Row("shnet", "shnet", {"channels": 64}, 4.0, "64 channels, 4 stacks, 8 kHz mono"),
)


def _time_pair(first: Any, second: Any, repeats: int) -> tuple[float, float]:
    """Best wall times of two runs, alternated so that both see the same load on a shared
    machine (a warm-up of each first)."""
    first()
    second()
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for index, run in enumerate((first, second)):
            start = time.perf_counter()
            run()
            best[index] = min(best[index], time.perf_counter() - start)
    return best[0], best[1]


def _measure(row: Row, threads: list[int], repeats: int) -> dict[str, Any]:
    from stemkit.artifacts.onnx import OnnxCore, export_onnx, split_model
    from stemkit.inference import separate
    from stemkit.models import build

    torch.manual_seed(0)
    model = build(row.registry_name, **row.kwargs).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    generator = torch.Generator().manual_seed(1)
    nb_samples = int(row.duration_s * model.sample_rate)
    mixture = 0.3 * torch.randn(model.audio_channels, nb_samples, generator=generator)
    result: dict[str, Any] = {
        "system": row.name,
        "size": row.size,
        "params_m": round(params, 2),
        "audio_s": row.duration_s,
        "rate": model.sample_rate,
        "segment_s": model.default_segment,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        exported = export_onnx(model, Path(folder) / "model.onnx")
        result["export_s"] = round(time.perf_counter() - start, 2)
        result["graph"] = exported.graph
        split = split_model(model)
        for count in threads:
            torch.set_num_threads(count)
            engine = split.around(OnnxCore(exported.path, threads=count))
            with torch.no_grad():
                expected = separate(model, mixture, segment=model.default_segment)
            got = separate(engine, mixture, segment=model.default_segment)
            difference = float((got - expected).abs().max())
            segment = model.default_segment
            torch_s, ort_s = _time_pair(
                functools.partial(separate, model, mixture, segment=segment),
                functools.partial(separate, engine, mixture, segment=segment),
                repeats,
            )
            load = os.getloadavg()[0]
            result["runs"].append(
                {
                    "threads": count,
                    "torch_rtf": torch_s / row.duration_s,
                    "onnxruntime_rtf": ort_s / row.duration_s,
                    "ratio": ort_s / torch_s,
                    "max_abs_difference": difference,
                    "load_1min": load,
                }
            )
            print(
                f"{row.name}: {count} thread(s): torch RTF {torch_s / row.duration_s:.3f}, "
                f"onnxruntime RTF {ort_s / row.duration_s:.3f}, ratio {ort_s / torch_s:.2f}, "
                f"max |diff| {difference:.1e}, load {load:.2f}",
                flush=True,
            )
    return result


def _machine() -> dict[str, Any]:
    import onnxruntime

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        "# ONNX: onnxruntime vs PyTorch as the engine of each system's network (CPU)",
        "",
        "Random weights (seeded), noise at each model's rate and channels, separated through "
        "`stemkit.inference.separate` with the model's default segment. The graph holds the "
        "network; STFT, Wiener filter and iSTFT (and Demucs' padding, Conv-TasNet's cropping) "
        "run in torch in both engines (see `stemkit.artifacts.onnx`). RTF = wall time / audio "
        "duration, best of the timed runs after a warm-up (the engines' runs alternated, so "
        "both see the same load); ratio = onnxruntime time / PyTorch "
        "time (below 1: onnxruntime faster). Threads: `torch.set_num_threads` and "
        "onnxruntime's intra-op threads set alike. 'max |diff|' is the largest difference of "
        "the stems between the engines.",
        "",
        f"Machine: {machine['cpu']}, {machine['logical_cores']} logical cores (shared with other "
        f"jobs: see the load average per row), {machine['platform']}, Python "
        f"{machine['python']}, torch {machine['torch']}, onnxruntime {machine['onnxruntime']}. "
        f"Date {report['date']}.",
        "",
        "| system | size | params (M) | audio | segment | export (s) | threads | PyTorch RTF "
        "| onnxruntime RTF | ratio | max abs diff | load (1 min) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["rows"]:
        segment = "whole" if row["segment_s"] is None else f"{row['segment_s']:g} s"
        audio = f"{row['audio_s']:g} s at {row['rate'] / 1000:g} kHz"
        for run in row["runs"]:
            lines.append(
                f"| {row['system']} | {row['size']} | {row['params_m']:.1f} | {audio} | "
                f"{segment} | {row['export_s']:.1f} | {run['threads']} | "
                f"{run['torch_rtf']:.3f} | {run['onnxruntime_rtf']:.3f} | {run['ratio']:.2f} | "
                f"{run['max_abs_difference']:.1e} | {run['load_1min']:.2f} |"
            )
    lines += [
        "",
        "Notes. The PyTorch engine runs each model's own forward: Open-Unmix and X-UMX go "
        "through their frame-block path (memory bounded on whole songs), the onnxruntime engine "
        "through the whole-signal magnitudes (the graph takes all frames at once), so for those "
        "the two engines also differ in how the song is traversed. At two threads on a machine "
        "whose other jobs keep the load far above its cores, torch's OpenMP threads spin "
        "waiting for each other (reference/pitfalls.md) while the onnxruntime sessions are "
        "made not to spin: the two-thread ratios measure that as much as the kernels. "
        "Conv-TasNet's graph computes its gLN statistics as the model does (float32 per "
        "channel, float64 across channels); onnxruntime's own normalisation kernel gave 5.7e-4 "
        "on these stems.",
        "",
        "What each graph maps:",
        "",
    ]
    for row in report["rows"]:
        lines.append(f"- {row['system']}: {row['graph']}")
    large = report.get("large")
    if large:
        lines += [
            "",
            f"Above 2 GB (`--large`, {large['date']}): {large['model']} holds "
            f"{large['weights_gb']:.2f} GB of weights; the export took {large['export_s']:.0f} s "
            f"and peaked at {large['peak_rss_gb']:.1f} GB of memory, writing a "
            f"{large['graph_mb']:.2f} MB graph and {large['data_gb']:.2f} GB of weights beside "
            f"it. Largest difference of the network's output (onnxruntime vs PyTorch, export "
            f"example): {large['core_difference']:.1e}; of the stems on 5 s of noise: "
            f"{large['stems_difference']:.1e} (stems' peak {large['stems_scale']:.3f}).",
        ]
    return "\n".join(lines) + "\n"


def _large() -> dict[str, Any]:
    """Export Demucs v1 at C1=100 through the external-data path and compare the engines."""
    import resource

    from stemkit.artifacts import onnx as onnx_export
    from stemkit.models import build

    torch.manual_seed(0)
    model = build("demucs", channels=100).eval()
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    with tempfile.TemporaryDirectory(prefix="stemkit-onnx-large-") as folder:
        start = time.perf_counter()
        exported = onnx_export.export_onnx(model, Path(folder) / "demucs100.onnx")
        seconds = time.perf_counter() - start
        data = onnx_export.external_data_path(exported.path)
        engine = onnx_export.split_model(model).around(onnx_export.OnnxCore(exported.path))
        noise = 0.1 * torch.randn(1, 2, 5 * 44100, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = model(noise)
        got = engine(noise)
        record = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "model": "Demucs v1, C1=100",
            "weights_gb": weights / 1e9,
            "export_s": seconds,
            "graph_mb": exported.path.stat().st_size / 1e6,
            "data_gb": data.stat().st_size / 1e9,
            "core_difference": exported.max_difference,
            "stems_difference": float((got - expected).abs().max()),
            "stems_scale": float(expected.abs().max()),
        }
    # ru_maxrss: KiB on Linux
    record["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated systems (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--large", action="store_true", help="only the Demucs C1=100 export (above 2 GB)"
    )
    args = parser.parse_args()
    wanted = {name for name in args.only.split(",") if name}
    rows = [row for row in ROWS if not wanted or row.name in wanted]
    path = RESULTS / "onnx.json"
    report = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    if args.large:
        report["large"] = _large()
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / "onnx.md").write_text(_markdown(report))
        print(f"wrote {path} and {RESULTS / 'onnx.md'}")
        return
    order = [row.name for row in ROWS]
    for row in rows:  # written after every row: a long run stopped half-way keeps its rows
        measured = _measure(row, args.threads, args.repeats)
        merged = [old for old in report.get("rows", []) if old["system"] != row.name]
        merged.append(measured)
        merged.sort(key=lambda r: order.index(r["system"]) if r["system"] in order else 99)
        report = {
            **report,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": _machine(),
            "rows": merged,
        }
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / "onnx.md").write_text(_markdown(report))
    print(f"wrote {path} and {RESULTS / 'onnx.md'}")


if __name__ == "__main__":
    main()
