"""The job store: songs and separation jobs in one SQLite file (stdlib :mod:`sqlite3`).

Everything the service knows lives in ``DATA/stemkit-web.sqlite3``; files live beside it under
paths the service makes itself (``songs/<id>/``, ``jobs/<id>/``), never under a name taken
from a request. The rules that make a restart safe:

- A job is ``queued``, ``running``, ``done`` or ``failed``. It becomes ``done`` only after its
  stem folder was renamed into place (:func:`stemkit.outputs.write_stem_folder`), so a ``done``
  job always has every file it lists.
- On start (:meth:`JobStore.recover`), a job found ``running`` was cut off by a killed server:
  it is queued again (its hidden partial folder is removed by the next write into the same
  root) unless it has already been started :data:`MAX_ATTEMPTS` times, then it is failed
  with that reason. A ``done`` job whose folder is no longer complete is failed as well.

One connection is shared by the threads of the service, behind a lock: the store is small and
the writes are a handful per job.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

#: How many times a job is started before a server killed during it fails it.
MAX_ATTEMPTS: Final = 2

#: The job states, in their order.
STATES: Final = ("queued", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS songs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    file TEXT NOT NULL,
    sample_rate INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    frames INTEGER NOT NULL,
    references_json TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    song_id TEXT NOT NULL REFERENCES songs(id),
    model TEXT NOT NULL,
    options_json TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT 'queued',
    error TEXT,
    stems_json TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created);
"""


@dataclass(frozen=True)
class Song:
    """An uploaded (or generated) song.

    Attributes:
        id: the service's name for it (32 hex digits).
        name: the sanitised file name given by the user, for display and downloads.
        file: the file name inside the song's folder (the service chose it).
        sample_rate, channels, frames: what decoding it found.
        references: stem name → file name of its true stems inside ``references/`` (generated
            songs), else None.
        created: Unix time.
    """

    id: str
    name: str
    file: str
    sample_rate: int
    channels: int
    frames: int
    references: dict[str, str] | None
    created: float

    def public(self) -> dict[str, Any]:
        """The song as the REST API shows it."""
        return {
            "id": self.id,
            "name": self.name,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "duration": self.frames / self.sample_rate,
            "references": sorted(self.references) if self.references else None,
            "created": self.created,
        }


@dataclass(frozen=True)
class Job:
    """A separation of one song by one model.

    Attributes:
        id: 32 hex digits.
        song_id: the song separated.
        model: what ``stemkit separate --model`` takes.
        options: the other settings (see :class:`stemkit.web.jobs.JobOptions`).
        status: one of :data:`STATES`.
        progress: 0 to 1.
        stage: what the worker is doing (``queued``, ``loading``, ``separating``, ``writing``,
            ``done``, ``failed``).
        error: why it failed, one line.
        stems: stem name → file name, once done.
        attempts: how many times a worker started it.
    """

    id: str
    song_id: str
    model: str
    options: dict[str, Any]
    status: str
    progress: float
    stage: str
    error: str | None
    stems: dict[str, str] | None
    attempts: int
    created: float
    started: float | None
    finished: float | None

    def public(self) -> dict[str, Any]:
        """The job as the REST API shows it."""
        return {
            "id": self.id,
            "song_id": self.song_id,
            "model": self.model,
            "options": self.options,
            "status": self.status,
            "progress": round(self.progress, 4),
            "stage": self.stage,
            "error": self.error,
            "stems": list(self.stems) if self.stems else [],
            "attempts": self.attempts,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }


