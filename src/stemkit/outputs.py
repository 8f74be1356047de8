"""Stem folders: one folder of audio files per song, under an output root, written safely.

The rules that make a stem folder trustworthy, shared by the command line and the web service:

- **Marked.** Every folder stemkit writes holds a :data:`MARKER` file (JSON: the song, the
  model, the files, the date). Replacing an existing folder (``force``) is allowed only when it
  holds that marker, so stemkit never deletes a folder it did not write.
- **Inside the root.** A song's folder name is its file name without extension; names that are
  empty, ``.``, ``..``, hold a path separator or start with stemkit's reserved prefix are
  refused, and the destination must resolve to a direct child of the root that is not a link.
- **All or nothing.** Files are written into a hidden partial folder beside the destination,
  which is renamed into place once every file and the marker are written.
- **One writer per destination.** Writing a destination holds an exclusive lock on it (an
  ``flock`` the kernel releases when the process dies), and the existence check is repeated
  under the lock right before the rename, so two concurrent runs never silently replace each
  other's folder.
- **Leftovers are cleaned.** A partial folder left by a killed run is removed by the next run
  into the same root (:func:`clean_leftovers`); a folder is only removed when its lock is free,
  so a live run's partial folder is never touched.
- **Readable errors.** File-system failures become an :class:`OutputError` naming the path and
  the reason (``no space left on device``, ``read-only file system``, …).

The hidden names stemkit uses in an output root all start with :data:`RESERVED_PREFIX`:
``.stemkit-<key>.lock``, ``.stemkit-<key>-<pid>-<token>.partial`` and ``….old``, where ``key``
is a hash of the folder name (so that a long song name never makes them too long).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import string
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from stemkit import __version__
from stemkit.errors import AudioError, StemkitError

if sys.platform != "win32":
    import fcntl

#: Name of the marker file inside every stem folder stemkit writes.
MARKER: Final = ".stemkit-stems.json"

#: Prefix of every hidden name stemkit creates in an output root; song names may not use it.
RESERVED_PREFIX: Final = ".stemkit-"

#: Seconds to wait for another run that is writing the same destination.
LOCK_WAIT: Final = 30.0

#: Below this many free bytes, a failed write is reported as a full disk: libsndfile reports
#: ENOSPC only as "System error".
_NEARLY_FULL: Final = 1 << 20

_LEFTOVER = re.compile(
    r"^\.stemkit-(?P<key>[0-9a-f]{16})(?:\.lock|-\d+-[0-9a-f]{8}\.(?P<kind>partial|old))$"
)

_HINTS: Final[dict[int, str]] = {
    errno.ENOSPC: "free some space or choose another output folder",
    errno.EDQUOT: "free some space or choose another output folder",
    errno.EACCES: "choose an output folder you can write to",
    errno.EPERM: "choose an output folder you can write to",
    errno.EROFS: "choose an output folder on a writable disk",
    errno.ENAMETOOLONG: "choose a shorter output folder or rename the song",
    errno.ENOTDIR: "a part of the path is a file; choose another output folder",
}


class OutputError(StemkitError):
    """An output folder cannot be used or written.

    Args:
        path: the folder or file concerned, as the user knows it (never a hidden partial name).
        reason: what is wrong, and where possible what to do about it.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def describe_os_error(error: OSError) -> str:
    """One lower-case line for a file-system error, e.g. ``"no space left on device; free …"``."""
    if error.errno is None:
        return str(error)
    reason = os.strerror(error.errno).lower()
    hint = _HINTS.get(error.errno)
    return f"{reason}; {hint}" if hint else reason


