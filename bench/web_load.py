"""Benchmark: a bounded load test of ``stemkit serve`` on loopback.

Starts ``stemkit serve`` in a subprocess (a fresh data folder, ``--workers`` threads), uploads
one short generated song, then sends ``--jobs`` job requests from as many concurrent client
threads, each following its job's server-sent events to the end and downloading its zip. It
checks that nothing is lost (every job done, every zip holding every stem, as many job folders
as jobs) and records

* request latency of ``POST /api/jobs`` (median, 95th percentile, max);
* end-to-end latency of each job, from its request to its last event (median, p95, max);
* throughput: jobs completed per second of wall time.

Writes ``bench/results/web_load.json`` and ``bench/results/web_load.md``. The load average
before and after is recorded: on a shared machine the timings are upper bounds.

Usage:
    python bench/web_load.py [--jobs 50] [--workers 2] [--model identity] [--seconds 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="identity")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()

    from stemkit.web.evaluate import synth_stems

    song = io.BytesIO()
    sf.write(song, np.sum(list(synth_stems(args.seconds).values()), axis=0).T, 44100, format="WAV")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="stemkit-web-load-") as tmp:
        data = Path(tmp) / "data"
        server = subprocess.Popen(
            [sys.executable, "-m", "stemkit", "serve", "--port", str(port), "--data", str(data),
             "--workers", str(args.workers)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            client = httpx.Client(base_url=url, timeout=120)
            for _ in range(600):
                try:
                    client.get("/api/health")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            uploaded = client.post(
                "/api/songs", files={"file": ("load.wav", song.getvalue(), "audio/wav")}
            ).json()

            def one(_: int) -> dict[str, Any]:
                with httpx.Client(base_url=url, timeout=300) as http:
                    start = time.perf_counter()
                    job = http.post(
                        "/api/jobs", json={"song_id": uploaded["id"], "model": args.model}
                    ).json()
                    created = time.perf_counter()
                    last: dict[str, Any] = {}
                    with http.stream("GET", f"/api/jobs/{job['id']}/events") as stream:
                        for line in stream.iter_lines():
                            if line.startswith("data:"):
                                last = json.loads(line[5:])
                    finished = time.perf_counter()
                    archive = zipfile.ZipFile(
                        io.BytesIO(http.get(f"/api/jobs/{job['id']}/zip").content)
                    )
                    return {
                        "status": last.get("status"),
                        "stems": len(last.get("stems", [])),
                        "files": len(archive.namelist()),
                        "request_s": created - start,
                        "job_s": finished - start,
                    }

            wall = time.perf_counter()
            with ThreadPoolExecutor(args.jobs) as threads:
                results = list(threads.map(one, range(args.jobs)))
            wall = time.perf_counter() - wall
            folders = len(os.listdir(data / "jobs"))
            listed = len(client.get("/api/jobs").json())
        finally:
            server.terminate()
            server.wait(30)
    done = [r for r in results if r["status"] == "done" and r["files"] == r["stems"] > 0]
    requests = [r["request_s"] for r in results]
    ends = [r["job_s"] for r in results]
    record = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "jobs": args.jobs,
        "concurrent_clients": args.jobs,
        "workers": args.workers,
        "model": args.model,
        "song_seconds": args.seconds,
        "completed": len(done),
        "lost": args.jobs - len(done),
        "job_folders": folders,
        "jobs_listed": listed,
        "request_latency_s": {
            "median": statistics.median(requests),
            "p95": percentile(requests, 95),
            "max": max(requests),
        },
        "job_latency_s": {
            "median": statistics.median(ends),
            "p95": percentile(ends, 95),
            "max": max(ends),
        },
        "wall_s": wall,
        "throughput_jobs_per_s": len(done) / wall,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "web_load.json").write_text(json.dumps(record, indent=2) + "\n")
    r, j = record["request_latency_s"], record["job_latency_s"]
    (RESULTS / "web_load.md").write_text(
        f"# web load test ({record['date']})\n\n"
        f"`python bench/web_load.py --jobs {args.jobs} --workers {args.workers} "
        f"--model {args.model} --seconds {args.seconds:g}` on {record['machine']} "
        f"(load {load_before[0]:.1f} before, {record['load_after'][0]:.1f} after: a shared "
        "machine, so the times are upper bounds).\n\n"
        f"{args.jobs} concurrent clients each create a job on one {args.seconds:g} s song, follow "
        "its server-sent events to the end and download its zip.\n\n"
        "| measure | value |\n| --- | --- |\n"
        f"| jobs completed / lost | {len(done)} / {record['lost']} |\n"
        f"| job folders on disk / jobs listed | {folders} / {listed} |\n"
        f"| POST /api/jobs latency, median / p95 / max | {r['median'] * 1e3:.0f} / "
        f"{r['p95'] * 1e3:.0f} / {r['max'] * 1e3:.0f} ms |\n"
        f"| request → last event, median / p95 / max | {j['median']:.2f} / {j['p95']:.2f} / "
        f"{j['max']:.2f} s |\n"
        f"| wall time | {wall:.2f} s |\n"
        f"| throughput | {record['throughput_jobs_per_s']:.1f} jobs/s |\n"
    )
    print((RESULTS / "web_load.md").read_text())
    if record["lost"] or folders != args.jobs:
        sys.exit(1)


if __name__ == "__main__":
    main()
