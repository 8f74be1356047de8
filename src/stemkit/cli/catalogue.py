"""``stemkit separate --ray`` and ``--manifest``: a catalogue of songs, on a cluster, resumable.

The command plans the job as ``stemkit separate`` does (the same songs, folder names and
checks), then, instead of separating the songs one after the other in this process:

- with ``--ray [ADDRESS]``, hands them to Ray workers (:mod:`stemkit.cluster.pool`), each of
  which loads the model once and separates song after song with the very code of the
  single-process command (:func:`stemkit.cli.separate.separate_song`), so the stem files are the
  same bytes; each worker writes the folders it made itself, all or nothing
  (:mod:`stemkit.outputs`), into an output folder every node sees (a local one for a local
  cluster, shared storage for several machines);
- with ``--manifest FILE``, lists every song in the manifest first and appends each song's
  result as it arrives (:mod:`stemkit.cluster.manifest`); running the same command again with
  the same manifest resumes the job: songs done are not redone, songs failed are tried again,
  folders written by a killed job whose result was not yet recorded are recorded, not redone.

A worker process killed in the middle of a song is restarted and the song retried
(``--retries``); the retry finds any folder the dead attempt had already completed and keeps
it, so every song is written once. The job ends with a summary (songs done and failed, wall
time, throughput in audio hours per hour, Green Algorithms energy of the separations), logged
and appended to the manifest.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from stemkit.errors import StemkitError

if TYPE_CHECKING:
    from stemkit.cluster.manifest import Manifest
    from stemkit.cluster.pool import Failure

logger = logging.getLogger(__name__)

#: Seconds each Ray worker pauses after every batch of chunks, i.e. in the middle of a song
#: with its partial folder open: lets the tests kill a worker or a job mid-song.
SONG_DELAY_ENV: Final = "STEMKIT_SEPARATE_SONG_DELAY"

#: The options that change what a song's stem files hold: a manifest resumes only with these.
SETTINGS: Final = (
    "model", "random_weights", "segment", "overlap", "batch_size", "shifts", "seed", "engine",
    "format", "bits", "bitrate", "sample_rate", "clip", "downmix", "stems", "two_stems",
    "filename",
)  # fmt: skip


@dataclass(frozen=True)
class SongTask:
    """One song of the job, as sent to a worker.

    Attributes:
        song: the input file, absolute.
        destination: its stem folder, absolute.
        previous: (inode, mtime_ns) of the marker of the folder that was there before the job
            (only with ``--force``), or None.
    """

    song: str
    destination: str
    previous: tuple[int, int] | None = None


def start(args: argparse.Namespace, jobs: Sequence[tuple[Path, Path]]) -> int:
    """Plan a new job of ``jobs`` (song, destination), checked by ``stemkit separate``, and run
    it; 0 when every song is done, 1 when some failed.

    Raises:
        StemkitError: the manifest cannot be written, the cluster cannot be reached, or the
            model is refused (then the new manifest is removed).
    """
    from stemkit import outputs
    from stemkit.cluster.manifest import Entry, Manifest, marker_identity

    entries = [
        Entry(
            os.path.abspath(song),
            os.path.abspath(destination),
            previous=marker_identity(destination, outputs.MARKER),
        )
        for song, destination in jobs
    ]
    manifest = Manifest.create(
        args.manifest,
        entries,
        command="separate",
        arguments=list(args.songs),
        output=os.path.abspath(args.output),
        settings=_settings(args),
    )
    try:
        return _execute(args, manifest, list(manifest.entries.values()))
    except StemkitError:
        if manifest.path is not None and not any(e.result for e in entries):
            manifest.path.unlink(missing_ok=True)  # a refused command leaves no trace
        raise


def resume(args: argparse.Namespace) -> int:
    """Resume the job of the manifest ``args.manifest``: the songs not done, nothing else.

    Raises:
        StemkitError: the manifest is not stemkit's, or was made by another command (other
            songs, output folder or settings than this one's).
    """
    from stemkit import outputs
    from stemkit.cli.separate import is_complete
    from stemkit.cluster.manifest import Manifest

    manifest = Manifest.load(args.manifest)
    header = manifest.header
    mine = {
        "output": os.path.abspath(args.output),
        "settings": _settings(args),
        **({"arguments": list(args.songs)} if args.songs else {}),
    }
    for key, value in mine.items():
        if header.get(key) != value:
            differing = key
            if key == "settings":
                before = header.get("settings") or {}
                differing = ", ".join(
                    f"--{name.replace('_', '-')}"
                    for name in value
                    if before.get(name) != value[name]
                )
            raise StemkitError(
                f"{args.manifest}: this manifest is of another job ({differing} differ); run the "
                "command that made it, or give another --manifest"
            )
    roots = sorted({Path(e.destination).parent for e in manifest.entries.values()})
    for root in roots:
        outputs.prepare_root(root)
        for path in outputs.clean_leftovers(root):
            logger.warning("cleaned up %s, left by an interrupted run", path)
    todo = []
    for entry in manifest.entries.values():
        destination = Path(entry.destination)
        if entry.state == "done" and is_complete(destination):
            continue
        if entry.state == "done":
            logger.warning("%s: its folder is gone or incomplete; separating it again", destination)
        elif entry.state == "pending" and _written_by_job(destination, entry.previous):
            # separated by the killed job, which died before recording it
            result = _done(destination, written=False)
            manifest.record(entry.song, result.pop("state"), **result)
            continue
        todo.append(entry)
    counts = manifest.counts()
    logger.info(
        "resuming %s: %d song(s) done, %d to separate (%d failed before)",
        args.manifest,
        counts["done"],
        len(todo),
        sum(e.state == "failed" for e in todo),
    )
    return _execute(args, manifest, todo)


def song_worker(args: argparse.Namespace) -> Callable[[SongTask], dict[str, Any]]:
    """Load the model once and return the function that separates one song (in a Ray worker,
    or in this process without ``--ray``).

    Raises:
        StemkitError: the model or the stem options are refused.
    """
    from stemkit import outputs
    from stemkit.cli.separate import _output_settings, build_separator, separate_song
    from stemkit.runtime import resolve_device, set_threads

    if args.ray is not None:
        # A Ray worker: as many torch threads as CPUs it reserved, or the --threads asked for
        # (Ray leaves an OMP_NUM_THREADS inherited from the cluster's start as it is).
        set_threads(args.threads or max(1, round(args.worker_cpus)))
    # onnxruntime runs on the CPU, as in one process (stemkit.cli.separate.run)
    device = resolve_device("cpu" if args.engine == "onnxruntime" else args.device)
    separator, stems = build_separator(args, device, progress=False)
    output = _output_settings(args)
    names = outputs.FileNames(args.filename)
    delay = float(getattr(args, "song_delay", 0.0) or 0.0)
    if delay:
        separator.on_progress = lambda done, total: time.sleep(delay)

    def separate(task: SongTask) -> dict[str, Any]:
        destination = Path(task.destination)
        if _written_by_job(destination, task.previous):
            # An earlier attempt, killed after its rename, had finished it: kept, not redone.
            return _done(destination, written=False)
        error = separate_song(separator, args, stems, Path(task.song), destination, output, names)
        if error is not None:
            if _written_by_job(destination, task.previous):
                return _done(destination, written=False)  # a concurrent attempt finished it
            return {"state": "failed", "reason": error}
        return _done(destination, written=True, cost=separator.last_cost)

    return separate


def _execute(args: argparse.Namespace, manifest: Manifest, entries: list[Any]) -> int:
    """Separate ``entries`` (manifest entries), recording each result as it arrives."""
    from stemkit import outputs
    from stemkit.cli.separate import cost_line
    from stemkit.cluster import pool

    args.song_delay = float(os.environ.get(SONG_DELAY_ENV) or 0.0)
    tasks = [SongTask(e.song, e.destination, e.previous) for e in entries]
    costs: list[dict[str, Any]] = []
    failed: list[str] = []
    started = time.monotonic()

    def on_result(task: SongTask, result: dict[str, Any] | Failure) -> None:
        if isinstance(result, pool.Failure):
            result = {"state": "failed", "reason": f"{task.song}: {result.reason}"}
        state = result.pop("state")
        manifest.record(task.song, state, **result)
        if state == "done":
            print(task.destination, flush=True)
            if result.get("cost"):
                costs.append(result["cost"])
        else:
            logger.error("%s", result["reason"])
            failed.append(task.song)

    workers = 1
    if args.ray is not None and tasks:
        address = None if args.ray == "local" else args.ray
        cluster = pool.Cluster(
            address=address,
            workers=args.workers,
            worker_cpus=args.worker_cpus,
            worker_gpus=args.worker_gpus,
            use_gpus=args.device.strip().lower() != "cpu" and args.engine == "torch",
            retries=args.retries,
        )
        started_here = pool.connect(address)
        try:
            workers = pool.run(tasks, functools.partial(song_worker, args), on_result, cluster)
        finally:
            if started_here:
                import ray

                ray.shutdown()
    elif tasks:
        separate = song_worker(args)
        for task in tasks:
            on_result(task, separate(task))
    # what killed workers left (their partial folders), now that no worker is writing
    for root in sorted({Path(t.destination).parent for t in tasks}):
        outputs.clean_leftovers(root)
    seconds = time.monotonic() - started
    summary = _summary(manifest, costs, seconds, workers)
    manifest.summarise(summary)
    if costs:
        logger.info("%s", cost_line(costs))
    logger.info(
        "%d done, %d failed, %d pending; this run: %d song(s) in %.1f s on %d worker(s), "
        "%.1f audio hours per hour",
        summary["done"], summary["failed"], summary["pending"], len(costs), seconds, workers,
        summary["throughput"],
    )  # fmt: skip
    if failed:
        logger.error("%d of %d song(s) failed: %s", len(failed), len(tasks), ", ".join(failed))
    return 1 if manifest.counts()["failed"] else 0


def _summary(
    manifest: Manifest, costs: list[dict[str, Any]], seconds: float, workers: int
) -> dict[str, Any]:
    """The job's numbers: songs per state; this run's wall time, audio, throughput and
    energy (Green Algorithms estimate from the workers' CPU time)."""
    from stemkit.energy import total

    audio = sum(float(cost["audio_seconds"]) for cost in costs)
    spent = total([{k: v for k, v in c.items() if isinstance(v, int | float)} for c in costs])
    return {
        **manifest.counts(),
        "separated": len(costs),
        "wall_seconds": round(seconds, 3),
        "workers": workers,
        "audio_seconds": round(audio, 3),
        # audio hours per wall-clock hour
        "throughput": audio / seconds if seconds else 0.0,
        "cpu_seconds": spent["cpu_seconds"],
        "energy_kwh": spent["energy_kwh"],
        "carbon_g": spent["carbon_g"],
        "energy_method": "Green Algorithms estimate from each worker's CPU time and memory",
    }


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in SETTINGS}


def _written_by_job(destination: Path, previous: tuple[int, int] | None) -> bool:
    """Whether ``destination`` is a complete stem folder other than the one found there when
    the job was planned, i.e. one this job wrote."""
    from stemkit import outputs
    from stemkit.cli.separate import is_complete
    from stemkit.cluster.manifest import marker_identity

    return is_complete(destination) and marker_identity(destination, outputs.MARKER) != previous


def _done(
    destination: Path, *, written: bool, cost: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``done`` result of a complete folder: its files' checksum, who wrote it."""
    import json

    from stemkit import outputs
    from stemkit.cluster.manifest import folder_checksum

    marker = json.loads((destination / outputs.MARKER).read_text(encoding="utf-8"))
    files = [name for name in marker["files"] if name != outputs.MARKER]
    return {
        "state": "done",
        "destination": str(destination),
        "checksum": folder_checksum(destination, files),
        "files": files,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "written": written,
        **({"cost": cost} if cost else {}),
    }