@dataclass(frozen=True)
class FileNames:
    """Where each stem of a song goes, from a template such as ``{track}/{stem}.{ext}``.

    The part before the one ``/`` names the song's folder and must hold ``{track}`` (the
    song's file name without extension): a song's stems are one folder, complete or absent,
    so templates that put every song's files side by side (``{track}_{stem}.{ext}``) are
    refused. The part after it names each file and must hold ``{stem}`` and ``{ext}`` (the
    extension without dot); ``{track}`` may appear there too, for stems that keep the song's
    name once dragged out of their folder (``{track}/{track} - {stem}.{ext}``).

    Args:
        template: the pattern; placeholders ``{track}``, ``{stem}``, ``{ext}``.

    Raises:
        StemkitError: a template that breaks the rules above, with an example that does not.
    """

    template: str = "{track}/{stem}.{ext}"

    def __post_init__(self) -> None:
        folder, slash, file = self.template.partition("/")
        example = "e.g. '{track}/{stem}.{ext}' or '{track}/{track} - {stem}.{ext}'"
        try:
            fields = [
                {name for _, name, _, _ in string.Formatter().parse(part) if name is not None}
                for part in (folder, file)
            ]
        except ValueError as error:
            raise StemkitError(f"file name template {self.template!r}: {error}") from None
        unknown = (fields[0] | fields[1]) - {"track", "stem", "ext"}
        if unknown:
            raise StemkitError(
                f"file name template {self.template!r}: unknown placeholder(s) "
                f"{', '.join('{' + name + '}' for name in sorted(unknown))}; use {{track}}, "
                f"{{stem}} and {{ext}} ({example})"
            )
        if not slash or "/" in file or "track" not in fields[0] or fields[0] - {"track"}:
            raise StemkitError(
                f"file name template {self.template!r}: a song's stems go in one folder named "
                f"by the part before the one '/', which holds {{track}} and no other placeholder "
                f"({example})"
            )
        if not {"stem", "ext"} <= fields[1]:
            raise StemkitError(
                f"file name template {self.template!r}: the file name (after '/') needs "
                f"{{stem}} and {{ext}} ({example})"
            )

    def folder(self, track: str) -> str:
        """The folder name of the song ``track``.

        Raises:
            OutputError: the name is empty, ``.``, ``..``, holds a separator or is reserved.
        """
        name = self.template.partition("/")[0].format(track=track)
        _check_name(name, Path(name))
        return name

    def file(self, track: str, stem: str, extension: str) -> str:
        """The file name of ``stem`` of the song ``track`` (``extension`` with or without dot).

        Raises:
            OutputError: the name is not a plain file name.
        """
        name = self.template.partition("/")[2].format(
            track=track, stem=stem, ext=extension.lstrip(".")
        )
        _check_name(name, Path(name))
        return name


def folder_name(song: str | os.PathLike[str]) -> str:
    """Folder name for a song: its file name without extension (and without ``.stem``).

    Raises:
        OutputError: the name left is empty, ``.`` or ``..``, holds a path separator, or starts
            with :data:`RESERVED_PREFIX`: it would write at or above the output root, or over
            stemkit's own hidden files.
    """
    path = Path(song)
    name = path.name
    if name.lower().endswith(".stem.mp4"):
        name = name[: -len(".stem.mp4")]
    else:
        name = path.stem
    _check_name(name, path)
    return name


def destination(root: Path, name: str) -> Path:
    """The folder ``root / name``, checked to be a direct child of ``root`` that is not a link.

    Raises:
        OutputError: ``name`` is not a valid folder name, the destination is a symbolic link,
            or it resolves anywhere but strictly inside ``root``.
    """
    path = root / name
    _check_name(name, path)
    if path.is_symlink():
        raise OutputError(
            path, "is a symbolic link; stemkit writes only real folders: remove the link"
        )
    if path.resolve().parent != root.resolve():
        raise OutputError(path, f"resolves outside the output folder {root}")
    return path


def is_stem_folder(path: Path) -> bool:
    """Whether ``path`` is a real folder (not a link) holding stemkit's :data:`MARKER`."""
    if path.is_symlink() or not path.is_dir():
        return False
    marker = path / MARKER
    if marker.is_symlink() or not marker.is_file():
        return False
    try:
        content = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and content.get("written_by") == "stemkit"


def check_destination(path: Path, *, force: bool) -> None:
    """Refuse to write ``path`` unless it is free, or ``force`` and it is a stem folder.

    Raises:
        OutputError: ``path`` is a link; it exists and ``force`` is false; or it exists and was
            not written by stemkit.
    """
    if path.is_symlink():
        raise OutputError(
            path, "is a symbolic link; stemkit writes only real folders: remove the link"
        )
    if not path.exists():
        return
    if not force:
        raise OutputError(
            path, "already exists; pass --force to replace it or choose another output folder"
        )
    if not is_stem_folder(path):
        raise OutputError(
            path,
            f"not replaced: it was not written by stemkit (it has no {MARKER}); "
            "move it away yourself or choose another output folder",
        )