class JobStore:
    """Songs and jobs in the SQLite file ``path``, safe to share between threads.

    Args:
        path: the database file, created with its tables when missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL with NORMAL loses no commit when the process is killed (only on power loss,
            # the last ones), and spares an fsync per progress update.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)  # commits by itself

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # songs

    def add_song(
        self,
        name: str,
        file: str,
        sample_rate: int,
        channels: int,
        frames: int,
        references: dict[str, str] | None = None,
        song_id: str | None = None,
    ) -> Song:
        """Record a song whose files are already in place; returns it."""
        song = Song(
            id=song_id or new_id(),
            name=name,
            file=file,
            sample_rate=sample_rate,
            channels=channels,
            frames=frames,
            references=references,
            created=time.time(),
        )
        with self._transaction() as db:
            db.execute(
                "INSERT INTO songs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    song.id,
                    song.name,
                    song.file,
                    song.sample_rate,
                    song.channels,
                    song.frames,
                    json.dumps(references) if references else None,
                    song.created,
                ),
            )
        return song

    def song(self, song_id: str) -> Song | None:
        """The song ``song_id``, or None."""
        with self._lock:
            row = self._db.execute("SELECT * FROM songs WHERE id = ?", (song_id,)).fetchone()
        return None if row is None else _song(row)

    def songs(self) -> list[Song]:
        """Every song, newest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM songs ORDER BY created DESC").fetchall()
        return [_song(row) for row in rows]

    def delete_song(self, song_id: str) -> None:
        """Forget a song (its jobs must be gone first)."""
        with self._transaction() as db:
            db.execute("DELETE FROM songs WHERE id = ?", (song_id,))

    # jobs

    def add_job(self, song_id: str, model: str, options: dict[str, Any]) -> Job:
        """Queue a new job; returns it."""
        job_id = new_id()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, song_id, model, options_json, status, created) "
                "VALUES (?, ?, ?, ?, 'queued', ?)",
                (job_id, song_id, model, json.dumps(options), time.time()),
            )
        job = self.job(job_id)
        assert job is not None
        return job

    def job(self, job_id: str) -> Job | None:
        """The job ``job_id``, or None."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def jobs(self, song_id: str | None = None) -> list[Job]:
        """Every job (of one song), newest first."""
        with self._lock:
            if song_id is None:
                rows = self._db.execute("SELECT * FROM jobs ORDER BY created DESC").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM jobs WHERE song_id = ? ORDER BY created DESC", (song_id,)
                ).fetchall()
        return [_job(row) for row in rows]

    def claim(self) -> Job | None:
        """Take the oldest queued job for a worker: it becomes ``running``; None if none."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = 'running', stage = 'loading', progress = 0, "
                "attempts = attempts + 1, started = ? WHERE id = ?",
                (time.time(), row["id"]),
            )
        return self.job(row["id"])

    def progress(self, job_id: str, progress: float, stage: str) -> None:
        """Record how far a running job is."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET progress = ?, stage = ? WHERE id = ? AND status = 'running'",
                (min(max(progress, 0.0), 1.0), stage, job_id),
            )

    def finish(self, job_id: str, stems: dict[str, str]) -> None:
        """Mark a job done, with the files of its (complete) stem folder."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET status = 'done', stage = 'done', progress = 1, stems_json = ?, "
                "error = NULL, finished = ? WHERE id = ?",
                (json.dumps(stems), time.time(), job_id),
            )

    def fail(self, job_id: str, error: str) -> None:
        """Mark a job failed with a one-line reason; it lists no stems."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET status = 'failed', stage = 'failed', stems_json = NULL, "
                "error = ?, finished = ? WHERE id = ?",
                (error, time.time(), job_id),
            )

    def delete_job(self, job_id: str) -> None:
        """Forget a job (its files are removed by the caller)."""
        with self._transaction() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def recover(self) -> tuple[list[str], list[str]]:
        """Settle the jobs a killed server left ``running``: queue them again, or fail those
        already started :data:`MAX_ATTEMPTS` times.

        Returns:
            ``(requeued, failed)`` job ids.
        """
        requeued: list[str] = []
        failed: list[str] = []
        with self._transaction() as db:
            rows = db.execute("SELECT id, attempts FROM jobs WHERE status = 'running'").fetchall()
            for row in rows:
                if row["attempts"] >= MAX_ATTEMPTS:
                    db.execute(
                        "UPDATE jobs SET status = 'failed', stage = 'failed', stems_json = NULL, "
                        "error = ?, finished = ? WHERE id = ?",
                        (
                            f"the server stopped during this job {row['attempts']} times; "
                            "it was not retried again",
                            time.time(),
                            row["id"],
                        ),
                    )
                    failed.append(row["id"])
                else:
                    db.execute(
                        "UPDATE jobs SET status = 'queued', stage = 'queued', progress = 0 "
                        "WHERE id = ?",
                        (row["id"],),
                    )
                    requeued.append(row["id"])
        return requeued, failed


def new_id() -> str:
    """A fresh random id: 32 hex digits, safe as a file name."""
    return uuid.uuid4().hex


def is_id(text: str) -> bool:
    """Whether ``text`` has the form of an id (checked before it names any path)."""
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def _song(row: sqlite3.Row) -> Song:
    return Song(
        id=row["id"],
        name=row["name"],
        file=row["file"],
        sample_rate=row["sample_rate"],
        channels=row["channels"],
        frames=row["frames"],
        references=json.loads(row["references_json"]) if row["references_json"] else None,
        created=row["created"],
    )


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        song_id=row["song_id"],
        model=row["model"],
        options=json.loads(row["options_json"]),
        status=row["status"],
        progress=row["progress"],
        stage=row["stage"],
        error=row["error"],
        stems=json.loads(row["stems_json"]) if row["stems_json"] else None,
        attempts=row["attempts"],
        created=row["created"],
        started=row["started"],
        finished=row["finished"],
    )
