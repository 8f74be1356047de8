"""The manifest of a big separation job: every song, and what became of it.

A manifest is an append-only file of JSON lines. The first line is the header (what made it:
the command's song arguments and output folder); then one ``pending`` line per song, written
once when the job is planned (a folder is scanned once, then never again: the manifest *is* the
list); then one line per result as it arrives::

    {"manifest": "stemkit", "version": 1, "command": "separate", "arguments": [...], ...}
    {"song": "/data/a.flac", "destination": "/out/a", "state": "pending", "previous": null}
    {"song": "/data/a.flac", "state": "done", "checksum": "sha256:…", "seconds": 4.2, ...}
    {"song": "/data/b.flac", "state": "failed", "reason": "…: cannot be decoded"}
    {"summary": {"done": 1, "failed": 1, ...}}

A song's state is its last line. Each line is written whole and flushed to disk (``fsync``)
before the job goes on, so a job killed at any moment loses at most the line being written:
a torn last line is ignored when the manifest is read back. Appending costs the same for the
100,000th song as for the first, where rewriting one JSON document per result would not.

``previous`` identifies (inode, modification time) the marker of a folder that was already at
the destination when the job was planned (``--force`` replaces it), so that a folder written
by this job, but whose ``done`` line was lost, is told apart from an older one when the job
resumes: it is recorded as done instead of being separated again.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from stemkit.errors import StemkitError

__all__ = ["Entry", "Manifest", "folder_checksum", "marker_identity"]

#: First field of a manifest's header line.
MAGIC: Final = "stemkit"
VERSION: Final = 1

State = Literal["pending", "done", "failed"]


@dataclass
class Entry:
    """One song of a job and its last known state.

    Attributes:
        song: the input file, absolute.
        destination: its stem folder, absolute.
        state: ``"pending"``, ``"done"`` or ``"failed"``.
        previous: (inode, mtime_ns) of the marker of a stem folder found at ``destination``
            when the job was planned, or None.
        result: the fields of the last result line (checksum, reason, cost, …).
    """

    song: str
    destination: str
    state: State = "pending"
    previous: tuple[int, int] | None = None
    result: dict[str, Any] = field(default_factory=dict)


class Manifest:
    """An open manifest file: its header, its entries, and an append handle.

    Build one with :meth:`create` (a new job) or :meth:`load` (resume).
    """

    def __init__(
        self,
        path: Path | None,
        header: dict[str, Any],
        entries: dict[str, Entry],
        *,
        torn: bool = False,
    ) -> None:
        self.path = path
        self.header = header
        #: song path → entry, in the order of the job
        self.entries = entries
        # The file ends in a line cut short by a killed job: the next line starts on its own.
        self._torn = torn

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str] | None,
        entries: Sequence[Entry],
        **header: Any,
    ) -> Manifest:
        """Write a new manifest listing ``entries`` as pending (the file must not exist);
        ``path`` None keeps it in memory only.

        Raises:
            StemkitError: the file exists or cannot be written.
        """
        record = {
            "manifest": MAGIC,
            "version": VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **header,
        }
        lines = [record] + [
            {
                "song": e.song,
                "destination": e.destination,
                "state": "pending",
                "previous": list(e.previous) if e.previous else None,
            }
            for e in entries
        ]
        if path is None:
            return cls(None, record, {e.song: e for e in entries})
        target = Path(path)
        # Written under another name and renamed: a manifest is either whole or absent, so a
        # job killed while planning is planned again from its arguments.
        partial = target.with_name(f".{target.name}.partial")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                raise StemkitError(f"{target}: manifest already exists")
            with open(partial, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(line) + "\n" for line in lines)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, target)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise StemkitError(f"{target}: cannot write the manifest: {error.strerror}") from None
        return cls(target, record, {e.song: e for e in entries})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read a manifest back: each song's state is its last line.

        Raises:
            StemkitError: the file cannot be read or is not a stemkit manifest.
        """
        source = Path(path)
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as error:
            raise StemkitError(f"{source}: cannot read the manifest: {error.strerror}") from None
        lines = text.split("\n")
        try:
            header = json.loads(lines[0])
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("manifest") != MAGIC:
            raise StemkitError(f"{source}: not a stemkit manifest (no header line)")
        if header.get("version") != VERSION:
            raise StemkitError(f"{source}: manifest version {header.get('version')} is unknown")
        entries: dict[str, Entry] = {}
        for line in lines[1:]:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # the torn last line of a killed job (or the empty one after the last)
            if not isinstance(record, dict) or "song" not in record:
                continue
            song = str(record["song"])
            if record.get("state") == "pending" and song not in entries:
                previous = record.get("previous")
                entries[song] = Entry(
                    song,
                    str(record["destination"]),
                    previous=(int(previous[0]), int(previous[1])) if previous else None,
                )
            elif song in entries and record.get("state") in ("done", "failed", "pending"):
                entry = entries[song]
                entry.state = record["state"]
                entry.result = {k: v for k, v in record.items() if k not in ("song", "state")}
        return cls(source, header, entries, torn=not text.endswith("\n"))

    def record(self, song: str, state: State, **result: Any) -> None:
        """Append the result of ``song`` and flush it to disk before returning."""
        entry = self.entries[song]
        entry.state = state
        entry.result = dict(result)
        self._append([{"song": song, "state": state, **result}])

    def summarise(self, summary: Mapping[str, Any]) -> None:
        """Append the job's final summary."""
        self._append([{"summary": dict(summary)}])

    def counts(self) -> dict[str, int]:
        """Songs per state."""
        counts = {"pending": 0, "done": 0, "failed": 0}
        for entry in self.entries.values():
            counts[entry.state] += 1
        return counts

    def _append(self, records: Iterable[Mapping[str, Any]]) -> None:
        if self.path is None:
            return  # a job without a manifest file keeps its states in memory only
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                if self._torn:
                    handle.write("\n")
                    self._torn = False
                handle.writelines(json.dumps(r, default=str) + "\n" for r in records)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise StemkitError(
                f"{self.path}: cannot write the manifest: {error.strerror}"
            ) from None


def folder_checksum(folder: Path, files: Iterable[str]) -> str:
    """``"sha256:<hex>"`` of the named files of ``folder`` (their names and bytes, in sorted
    order): what a song's output is, independent of when and where it was written."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode("utf-8") + b"\0")
        with open(folder / name, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        digest.update(b"\0")
    return f"sha256:{digest.hexdigest()}"


def marker_identity(folder: Path, marker: str) -> tuple[int, int] | None:
    """(inode, mtime_ns) of ``folder/marker``, or None when there is none: tells a stem folder
    written before a job from one the job wrote."""
    try:
        stat = os.stat(folder / marker)
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns)