def prepare_root(root: Path) -> list[Path]:
    """Create the output root if needed and check that files can be created in it.

    Call it before any long work, so that a bad output folder fails in a second, not after
    the separation.

    Returns:
        The folders this call created, outermost first, for :func:`remove_if_empty`.

    Raises:
        OutputError: a part of the path is a file, or the root cannot be created or written
            (read-only, no permission, name too long, disk full, …).
    """
    missing: list[Path] = []
    existing = root
    while not os.path.lexists(existing) and existing.parent != existing:
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        if existing == root:
            raise OutputError(root, "is a file, not a folder; choose another output folder")
        raise OutputError(root, f"{existing} is a file, not a folder; choose another output folder")
    created: list[Path] = []
    try:
        for folder in reversed(missing):
            try:
                os.mkdir(folder)
            except FileExistsError:
                continue  # a concurrent run made it; it is not ours to remove
            created.append(folder)
        probe = root / f"{RESERVED_PREFIX}probe-{os.getpid()}-{secrets.token_hex(4)}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.unlink(probe)
    except OSError as error:
        remove_if_empty(created)
        raise OutputError(root, describe_os_error(error)) from None
    return created


def remove_if_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (outermost first, as :func:`prepare_root` returns them) that are
    still empty: a run that wrote nothing leaves nothing behind."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (or gone): its parents are not empty either


def clean_leftovers(root: Path) -> list[Path]:
    """Remove what killed runs left in ``root``: partial folders and stale locks.

    A leftover is only touched while holding the lock of its destination, which a live run
    holds for as long as its partial folder exists: a concurrent run's work is never removed.
    An ``.old`` folder (a run killed while replacing a folder with ``force``) is renamed back
    into place when the destination is missing, so the previous stems come back.

    Returns:
        The leftover paths removed or restored.
    """
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return []
    keys = {m["key"] for m in map(_LEFTOVER.match, entries) if m is not None}
    handled: list[Path] = []
    for key in sorted(keys):
        with contextlib.suppress(OSError), _lock(root / f"{RESERVED_PREFIX}{key}.lock", 0.0) as got:
            if not got:
                continue  # a live run is writing this destination
            for entry in entries:
                match = _LEFTOVER.match(entry)
                if match is None or match["key"] != key or match["kind"] is None:
                    continue
                path = root / entry
                if match["kind"] == "old" and is_stem_folder(path):
                    name = _marker(path).get("folder")
                    if isinstance(name, str) and _key(name) == key:
                        target = root / name
                        if not os.path.lexists(target):
                            os.rename(path, target)
                            handled.append(path)
                            continue
                shutil.rmtree(path)
                handled.append(path)
    return handled


def write_stem_folder(
    path: Path,
    write: Callable[[Path], object],
    *,
    force: bool = False,
    info: Mapping[str, Any] | None = None,
    wait: float = LOCK_WAIT,
) -> Path:
    """Write one stem folder all or nothing, as its destination's only writer.

    Args:
        path: the destination, from :func:`destination`; its parent (the root) must exist.
        write: writes the stem files into the folder it is given (a hidden partial folder).
        force: replace an existing folder at ``path`` if it holds stemkit's marker.
        info: more fields for the marker file (song, model, …).
        wait: seconds to wait while another run writes the same destination.

    Returns:
        ``path``.

    Raises:
        OutputError: the destination exists (without ``force``), is not stemkit's, is being
            written by another run past ``wait``, or the file system refused a write; nothing
            is left behind under any name.
        AudioError: ``write`` refused the audio (e.g. NaN samples); the path is given as under
            the destination.
    """
    root = path.parent
    key = _key(path.name)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    partial = root / f"{RESERVED_PREFIX}{key}-{token}.partial"
    old = root / f"{RESERVED_PREFIX}{key}-{token}.old"
    try:
        with _lock(root / f"{RESERVED_PREFIX}{key}.lock", wait) as got:
            if not got:
                raise OutputError(path, "is being written by another stemkit run; try again later")
            # Checked again under the lock: another run may have written it since start-up.
            check_destination(path, force=force)
            os.mkdir(partial)
            try:
                write(partial)
                files = sorted(p.name for p in partial.iterdir())
                _write_marker(partial, path.name, files, info or {})
                # The last check, right before the rename, also covers a folder made by a
                # program that does not take stemkit's lock.
                check_destination(path, force=force)
                if os.path.lexists(path):
                    # Move the old folder aside first, so that the final name holds either the
                    # old complete folder or the new complete one (a killed run's .old folder is
                    # renamed back by clean_leftovers).
                    os.rename(path, old)
                    try:
                        os.rename(partial, path)
                    except OSError:
                        os.rename(old, path)
                        raise
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.rename(partial, path)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
    except (OSError, AudioError) as error:
        raise _translate(error, partial, path) from error
    return path


