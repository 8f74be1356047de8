"""Which General MIDI soundfonts the generator may use, and which one each song gets.

Soundfonts are found in the system folders (:data:`SOUNDFONT_DIRS`, where Debian's
``fluid-soundfont-gm``, ``timgm6mb-soundfont`` and ``musescore-general-soundfont`` put theirs)
and named by their file stem (``FluidR3_GM``, ``TimGM6mb``, ``MuseScore_General_Full``).
Links (``default-GM.sf2``) count once, under the name of the file they point to. A file that
FluidSynth cannot load or that lacks the General MIDI drum kit is left out. TimGM6mb (from the
system or from the ``pretty_midi`` wheel) is the fallback when nothing else is installed.

With two soundfonts or more, one is reserved for the held-out split (``--heldout``): training
songs never use it. Each song draws its soundfont (or one per part) from its own seed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from stemkit.data.synth.render import _fluidsynth, check_soundfont, default_soundfont
from stemkit.errors import StemkitError

#: Folders searched for ``*.sf2`` and ``*.sf3`` files.
SOUNDFONT_DIRS: tuple[Path, ...] = (Path("/usr/share/sounds/sf2"), Path("/usr/share/sounds/sf3"))
#: The soundfont kept for the held-out split: the first of these that the pool holds, else the
#: last name in alphabetical order that is not the fallback.
HELDOUT_PREFERENCE: tuple[str, ...] = ("MuseScore_General_Full", "MuseScore_General", "FluidR3_GM")
#: The fallback soundfont's name.
FALLBACK = "TimGM6mb"
#: ``--soundfonts`` value that selects every installed soundfont.
ALL = "all"

_Font = TypeVar("_Font")


@dataclass(frozen=True)
class Soundfont:
    """A usable soundfont: its name (file stem) and its resolved path."""

    name: str
    path: Path


@functools.lru_cache(maxsize=4)
def discover(dirs: tuple[Path, ...] = SOUNDFONT_DIRS) -> tuple[Soundfont, ...]:
    """Every loadable General MIDI soundfont in ``dirs``, sorted by name.

    Falls back to :func:`~stemkit.data.synth.render.default_soundfont` (TimGM6mb) when the
    folders hold none.

    Raises:
        StemkitError: if FluidSynth cannot be loaded, or no soundfont exists at all.
    """
    _fluidsynth()  # a missing library is the user's problem to fix, not a missing soundfont
    found: dict[Path, Soundfont] = {}
    for folder in dirs:
        if not folder.is_dir():
            continue
        for path in sorted([*folder.glob("*.sf2"), *folder.glob("*.sf3")]):
            real = Path(os.path.realpath(path))
            if real in found or not real.is_file():
                continue
            try:
                check_soundfont(real)
            except StemkitError:
                continue  # not loadable here (e.g. an .sf3 with a FluidSynth built without Ogg)
            found[real] = Soundfont(real.stem, real)
    fonts = sorted(found.values(), key=lambda font: font.name.lower())
    if not fonts:
        fallback = default_soundfont()
        fonts = [Soundfont(fallback.stem, fallback)]
    return tuple(fonts)


def resolve(
    spec: str | Sequence[str | os.PathLike[str]] | None,
    dirs: tuple[Path, ...] = SOUNDFONT_DIRS,
) -> tuple[Soundfont, ...]:
    """The soundfonts named by ``spec``: ``"all"`` (or None), or names and paths.

    Args:
        spec: ``"all"``, a comma-separated string, or a sequence of names (file stems of
            discovered soundfonts, case-insensitive) and paths to ``.sf2``/``.sf3`` files.
        dirs: where discovered soundfonts are searched.

    Raises:
        StemkitError: on an unknown name (the message lists the installed ones), a missing or
            unusable file.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == ALL):
        return discover(dirs)
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    chosen: list[Soundfont] = []
    for item in items:
        text = os.fspath(item)
        if not text:
            continue
        if text.lower() == ALL:
            chosen.extend(discover(dirs))
            continue
        looks_like_path = os.sep in text or text.lower().endswith((".sf2", ".sf3"))
        if looks_like_path:
            path = Path(text).expanduser().absolute()
            check_soundfont(path)
            chosen.append(Soundfont(path.stem, path))
            continue
        installed = discover(dirs)
        match = [font for font in installed if font.name.lower() == text.lower()]
        if not match:
            names = ", ".join(font.name for font in installed)
            raise StemkitError(
                f"unknown soundfont {text!r}: installed General MIDI soundfonts are {names} "
                f"(or '{ALL}'); give one of them, or a path to an .sf2/.sf3 file"
            )
        chosen.append(match[0])
    unique = list({font.path: font for font in chosen}.values())
    if not unique:
        raise StemkitError("--soundfonts names no soundfont; give names, paths or 'all'")
    # Two files with one name (a system TimGM6mb and pretty_midi's) are told apart by path.
    taken = [font.name for font in unique]
    return tuple(
        Soundfont(str(font.path), font.path) if taken.count(font.name) > 1 else font
        for font in unique
    )


def split_pool(
    pool: Sequence[Soundfont], heldout: str | None = None
) -> tuple[tuple[Soundfont, ...], Soundfont | None]:
    """Split ``pool`` into the training soundfonts and the one reserved for held-out songs.

    Args:
        pool: the selected soundfonts.
        heldout: name of the soundfont to reserve; default by :data:`HELDOUT_PREFERENCE`.

    Returns:
        ``(training, reserved)``; ``reserved`` is None when the pool has a single soundfont
        (training then uses it, and held-out songs cannot be made).

    Raises:
        StemkitError: if ``heldout`` is not in the pool, or is its only soundfont.
    """
    if heldout is not None:
        match = [f for f in pool if f.name.lower() == heldout.lower() or str(f.path) == heldout]
        if not match:
            names = ", ".join(font.name for font in pool)
            raise StemkitError(
                f"--heldout-soundfont {heldout!r} is not among the selected soundfonts ({names})"
            )
        if len(pool) == 1:
            raise StemkitError(
                f"--heldout-soundfont {heldout!r} is the only selected soundfont: training would "
                "have none; select more with --soundfonts"
            )
        reserved = match[0]
    elif len(pool) < 2:
        return tuple(pool), None
    else:
        by_name = {font.name: font for font in pool}
        preferred = [by_name[name] for name in HELDOUT_PREFERENCE if name in by_name]
        others = [font for font in pool if font.name != FALLBACK] or list(pool)
        reserved = preferred[0] if preferred else others[-1]
    return tuple(font for font in pool if font != reserved), reserved


def choose(
    fonts: Sequence[_Font], track_seed: int, parts: Sequence[str] | None = None
) -> dict[str, _Font]:
    """The soundfont of a song, seeded by its track seed.

    Args:
        fonts: the candidates (in a fixed order).
        track_seed: the song's seed.
        parts: part names to draw one soundfont each for; None draws one for the whole song
            (returned under the key ``"song"``).

    Returns:
        ``{"song": font}`` or ``{part: font}``.
    """
    rng = np.random.default_rng(np.random.SeedSequence(track_seed, spawn_key=(101,)))
    if parts is None:
        return {"song": fonts[int(rng.integers(0, len(fonts)))]}
    return {part: fonts[int(rng.integers(0, len(fonts)))] for part in parts}
