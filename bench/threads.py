"""Benchmark: torch's default thread count against stemkit's choice, idle and next to a busy core.

One separation (Open-Unmix at umxhq size: hidden 512, 4 targets, random weights with
non-trivial statistics, one Wiener EM iteration; 60 s of stereo noise) is timed in a fresh
process per run with

* ``torch-default``: one intra-op thread per logical core (``os.cpu_count()``), what torch
  does when nobody sets a count;
* ``stemkit``: :func:`stemkit.runtime.choose_threads` (the cores this process may use less
  the one-minute load average of the others), what ``stemkit`` commands apply;

under two conditions, side by side in one run:

* ``idle``: nothing of ours competes (other users of a shared machine may: see the load
  averages recorded with every run);
* ``busy``: a ``python -c 'while True: pass'`` process spins, pinned to core 0, for the whole
  condition; the timed runs start once it has spun ``--settle`` seconds, so that the load
  average ``choose_threads`` reads has seen it.

The two policies alternate run by run (``--repeats`` rounds), so that a change in the
machine's other load hits both. The slowdown of a policy is its busy time over its idle time
(best and median of the rounds). ``OMP_NUM_THREADS`` is removed from the workers'
environment: it would override both policies.

Writes ``bench/results/threads.json`` and ``bench/results/threads.md``.

Usage:
    python bench/threads.py [--duration 60] [--repeats 3] [--settle 60] [--niter 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from separation import RATE, _machine, _randomize

RESULTS = Path(__file__).resolve().parent / "results"
POLICIES = ("torch-default", "stemkit")
CONDITIONS = ("idle", "busy")
SPINNER = "while True: pass"


def worker(args: argparse.Namespace) -> None:
    """Fresh process: pick the thread count by ``args.policy``, warm up, time one separation."""
    from stemkit.models import build
    from stemkit.models.spectral import Separator
    from stemkit.runtime import choose_threads

    load = os.getloadavg()[0]
    threads = (os.cpu_count() or 1) if args.policy == "torch-default" else choose_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    model = build("umx", niter=args.niter)
    assert isinstance(model, Separator)
    for core in model.target_models.values():
        _randomize(core, torch.Generator().manual_seed(args.seed))
    model.eval()
    mixture = torch.load(Path(args.workdir) / "mixture.pt", weights_only=True)
    with torch.inference_mode():
        model(mixture[..., : 5 * RATE])  # warm-up: first-call allocations and kernel choice
        start = time.perf_counter()
        cpu_start = time.process_time()
        model(mixture)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
    report = {
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "load_seen": load,
    }
    print(json.dumps(report))


def _run_worker(policy: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, str(Path(__file__).resolve()), "--worker", policy,
        "--workdir", str(workdir), "--niter", str(args.niter), "--seed", str(args.seed),
    ]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    before = os.getloadavg()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{policy} failed:\n{done.stderr}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["load_average_before_after"] = [list(before), list(os.getloadavg())]
    return report


def _start_spinner() -> subprocess.Popen[bytes]:
    def pin() -> None:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {0})

    return subprocess.Popen([sys.executable, "-c", SPINNER], preexec_fn=pin)


def _condition(name: str, workdir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    spinner = _start_spinner() if name == "busy" else None
    runs = []
    try:
        if spinner is not None:
            print(f"busy: spinning {args.settle:g} s before timing ...", flush=True)
            time.sleep(args.settle)
        for round_ in range(args.repeats):
            for policy in POLICIES if round_ % 2 == 0 else POLICIES[::-1]:
                report = _run_worker(policy, workdir, args)
                report.update(condition=name, policy=policy, round=round_)
                print(
                    f"{name} {policy}: {report['threads']} thread(s), {report['seconds']:.2f} s "
                    f"(load {report['load_seen']:.2f})",
                    flush=True,
                )
                runs.append(report)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    return runs


def _summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for policy in POLICIES:
        row: dict[str, Any] = {"policy": policy}
        for condition in CONDITIONS:
            mine = [r for r in runs if r["policy"] == policy and r["condition"] == condition]
            times = [r["seconds"] for r in mine]
            row[condition] = {
                "threads": sorted({r["threads"] for r in mine}),
                "best_s": min(times),
                "median_s": statistics.median(times),
                "worst_s": max(times),
            }
        row["slowdown_best"] = row["busy"]["best_s"] / row["idle"]["best_s"]
        row["slowdown_median"] = row["busy"]["median_s"] / row["idle"]["median_s"]
        rows.append(row)
    return rows


def main(args: argparse.Namespace) -> None:
    gen = torch.Generator().manual_seed(args.seed)
    mixture = 0.25 * torch.randn(1, 2, int(args.duration * RATE), generator=gen)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="stemkit-threads-") as tmp:
        workdir = Path(tmp)
        torch.save(mixture, workdir / "mixture.pt")
        for condition in CONDITIONS:
            runs += _condition(condition, workdir, args)
    result = {
        "benchmark": "thread count: torch default vs stemkit.runtime.choose_threads",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "workload": f"Open-Unmix umxhq size, niter={args.niter}, {args.duration:g} s stereo noise",
        "settle_s": args.settle,
        "repeats": args.repeats,
        "machine": _machine(),
        "summary": _summary(runs),
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "threads.json").write_text(json.dumps(result, indent=2) + "\n")
    table = _markdown(result)
    (RESULTS / "threads.md").write_text(table)
    print(table)


def _markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [
        "# Thread count: torch's default against stemkit's choice, idle and next to a busy core",
        "",
        f"{result['workload']}, one fresh process per run (warm-up on 5 s, then one timed "
        "separation). `torch-default`: one thread per logical core; `stemkit`: "
        "`stemkit.runtime.choose_threads()` (cores available less the one-minute load average, "
        "at least 1). `busy`: a `while True: pass` process pinned to core 0, spinning "
        f"{result['settle_s']:g} s before the first timed run and through all of them. "
        f"{result['repeats']} rounds per condition, policies alternating. Slowdown = busy / "
        "idle time of the same policy.",
        "",
        f"Machine: {machine['cpu']}, {machine['logical_cores']} logical cores, shared with other "
        f"jobs (load averages per run in threads.json), torch {machine['torch']}. "
        f"Date {result['date']}.",
        "",
        "| policy | threads idle | threads busy | idle best / median (s) | busy best / median (s) "
        "| slowdown best | slowdown median |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["summary"]:
        idle, busy = row["idle"], row["busy"]
        lines.append(
            f"| {row['policy']} | {','.join(map(str, idle['threads']))} "
            f"| {','.join(map(str, busy['threads']))} "
            f"| {idle['best_s']:.2f} / {idle['median_s']:.2f} "
            f"| {busy['best_s']:.2f} / {busy['median_s']:.2f} "
            f"| {row['slowdown_best']:.2f} | {row['slowdown_median']:.2f} |"
        )
    lines += [
        "",
        "| condition | policy | round | threads | time (s) | CPU (s) | load seen | "
        "load avg before → after (1 min) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in result["runs"]:
        before, after = run["load_average_before_after"]
        lines.append(
            f"| {run['condition']} | {run['policy']} | {run['round']} | {run['threads']} "
            f"| {run['seconds']:.2f} | {run['cpu_seconds']:.2f} | {run['load_seen']:.2f} "
            f"| {before[0]:.2f} → {after[0]:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of audio")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per condition")
    parser.add_argument(
        "--settle", type=float, default=60.0, help="seconds the spinner runs before timing"
    )
    parser.add_argument("--niter", type=int, default=1, help="Wiener EM iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", dest="policy", choices=POLICIES, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = _parse()
    if arguments.policy:
        worker(arguments)
    else:
        main(arguments)
