"""Which songs a ``stemkit separate`` command names, and where each one's stems go.

A song argument is a file (taken as it is, whatever its extension: reading it says what is
wrong), a folder (searched recursively for files with an audio extension, hidden names
skipped, in sorted order) or a quoted glob pattern that the shell did not expand (``"*.mp3"``,
``"album/**/*.flac"``), expanded here the same way. Songs found in a folder keep their
subfolder under the output folder, so ``album/cd1/01.flac`` and ``album/cd2/01.flac`` become
``DIR/cd1/01/`` and ``DIR/cd2/01/``; a pattern's songs keep theirs below the pattern's fixed
part (``album/`` in ``album/**/*.flac``). A song named twice is separated once.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stemkit.errors import StemkitError

_MAGIC = frozenset("*?[")


@dataclass(frozen=True)
class Song:
    """One song to separate.

    Attributes:
        path: the audio file.
        subfolder: where its stem folder goes, relative to the output folder (``Path()``: right
            in it).
    """

    path: Path
    subfolder: Path = Path()


def find_songs(arguments: Sequence[str], *, exclude: Path | None = None) -> list[Song]:
    """The songs the command-line arguments name, in the order given (folders sorted).

    Args:
        arguments: files, folders and glob patterns.
        exclude: a folder never searched (the output folder, which may lie inside an input
            folder and holds earlier stems, not songs).

    Raises:
        StemkitError: a folder holds no audio file, or a pattern matches none.
    """
    from stemkit.audio import READ_EXTENSIONS

    extensions = frozenset(READ_EXTENSIONS)
    skip = exclude.resolve() if exclude is not None else None
    songs: list[Song] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = list(_search(path, Path(), extensions, skip))
            if not found:
                raise StemkitError(
                    f"{argument}: no audio files in this folder or below it (looked for "
                    f"{', '.join(sorted(extensions))})"
                )
            songs += found
        elif not os.path.lexists(path) and _MAGIC & set(argument):
            found = _expand(argument, extensions, skip)
            if not found:
                raise StemkitError(f"{argument!r} matches no audio file")
            songs += found
        else:
            songs.append(Song(path))
    unique: dict[Path, Song] = {}
    for song in songs:
        unique.setdefault(song.path.resolve(), song)
    return list(unique.values())


def _search(
    folder: Path, below: Path, extensions: frozenset[str], skip: Path | None
) -> Iterable[Song]:
    """Audio files under ``folder``, sorted, each with its subfolder ``below / …``."""
    for root, folders, files in os.walk(folder):
        here = Path(root)
        folders[:] = sorted(
            name
            for name in folders
            if not name.startswith(".") and (skip is None or (here / name).resolve() != skip)
        )
        relative = below / here.relative_to(folder)
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in extensions:
                yield Song(here / name, relative)


def _expand(pattern: str, extensions: frozenset[str], skip: Path | None) -> list[Song]:
    """The audio files a glob pattern matches (folders it matches are searched)."""
    parts = Path(pattern).parts
    fixed = 0
    while fixed < len(parts) - 1 and not _MAGIC & set(parts[fixed]):
        fixed += 1
    base = Path(*parts[:fixed]) if fixed else Path()
    songs: list[Song] = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        path = Path(match)
        if skip is not None and (path.resolve() == skip or skip in path.resolve().parents):
            continue
        if path.is_dir():
            songs += _search(path, path.relative_to(base), extensions, skip)
        elif path.suffix.lower() in extensions:
            songs.append(Song(path, path.parent.relative_to(base)))
    return songs
