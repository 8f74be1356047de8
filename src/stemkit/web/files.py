"""The data folder: where uploads, references and stems live, and how uploads are checked.

Layout of ``DATA`` (every name below is chosen by the service, never taken from a request)::

    stemkit-web.sqlite3           the job store
    incoming/<random>.<ext>       an upload being received and decoded (removed either way)
    songs/<song id>/song.<ext>    an accepted song
    songs/<song id>/references/   its true stems, for generated songs
    jobs/<job id>/stems/          a job's stem folder, written all or nothing

An upload is accepted only if it decodes (:func:`stemkit.audio.read_audio`), whatever its
extension says: an empty file, a text file renamed ``.wav``, more than two channels or more
bytes than the limit are refused with a :class:`UploadError` and leave no file behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from stemkit.errors import StemkitError

#: Name of a job's stem folder inside ``jobs/<id>/``.
STEMS_FOLDER: Final = "stems"

#: Bytes read from an upload at a time.
_CHUNK: Final = 1 << 20


class UploadError(StemkitError):
    """An upload is refused.

    Args:
        status: the HTTP status to answer (413 too large, 415 unsupported, 422 unusable).
        message: what is wrong, for the user.
    """

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class Decoded:
    """What decoding an upload found."""

    sample_rate: int
    channels: int
    frames: int


class DataFolder:
    """The paths of the service's files under ``root``.

    Args:
        root: the data folder, created if missing.
    """

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()
        for name in ("incoming", "songs", "jobs"):
            (self.root / name).mkdir(exist_ok=True)
        self.clean_incoming()

    @property
    def database(self) -> Path:
        """The SQLite file."""
        return self.root / "stemkit-web.sqlite3"

    def song_dir(self, song_id: str) -> Path:
        """``songs/<id>/``."""
        return self.inside(self.root / "songs" / song_id)

    def job_dir(self, job_id: str) -> Path:
        """``jobs/<id>/``: the output root of the job's stem folder."""
        return self.inside(self.root / "jobs" / job_id)

    def stems_dir(self, job_id: str) -> Path:
        """``jobs/<id>/stems/``."""
        return self.job_dir(job_id) / STEMS_FOLDER

    def inside(self, path: Path) -> Path:
        """``path``, checked to resolve strictly inside the data folder.

        Raises:
            StemkitError: it would not (a link, or ``..`` in a name).
        """
        resolved = path.resolve()
        if resolved == self.root or self.root not in resolved.parents:
            raise StemkitError("a path outside the data folder was refused")
        return resolved

    def remove(self, path: Path) -> None:
        """Remove a folder of the service (checked to be inside the data folder)."""
        folder = self.inside(path)
        shutil.rmtree(folder, ignore_errors=True)

    def clean_incoming(self) -> None:
        """Remove uploads a killed server was receiving."""
        for entry in (self.root / "incoming").iterdir():
            with contextlib.suppress(OSError):
                entry.unlink()

    def receive(
        self, source: BinaryIO, filename: str, *, max_bytes: int, song_id: str
    ) -> tuple[str, Decoded]:
        """Copy an upload into ``songs/<song_id>/`` if it decodes as a usable song.

        Args:
            source: the uploaded bytes.
            filename: the name the client gave; only its extension is used, as a hint to the
                decoder (the content decides).
            max_bytes: refuse uploads larger than this.
            song_id: the new song's id.

        Returns:
            ``(file name inside the song folder, what decoding found)``.

        Raises:
            UploadError: empty, too large, of an unsupported type, not decodable, without
                samples, or with more than two channels; nothing is left behind.
        """
        from stemkit.audio import READ_EXTENSIONS

        extension = Path(sanitize(filename)).suffix.lower()
        if extension not in READ_EXTENSIONS:
            raise UploadError(
                415,
                f"unsupported file type {extension or '(no extension)'!r}; send an audio "
                f"file: {', '.join(e.lstrip('.') for e in READ_EXTENSIONS)}",
            )
        incoming = self.root / "incoming" / f"{secrets.token_hex(8)}{extension}"
        try:
            size = _copy_limited(source, incoming, max_bytes)
            if size == 0:
                raise UploadError(422, "the file is empty (0 bytes)")
            decoded = _decode(incoming)
            folder = self.song_dir(song_id)
            folder.mkdir()
            final = folder / f"song{extension}"
            os.replace(incoming, final)
            return final.name, decoded
        finally:
            with contextlib.suppress(OSError):
                incoming.unlink()


def sanitize(filename: str, *, fallback: str = "song") -> str:
    """A file name safe to show and to offer in a download, from whatever a client sent.

    Keeps the last path component only, letters, digits, spaces, ``._-()`` (accents folded),
    no leading dot, at most 100 characters; an empty result becomes ``fallback``.
    """
    name = re.split(r"[\\/]", filename)[-1]
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    name = re.sub(r"[^A-Za-z0-9 ._()\-]+", "_", name)
    name = re.sub(r"\s+", " ", name).strip(" .")
    stem, dot, ext = name.rpartition(".")
    if dot and len(ext) <= 10:
        name = f"{stem[:90].strip(' .')}.{ext}"
    else:
        name = name[:100]
    if not name or name.startswith(".") or name in {".", ".."}:
        return fallback
    return name


def _copy_limited(source: BinaryIO, target: Path, max_bytes: int) -> int:
    size = 0
    with open(target, "xb") as handle:
        while chunk := source.read(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise UploadError(
                    413, f"the file is larger than the limit of {max_bytes / 1e6:g} MB"
                )
            handle.write(chunk)
    return size


def _decode(path: Path) -> Decoded:
    """Decode the whole file: what the service accepts is what the separator will read."""
    from stemkit.audio import read_audio
    from stemkit.errors import AudioError

    try:
        audio, rate = read_audio(path, channels=None)
    except AudioError as error:
        raise UploadError(422, f"not a usable audio file: {error.reason}") from None
    channels, frames = audio.shape
    if channels > 2:
        raise UploadError(
            422,
            f"the song has {channels} channels; stemkit separates mono or stereo songs: "
            "downmix it to stereo first",
        )
    return Decoded(sample_rate=int(rate), channels=int(channels), frames=int(frames))