def _check_name(name: str, where: Path) -> None:
    """Refuse folder names that would write at or above the root, or over stemkit's files."""
    separators = {os.sep, os.altsep or os.sep, "\0"}
    if name in {"", ".", ".."} or any(sep in name for sep in separators):
        raise OutputError(
            where,
            f"its name without extension ({name!r}) cannot name an output folder; rename it",
        )
    if name.startswith(RESERVED_PREFIX):
        raise OutputError(
            where, f"names starting with {RESERVED_PREFIX!r} are reserved by stemkit; rename it"
        )


def _key(name: str) -> str:
    """Short fixed-length hash of a folder name, for the hidden names beside it."""
    return hashlib.sha256(os.fsencode(name)).hexdigest()[:16]


def _marker(folder: Path) -> dict[str, Any]:
    content = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    return content if isinstance(content, dict) else {}


def _write_marker(folder: Path, name: str, files: list[str], info: Mapping[str, Any]) -> None:
    content = {
        "written_by": "stemkit",
        "version": __version__,
        "folder": name,
        **info,
        "files": files,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with open(folder / MARKER, "x", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def _lock(path: Path, wait: float) -> Iterator[bool]:
    """Hold the lock file ``path`` exclusively; yields False if still busy after ``wait`` s.

    The file exists only while held: it is unlinked before it is released, and a locker
    checks that the file it locked is still the one at ``path`` (the previous holder may
    have unlinked it in between).
    """
    deadline = time.monotonic() + wait
    while True:
        descriptor = _try_lock(path)
        if descriptor is not None:
            break
        if time.monotonic() >= deadline:
            yield False
            return
        time.sleep(0.05)
    try:
        yield True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(descriptor)


def _try_lock(path: Path) -> int | None:
    """A descriptor of ``path`` holding its lock, or None if another process holds it."""
    if sys.platform == "win32":
        # No flock: exclusive creation. A killed run's lock then stays until removed by hand.
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return None
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    try:
        mine, current = os.fstat(descriptor), os.stat(path)
        if (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino):
            return descriptor
    except FileNotFoundError:
        pass
    os.close(descriptor)  # locked a file its holder had just unlinked: try the new one
    return _try_lock(path)


def _translate(error: OSError | AudioError, partial: Path, path: Path) -> StemkitError:
    """The error as the user should see it: paths under ``path``, never the partial folder."""

    def public(name: str | None) -> Path:
        if name is None:
            return path
        candidate = Path(name)
        with contextlib.suppress(ValueError):
            return path / candidate.relative_to(partial)
        return path if candidate.parent == path.parent else candidate

    if isinstance(error, AudioError):
        cause = error.__cause__
        if isinstance(cause, OSError):
            return OutputError(public(error.path), describe_os_error(cause))
        with contextlib.suppress(OSError):
            if shutil.disk_usage(path.parent).free < _NEARLY_FULL:
                return OutputError(
                    public(error.path), describe_os_error(OSError(errno.ENOSPC, "full"))
                )
        return AudioError(public(error.path), error.reason)
    filename = error.filename if isinstance(error.filename, str) else None
    return OutputError(public(filename), describe_os_error(error))
