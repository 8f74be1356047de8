"""Separation jobs: their options, checked when a job is created, and the bounded worker pool.

A job runs exactly what ``stemkit separate`` runs for one song:
:meth:`stemkit.api.Separator.separate_to_folder` into ``jobs/<id>/stems/``, all or nothing,
with the output settings the command line builds from the same option names. The pool holds
``workers`` threads; each takes the oldest queued job from the store
(:meth:`stemkit.web.store.JobStore.claim`), so at most ``workers`` songs are separated at once
and the others wait in the queue, which survives a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from stemkit.errors import StemkitError

if TYPE_CHECKING:
    from stemkit.api import Separator, StemFiles
    from stemkit.web.files import DataFolder
    from stemkit.web.store import Job, JobStore

logger = logging.getLogger(__name__)

#: Share of the progress bar given to reading the song (before) and writing stems (after).
_READ_SHARE = 0.05
_WRITE_SHARE = 0.1


@dataclass(frozen=True)
class JobOptions:
    """The settings of a job: the options of ``stemkit separate`` that a song's folder needs.

    Attributes:
        two_stems: write this stem and ``no_<stem>`` (karaoke); None writes ``stems``.
        stems: the stems to write; None: all the model gives.
        format, bits, bitrate, sample_rate, clip: as ``--format``, ``--bits``,
            ``--bitrate`` (mp3 and opus), ``--sample-rate``, ``--clip``.
        segment, overlap, shifts, seed, batch_size: as the command line's options.
    """

    two_stems: str | None = None
    stems: tuple[str, ...] | None = None
    format: str = "wav"
    bits: int | None = None
    bitrate: int | None = None
    sample_rate: str = "input"
    clip: Literal["warn", "clamp", "rescale"] = "warn"
    segment: float | None = None
    overlap: float = 0.25
    shifts: int = 0
    seed: int | None = None
    batch_size: int | None = None

    @classmethod
    def parse(cls, model: str, values: Mapping[str, Any]) -> JobOptions:
        """Options from a request, checked as the command line checks them.

        Raises:
            StemkitError: an unknown model (only catalogue and weightless names: a request
                never names a file), stems the model does not give, or a bad setting.
        """
        from stemkit.inference import check_settings

        known = {field for field in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise StemkitError(f"unknown option(s) {', '.join(unknown)}")
        stems = values.get("stems")
        options = cls(
            **{
                **{k: v for k, v in values.items() if v is not None},
                "stems": tuple(stems) if stems else None,
            }
        )
        sources = model_stems(model)
        if options.two_stems is not None:
            if options.stems:
                raise StemkitError("stems and two_stems exclude each other; choose one")
            if options.two_stems not in sources:
                raise StemkitError(
                    f"two_stems {options.two_stems!r}: {model} gives {', '.join(sources)}"
                )
        for stem in options.stems or ():
            if stem not in sources:
                raise StemkitError(f"unknown stem {stem!r}: {model} gives {', '.join(sources)}")
        options.output()  # checks format, bits, bit rate and rate together
        try:
            batch_size = 1 if options.batch_size is None else options.batch_size
            check_settings(options.segment or None, options.overlap, batch_size, options.shifts)
        except ValueError as error:
            raise StemkitError(str(error)) from None
        return options

    def output(self) -> StemFiles:
        """How the stems are written: the command line's own rules (``stemkit separate``)."""
        from stemkit.api import StemFiles

        return StemFiles.from_options(
            self.format, self.bits, self.bitrate, self.sample_rate, self.clip
        )

    def to_json(self) -> dict[str, Any]:
        """The options as stored and shown."""
        data = asdict(self)
        data["stems"] = list(self.stems) if self.stems else None
        return data


def model_stems(model: str) -> tuple[str, ...]:
    """The stems ``model`` gives, without loading it.

    Raises:
        StemkitError: not a catalogue or weightless model name.
    """
    from stemkit import models
    from stemkit.api import WEIGHTLESS
    from stemkit.artifacts import CATALOGUE

    if model in CATALOGUE:
        return tuple(CATALOGUE[model].stems)
    if model in WEIGHTLESS:
        return tuple(models.build(model).sources)
    raise StemkitError(
        f"unknown model {model!r}; choose one of {', '.join([*CATALOGUE, *sorted(WEIGHTLESS)])}"
    )


