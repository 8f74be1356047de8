"""Benchmark: separation speed and memory of stemkit's models, Open-Unmix also against upstream.

Row ``umx``: builds our ``umx`` (umxhq configuration: hidden 512, 4 targets, 16 kHz
bandwidth) with random weights and non-trivial statistics, copies the weights into
``openunmix.model.Separator``, separates the same stereo noise with both, checks that the
stems agree, and measures

* real-time factor: wall time / audio duration, best of ``--repeats`` runs after a warm-up;
* peak memory: the process's maximum resident set size (``resource.getrusage``), each
  implementation and setting in a fresh subprocess so that no run inherits another's peak.

Rows without an upstream to compare with (random weights, ours only, same measurements):

* ``xumx``: X-UMX at paper size (4 targets, hidden 512, bridging), whole signal at once;
* ``shnet``: SH-Net at paper size (4 stacks, 256 channels, MIR-1K's 2 sources) on 8 kHz mono
  noise; slow on CPU, so its default duration is short (5 s);
* ``bsrnn`` / ``bsrnn-large``: BSRNN vocals with N=64/R=8 and N=128/R=12, applied with
  chunked inference (:func:`stemkit.inference.separate`, 10 s segments, overlap 0.1) as the
  replication's inference does;
* ``convtasnet``: Conv-TasNet at the music paper's size (X=10, 4 sources), chunked in
  segments of 640,000 samples (the reference's evaluation chunk, about 14.5 s), overlap 0.1;
* ``demucs-c64`` / ``demucs-c100``: Demucs v1 with C1=64 and at paper size (C1=100, 648.5 M
  parameters, 2.6 GB of fp32 weights), chunked in 10 s segments (the recipe's training
  window), overlap 0.1.

Every chunked row's default duration is exactly two segments overlapping by 0.1 of a
segment, so the cost of the cross-fade is in the timing, as on long songs, while the memory
stays that of one segment whatever the song's length.

Results are merged into ``bench/results/separation.json`` (rows not run this time are kept)
and ``bench/results/separation.md`` is rewritten from the merged result.

Usage:
    python bench/separation.py [--only umx,xumx,shnet,bsrnn,...] [--duration S]
        [--niter 0 1] [--repeats N] [--threads T]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import torch

RATE = 44100
IMPLEMENTATIONS = ("openunmix", "stemkit")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class Row:
    """One of our models without upstream comparison: how to build, feed and apply it."""

    registry_name: str
    kwargs: dict[str, Any]
    rate: int
    channels: int
    duration_s: float  # default audio length; slow models get short ones
    repeats: int  # default timed runs after the warm-up
    segment_s: float | None  # chunked inference (stemkit.inference.separate) when set
    uses_niter: bool
    description: str


OVERLAP = 0.1
# The reference evaluates Conv-TasNet in chunks of 640,000 samples (about 14.5 s at 44.1 kHz).
TASNET_SEGMENT_S = 640_000 / RATE
ROWS: dict[str, Row] = {
    "xumx": Row(
        "xumx", {}, RATE, 2, 30.0, 3, None, True, "X-UMX, 4 targets, hidden 512, whole signal"
    ),
    "shnet": Row(
        "shnet",
        {},
        8000,
        1,
        5.0,
        1,
        None,
        False,
        "SH-Net, 4 stacks × 256 channels, 2 sources, 8 kHz mono, 64-frame windows",
    ),
    "bsrnn": Row(
        "bsrnn",
        {"sources": ("vocals",), "n_features": 64, "n_layers": 8},
        RATE,
        2,
        19.0,
        1,
        10.0,
        False,
        "BSRNN vocals N=64 R=8, chunked 10 s / overlap 0.1",
    ),
    "bsrnn-large": Row(
        "bsrnn",
        {"sources": ("vocals",), "n_features": 128, "n_layers": 12},
        RATE,
        2,
        19.0,
        1,
        10.0,
        False,
        "BSRNN vocals N=128 R=12, chunked 10 s / overlap 0.1",
    ),
    "convtasnet": Row(
        "convtasnet",
        {},
        RATE,
        2,
        TASNET_SEGMENT_S * (2 - OVERLAP),
        1,
        TASNET_SEGMENT_S,
        False,
        "Conv-TasNet N=256 L=20 B=256 H=512 P=3 X=10 R=4, chunked 640,000 samples / overlap 0.1",
    ),
    "demucs-c64": Row(
        "demucs",
        {"channels": 64},
        RATE,
        2,
        19.0,
        1,
        10.0,
        False,
        "Demucs v1 C1=64, depth 6, 2-layer BLSTM, chunked 10 s / overlap 0.1",
    ),
    "demucs-c100": Row(
        "demucs",
        {"channels": 100},
        RATE,
        2,
        19.0,
        1,
        10.0,
        False,
        "Demucs v1 C1=100 (paper size), depth 6, 2-layer BLSTM, chunked 10 s / overlap 0.1",
    ),
}
CHOICES = ("umx", *ROWS)


def _status_mib(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process from /proc (Linux), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ≥ 4.0), so the peak covers separation only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _getrusage_mib() -> float:
    # ru_maxrss is in KiB on Linux; it can carry the parent's peak over the exec
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def _randomize(core: torch.nn.Module, gen: torch.Generator) -> None:
    """Non-trivial input/output statistics and batch-norm state, as trained weights have."""
    for name, param in core.named_parameters():
        if name in {"input_scale", "output_scale"}:
            param.copy_(0.5 + torch.rand(param.shape, generator=gen))
        elif name in {"input_mean", "output_mean"} or name.startswith("bn"):
            param.copy_(0.3 * torch.randn(param.shape, generator=gen))
    for name, buf in core.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(0.2 * torch.randn(buf.shape, generator=gen))
        elif name.endswith("running_var"):
            buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))


def _build(implementation: str, niter: int, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The model of ``implementation`` holding ``state`` (our Separator's state_dict)."""
    if implementation == "stemkit":
        from stemkit.models import build

        ours = build("umx", niter=niter)
        ours.load_state_dict(state)
        return ours.eval()
    # openunmix imports torchaudio at module level but never uses it on this path
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    from openunmix import model as upstream

    cores = {}
    for name in ("vocals", "drums", "bass", "other"):
        prefix = f"target_models.{name}."
        core = upstream.OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=512, max_bin=1487)
        core.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, strict=True
        )
        cores[name] = core
    return upstream.Separator(cores, niter=niter, n_fft=4096, n_hop=1024, nb_channels=2).eval()