class WorkerPool:
    """``workers`` threads separating the store's queued jobs, one song each at a time.

    Args:
        store: the job store.
        data: the data folder.
        workers: how many jobs run at once (at least 1).
        device: where the models run (``auto``, ``cpu``, ``cuda:N``, ``mps``).
    """

    def __init__(
        self, store: JobStore, data: DataFolder, *, workers: int = 1, device: str = "cpu"
    ) -> None:
        if workers < 1:
            raise StemkitError(f"workers must be at least 1, got {workers}")
        self.store = store
        self.data = data
        self.workers = workers
        self.device = device
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._models: dict[str, Separator] = {}
        self._models_lock = threading.Lock()
        self._cancelled: set[str] = set()
        self._running: set[str] = set()

    def start(self) -> None:
        """Settle the jobs a killed server left running, then start the threads."""
        requeued, failed = self.store.recover()
        for job_id in requeued:
            logger.warning("job %s was cut off by a stopped server: queued again", job_id)
        for job_id in failed:
            logger.warning("job %s was cut off by a stopped server again: failed", job_id)
        for index in range(self.workers):
            thread = threading.Thread(
                target=self._loop, name=f"stemkit-worker-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs and wait for the running ones (up to ``timeout`` s each)."""
        self._stopping.set()
        self.notify()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def notify(self) -> None:
        """Wake the workers: a job was queued."""
        with self._wake:
            self._wake.notify_all()

    def cancel(self, job_id: str) -> None:
        """Ask a running job to stop at its next progress report (it is being deleted)."""
        self._cancelled.add(job_id)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            with self._wake:  # claimed and marked running at once, for `running`
                job = self.store.claim()
                if job is not None:
                    self._running.add(job.id)
            if job is None:
                with self._wake:
                    self._wake.wait(timeout=1.0)
                continue
            self.run(job)

    @property
    def running(self) -> frozenset[str]:
        """The ids of the jobs being separated now."""
        with self._wake:
            return frozenset(self._running)

    def run(self, job: Job) -> None:
        """Separate one claimed job; it ends ``done`` with its stems, or ``failed``."""
        with self._wake:
            self._running.add(job.id)  # already there when the pool's loop claimed it
        started = time.perf_counter()
        try:
            stems = self._separate(job)
        except _Cancelled:
            logger.info("job %s was deleted while running", job.id)
        except StemkitError as error:
            logger.warning("job %s failed: %s", job.id, error)
            self.store.fail(job.id, self._public(str(error)))
        except Exception as error:  # a bug must fail the job, not kill the worker thread
            logger.exception("job %s failed unexpectedly", job.id)
            self.store.fail(job.id, f"internal error: {type(error).__name__}: {error}")
        else:
            if job.id not in self._cancelled and self.store.job(job.id) is not None:
                self.store.finish(job.id, stems)
                logger.info("job %s done in %.1f s", job.id, time.perf_counter() - started)
        finally:
            if job.id in self._cancelled or self.store.job(job.id) is None:
                # deleted while it ran: whatever it wrote since goes too
                self.data.remove(self.data.job_dir(job.id))
            self._cancelled.discard(job.id)
            with self._wake:
                self._running.discard(job.id)

    def separator(self, model: str) -> Separator:
        """The loaded model ``model``, shared by the jobs that use it."""
        from stemkit.api import Separator

        with self._models_lock:
            if model not in self._models:
                self._models[model] = Separator.from_pretrained(model, device=self.device)
            return self._models[model]

    def _separate(self, job: Job) -> dict[str, str]:
        from stemkit import outputs
        from stemkit.api import Separator

        song = self.store.song(job.song_id)
        if song is None:
            raise StemkitError("the song of this job was deleted")
        options = JobOptions.parse(job.model, job.options)
        loaded = self.separator(job.model)

        def report(done: int, total: int) -> None:
            if job.id in self._cancelled:
                raise _Cancelled
            share = 1.0 - _READ_SHARE - _WRITE_SHARE
            fraction = _READ_SHARE + share * done / max(total, 1)
            self.store.progress(job.id, fraction, "separating" if done < total else "writing")

        separator = Separator(
            loaded.model,
            name=job.model,
            device=loaded.device,
            segment=options.segment,
            overlap=options.overlap,
            shifts=options.shifts,
            batch_size=options.batch_size,
            seed=options.seed,
            on_progress=report,
        )
        root = self.data.job_dir(job.id)
        outputs.prepare_root(root)
        # A killed run's hidden partial folder, and (force=True below) a complete folder
        # written just before the kill but not yet recorded as done, are both ours to replace.
        outputs.clean_leftovers(root)
        destination = outputs.destination(root, "stems")
        self.store.progress(job.id, _READ_SHARE / 2, "reading")
        written = separator.separate_to_folder(
            self.data.song_dir(song.id) / song.file,
            destination,
            output=options.output(),
            stems=options.stems,
            two_stems=options.two_stems,
            force=True,
        )
        return {path.stem: path.name for path in written}

    def _public(self, message: str) -> str:
        """An error message without the server's own paths."""
        return message.replace(str(self.data.root) + "/", "")


class _Cancelled(Exception):
    """The job was deleted while it ran."""