def worker(args: argparse.Namespace) -> None:
    """Runs in a fresh process: load, warm up, time, save the stems, report as one JSON line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    niter = args.niter[0]
    model = _build(args.worker, niter, torch.load(workdir / "weights.pt", weights_only=True))
    mixture = torch.load(workdir / "mixture.pt", weights_only=True)
    gc.collect()
    rss_loaded = _status_mib("VmRSS")
    peak_reset = _reset_peak_rss()
    times, cpu_times = [], []
    with torch.inference_mode():
        stems = model(mixture)  # warm-up
        for _ in range(args.repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            stems = model(mixture)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    peak = _status_mib("VmHWM") if peak_reset else None
    report = {
        "times_s": times,
        "cpu_times_s": cpu_times,
        "rss_loaded_mib": rss_loaded,
        # without /proc, fall back to getrusage (then the peak includes loading)
        "rss_peak_mib": peak if peak is not None else _getrusage_mib(),
        "peak_method": "VmHWM after clear_refs" if peak is not None else "getrusage ru_maxrss",
        "getrusage_max_rss_mib": _getrusage_mib(),
        "threads": torch.get_num_threads(),
    }
    torch.save(stems.clone(), workdir / f"{args.worker}_niter{niter}.pt")
    print(json.dumps(report))


def model_worker(args: argparse.Namespace) -> None:
    """Fresh process for one of :data:`ROWS`: build (seeded random weights), warm up, time."""
    from stemkit.inference import separate
    from stemkit.models import build

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = ROWS[args.row]
    torch.manual_seed(args.seed)
    kwargs = dict(spec.kwargs)
    if spec.uses_niter:
        kwargs["niter"] = args.niter[0]
    model = build(spec.registry_name, **kwargs).eval()
    mixture = torch.load(Path(args.workdir) / f"mixture_{args.row}.pt", weights_only=True)

    def apply() -> torch.Tensor:
        if spec.segment_s is None:
            return model(mixture.unsqueeze(0))
        return separate(model, mixture, segment=spec.segment_s, overlap=OVERLAP)

    gc.collect()
    rss_loaded = _status_mib("VmRSS")
    with torch.inference_mode():
        # short warm-up (one model call on 1 s) so that slow models are not run twice in full
        model(mixture[..., : spec.rate].unsqueeze(0))
    gc.collect()
    peak_reset = _reset_peak_rss()
    times = []
    with torch.inference_mode():
        for _ in range(args.repeats):
            start = time.perf_counter()
            stems = apply()
            times.append(time.perf_counter() - start)
            del stems
    peak = _status_mib("VmHWM") if peak_reset else None
    report = {
        "times_s": times,
        "rss_loaded_mib": rss_loaded,
        "rss_peak_mib": peak if peak is not None else _getrusage_mib(),
        "peak_method": "VmHWM after clear_refs" if peak is not None else "getrusage ru_maxrss",
        "getrusage_max_rss_mib": _getrusage_mib(),
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    print(json.dumps(report))


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        mem_gib = int(meminfo[0].split()[1]) / 1024**2
    except OSError:
        mem_gib = float("nan")
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "openunmix": _version("openunmix"),
        "device": "cpu",
    }


def _run_worker(
    implementation: str, niter: int, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        implementation,
        "--niter",
        str(niter),
        "--workdir",
        str(workdir),
        "--repeats",
        str(args.repeats),
        "--threads",
        str(args.threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{implementation} (niter={niter}) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_umx(args: argparse.Namespace) -> dict[str, Any]:
    """The umx rows: ours against ``openunmix`` on the same weights and audio."""
    from stemkit.models import build
    from stemkit.models.spectral import Separator

    duration = args.duration if args.duration is not None else 30.0
    repeats = args.repeats if args.repeats is not None else 3
    args = argparse.Namespace(**{**vars(args), "duration": duration, "repeats": repeats})
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    model = build("umx")
    assert isinstance(model, Separator)
    for core in model.target_models.values():
        _randomize(core, gen)
    mixture = 0.25 * torch.randn(1, 2, int(args.duration * RATE), generator=gen)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="stemkit-bench-") as tmp:
        workdir = Path(tmp)
        torch.save(model.state_dict(), workdir / "weights.pt")
        torch.save(mixture, workdir / "mixture.pt")
        for niter in args.niter:
            reports = {}
            for implementation in IMPLEMENTATIONS:
                print(f"running {implementation} niter={niter} ...", flush=True)
                reports[implementation] = _run_worker(implementation, niter, workdir, args)
            ours = torch.load(workdir / f"stemkit_niter{niter}.pt", weights_only=True)
            ref = torch.load(workdir / f"openunmix_niter{niter}.pt", weights_only=True)
            max_rel_err = float((ours - ref).abs().max() / ref.abs().max())
            for implementation, report in reports.items():
                best = min(report["times_s"])
                rows.append(
                    {
                        "implementation": implementation,
                        "niter": niter,
                        "rtf_best": best / args.duration,
                        "rtf_median": statistics.median(report["times_s"]) / args.duration,
                        "times_s": report["times_s"],
                        # CPU seconds of the process, all threads: on a shared machine less
                        # sensitive to the other jobs than the wall time
                        "cpu_best_s": min(report["cpu_times_s"]),
                        "peak_rss_mib": report["rss_peak_mib"],
                        "separation_rss_mib": report["rss_peak_mib"]
                        - (report["rss_loaded_mib"] or 0.0),
                        "peak_method": report["peak_method"],
                        "threads": report["threads"],
                        "max_rel_err_vs_openunmix": max_rel_err,
                    }
                )
    load_after = os.getloadavg()

    ratios = []
    for niter in args.niter:
        mine, theirs = (
            next(r for r in rows if r["implementation"] == impl and r["niter"] == niter)
            for impl in ("stemkit", "openunmix")
        )
        ratios.append(
            {
                "niter": niter,
                "rtf_ratio": mine["rtf_best"] / theirs["rtf_best"],
                "cpu_ratio": mine["cpu_best_s"] / theirs["cpu_best_s"],
                "peak_rss_ratio": mine["peak_rss_mib"] / theirs["peak_rss_mib"],
                "separation_rss_ratio": mine["separation_rss_mib"]
                / max(theirs["separation_rss_mib"], 1e-9),
                "max_rel_err": mine["max_rel_err_vs_openunmix"],
            }
        )
    result = {
        "benchmark": "Open-Unmix separation, umxhq configuration, random weights",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "audio": {"duration_s": args.duration, "rate": RATE, "channels": 2, "signal": "noise"},
        "repeats": args.repeats,
        "machine": _machine(),
        "load_average_before_after": [load_before, load_after],
        "rows": rows,
        "ratios_stemkit_over_openunmix": ratios,
    }
    return result


def _run_model_row(name: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    """Rows of one of :data:`ROWS` (one per niter where the model has Wiener EM)."""
    spec = ROWS[name]
    duration = args.duration if args.duration is not None else spec.duration_s
    repeats = args.repeats if args.repeats is not None else spec.repeats
    gen = torch.Generator().manual_seed(args.seed)
    # noise generated at the model's own rate and channel count: nothing to resample
    mixture = 0.25 * torch.randn(spec.channels, int(duration * spec.rate), generator=gen)
    torch.save(mixture, workdir / f"mixture_{name}.pt")
    rows = []
    for niter in args.niter if spec.uses_niter else [None]:
        print(f"running {name} niter={niter} ({duration:g} s) ...", flush=True)
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--row-worker",
            name,
            "--niter",
            str(niter or 0),
            "--workdir",
            str(workdir),
            "--repeats",
            str(repeats),
            "--threads",
            str(args.threads),
            "--seed",
            str(args.seed),
        ]
        load_before = os.getloadavg()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        load_after = os.getloadavg()
        if done.returncode != 0:
            raise SystemExit(f"{name} (niter={niter}) failed:\n{done.stderr}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(
            {
                "model": name,
                "description": spec.description,
                "registry_name": spec.registry_name,
                "kwargs": {
                    k: list(v) if isinstance(v, tuple) else v for k, v in spec.kwargs.items()
                },
                "parameters": report["parameters"],
                "niter": niter,
                "rate": spec.rate,
                "channels": spec.channels,
                "duration_s": duration,
                "segment_s": spec.segment_s,
                "overlap": OVERLAP if spec.segment_s is not None else None,
                "repeats": repeats,
                "rtf_best": min(report["times_s"]) / duration,
                "rtf_median": statistics.median(report["times_s"]) / duration,
                "times_s": report["times_s"],
                "peak_rss_mib": report["rss_peak_mib"],
                "separation_rss_mib": report["rss_peak_mib"] - (report["rss_loaded_mib"] or 0.0),
                "peak_method": report["peak_method"],
                "threads": report["threads"],
                "load_average_before_after": [load_before, load_after],
                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            }
        )
    return rows


def main(args: argparse.Namespace) -> None:
    """Run the selected rows and merge them into the stored results."""
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(CHOICES))
    if unknown:
        raise SystemExit(f"--only: unknown row(s) {unknown}; choose from {', '.join(CHOICES)}")
    path = RESULTS / "separation.json"
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if "umx" in only:
        umx = _run_umx(args)
        result.update(umx)
        # the umx comparison per thread count, the latest run of each
        threads = str(umx["rows"][0]["threads"])
        result.setdefault("umx_by_threads", {})[threads] = {
            key: umx[key] for key in ("date", "load_average_before_after", "rows")
        } | {"ratios": umx["ratios_stemkit_over_openunmix"]}
    new_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="stemkit-bench-") as tmp:
        for name in only:
            if name != "umx":
                new_rows += _run_model_row(name, args, Path(tmp))
    replaced = {(row["model"], row["niter"]) for row in new_rows}
    kept = [r for r in result.get("model_rows", []) if (r["model"], r["niter"]) not in replaced]
    order = {name: index for index, name in enumerate(ROWS)}
    result["model_rows"] = sorted(
        kept + new_rows, key=lambda r: (order.get(r["model"], len(order)), r["niter"] or 0)
    )
    result["model_rows_machine"] = _machine()
    table = _markdown(result)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "separation.md").write_text(table)


def _markdown(result: dict[str, Any]) -> str:
    lines = _markdown_umx(result) if "rows" in result else []
    if result.get("model_rows"):
        lines += _markdown_models(result)
    return "\n".join(lines) + "\n"


def _markdown_models(result: dict[str, Any]) -> list[str]:
    machine = result["model_rows_machine"]
    lines = [
        "",
        "# Separation benchmark: stemkit models without an upstream to compare with",
        "",
        "Random weights (seeded default initialisation), noise at the model's own rate and "
        "channel count (SH-Net: 8 kHz mono, generated at that rate). Real-time factor = wall "
        "time / audio duration, best of the timed runs after a warm-up of one model call on "
        "1 s; peak RSS in a fresh process per row (`VmHWM` reset after loading and warm-up); "
        "'separation' = peak minus the RSS after loading the model and audio. Rows with a "
        "segment go through `stemkit.inference.separate` (BSRNN and Demucs: 10 s; Conv-TasNet: "
        "640,000 samples ≈ 14.5 s, the reference's evaluation chunk; overlap 0.1 of a "
        "segment), the others take the whole signal at once. Each chunked row's audio is "
        "exactly two overlapping segments, so the overlap's extra computation is in the timing, "
        "as on long songs, and memory stays that of one segment. SH-Net is slow on CPU, so it "
        "runs on a short signal.",
        "",
        f"Machine: {machine['cpu']}, {machine['logical_cores']} logical cores (shared with "
        f"other jobs: see the load average per row), {machine['memory_gib']} GiB, "
        f"torch {machine['torch']}, device {machine['device']}.",
        "",
        "| model | params (M) | niter | audio | segment | threads | RTF best | RTF median "
        "| peak RSS (MiB) | separation (MiB) | load avg before → after (1 min) | date |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["model_rows"]:
        niter = "-" if row["niter"] is None else row["niter"]
        before, after = row["load_average_before_after"]
        audio = (
            f"{row['duration_s']:.4g} s, {row['rate'] / 1000:g} kHz, "
            f"{'stereo' if row['channels'] == 2 else 'mono'}"
        )
        segment = "whole" if row["segment_s"] is None else f"{row['segment_s']:.4g} s"
        lines.append(
            f"| {row['model']} | {row['parameters'] / 1e6:.1f} | {niter} | {audio} | {segment} "
            f"| {row['threads']} | {row['rtf_best']:.3f} | {row['rtf_median']:.3f} "
            f"| {row['peak_rss_mib']:.0f} | {row['separation_rss_mib']:.0f} "
            f"| {before[0]:.2f} → {after[0]:.2f} | {row['date']} |"
        )
    return lines


def _markdown_umx(result: dict[str, Any]) -> list[str]:
    machine = result["machine"]
    lines = [
        "# Separation benchmark: stemkit `umx` vs `openunmix` Separator",
        "",
        f"{result['audio']['duration_s']:g} s of stereo noise at {RATE} Hz, umxhq configuration "
        "(hidden 512, 4 targets, max_bin 1487), the same random weights in both; real-time "
        f"factor = wall time / audio duration, best of {result['repeats']} after a warm-up; "
        "peak RSS in a fresh process per row, from the kernel's high-water mark (`VmHWM`) "
        "reset after loading, so it covers the separation runs; 'separation' = that peak minus "
        "the RSS after loading the model and audio.",
        "",
        f"Machine: {machine['cpu']}, {machine['logical_cores']} logical cores, "
        f"{machine['memory_gib']} GiB, {machine['platform']}, Python {machine['python']}, "
        f"torch {machine['torch']}, openunmix {machine['openunmix']}, device {machine['device']}. "
        "Load average (1/5/15 min) "
        f"before {_fmt_load(result['load_average_before_after'][0])}, after "
        f"{_fmt_load(result['load_average_before_after'][1])}. Date {result['date']}.",
        "",
        "| implementation | niter | threads | RTF best | RTF median | peak RSS (MiB) "
        "| separation (MiB) | max rel. error |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['implementation']} | {row['niter']} | {row['threads']} "
            f"| {row['rtf_best']:.3f} | {row['rtf_median']:.3f} | {row['peak_rss_mib']:.0f} "
            f"| {row['separation_rss_mib']:.0f} | {row['max_rel_err_vs_openunmix']:.1e} |"
        )
    lines += [
        "",
        "| niter | RTF ratio (stemkit / openunmix) | peak RSS ratio | separation RSS ratio |",
        "| --- | --- | --- | --- |",
    ]
    for ratio in result["ratios_stemkit_over_openunmix"]:
        lines.append(
            f"| {ratio['niter']} | {ratio['rtf_ratio']:.2f} | {ratio['peak_rss_ratio']:.2f} "
            f"| {ratio['separation_rss_ratio']:.2f} |"
        )
    by_threads = result.get("umx_by_threads", {})
    if by_threads:
        lines += [
            "",
            "Latest comparison per thread count (wall-time ratio of the best runs, and CPU-time "
            "ratio: the process's CPU seconds of its best run, less sensitive to the other "
            "jobs on a shared machine; time in seconds, best of the repeats):",
            "",
            "| threads | niter | stemkit time / CPU | openunmix time / CPU | time ratio "
            "| CPU ratio | max rel. error | load avg before → after | date |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for threads, run in sorted(by_threads.items()):
            before, after = run["load_average_before_after"]
            for ratio in run["ratios"]:
                mine, theirs = (
                    next(r for r in run["rows"] if (r["implementation"], r["niter"]) == key)
                    for key in (("stemkit", ratio["niter"]), ("openunmix", ratio["niter"]))
                )
                lines.append(
                    f"| {threads} | {ratio['niter']} "
                    f"| {min(mine['times_s']):.2f} / {mine['cpu_best_s']:.2f} "
                    f"| {min(theirs['times_s']):.2f} / {theirs['cpu_best_s']:.2f} "
                    f"| {ratio['rtf_ratio']:.2f} | {ratio['cpu_ratio']:.2f} "
                    f"| {ratio['max_rel_err']:.1e} | {before[0]:.2f} → {after[0]:.2f} "
                    f"| {run['date']} |"
                )
    return lines


def _fmt_load(load: list[float] | tuple[float, ...]) -> str:
    return "/".join(f"{value:.2f}" for value in load)


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        default=",".join(CHOICES),
        help=f"comma-separated rows to run, from {','.join(CHOICES)} (default: all)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of audio for every selected row (default: per row: umx/xumx 30, "
        "shnet 5, chunked rows two segments overlapping by 0.1 segment: 19 for bsrnn, "
        "bsrnn-large and demucs-*, 27.57 for convtasnet)",
    )
    parser.add_argument(
        "--niter", type=int, nargs="+", default=[0, 1], help="Wiener EM steps (umx, xumx)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs after the warm-up (default: 3 for umx/xumx, 1 for the slow rows)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--row-worker", dest="row", choices=tuple(ROWS), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = _parse()
    if arguments.worker:
        worker(arguments)
    elif arguments.row:
        model_worker(arguments)
    else:
        main(arguments)
