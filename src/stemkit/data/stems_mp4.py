"""MUSDB18 (the compressed release): one ``.stem.mp4`` file per track, five AAC streams.

The layout read here is the one MUSDB18 ships in::

    <root>/train/<track name>.stem.mp4   (100 tracks)
    <root>/test/<track name>.stem.mp4    (50 tracks)

Each file holds five audio streams in the Native Instruments stems order: 0 mixture, 1 drums,
2 bass, 3 other, 4 vocals (:data:`STEM_STREAMS`). :class:`MusdbStems` is :class:`MusdbHQ`
with another track lister and reader, so the splits (the 14 official validation names
included), the excerpt draws seeded by ``(seed, epoch, index)``, the augmentations, the full
tracks and the fingerprint are exactly those of the WAV layout.

Excerpts are decoded on demand, not cached. ffmpeg seeks in the container (``-ss``) to a point
:data:`SEEK_MARGIN` seconds before the excerpt, so that the AAC decoder has rebuilt its overlap
state by the first sample kept, then keeps the excerpt by timestamp (``atrim`` on the original
timestamps): a 6 s excerpt costs about 70 ms of one core wherever it lies in the track. A
decoded cache of MUSDB18 would take about 30 GB (16-bit) to 60 GB (float32) of disk; to trade
that disk for speed, convert the release to the MUSDB18-HQ layout once (``musdbconvert``) and
use :class:`MusdbHQ`. Excerpts equal the same samples of a full decode exactly, except in bands
an encoder coded by perceptual noise substitution, whose decoder noise is drawn afresh at each
seek (a difference at the level of that noise).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from stemkit import MUSDB_SOURCES
from stemkit.data.musdb import (
    MIXTURE,
    SUBSETS,
    MusdbHQ,
    Track,
    _check_sources,
)
from stemkit.errors import DatasetError

#: The file name ending of a MUSDB18 track.
STEM_SUFFIX = ".stem.mp4"

#: The audio stream of each stem in a MUSDB18 ``.stem.mp4`` file.
STEM_STREAMS: dict[str, int] = {MIXTURE: 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}

#: Seconds decoded and dropped before an excerpt after a seek (the AAC decoder needs the frame
#: before the first one kept; 0.2 s is about 8 frames at 44.1 kHz).
SEEK_MARGIN = 0.2


def _layout() -> str:
    return f"expected the MUSDB18 layout <root>/<train|test>/<track name>{STEM_SUFFIX}"


def _tool(program: str, path: Path) -> str:
    found = shutil.which(program)
    if found is None:
        raise DatasetError(
            f"{path}: reading {STEM_SUFFIX} files needs the {program} program; install ffmpeg "
            "(e.g. apt-get install ffmpeg) or convert the data set to the MUSDB18-HQ layout"
        )
    return found


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


@dataclass(frozen=True)
class StemTrack(Track):
    """One ``.stem.mp4`` track, described from its container (nothing is decoded).

    Attributes:
        file: the ``.stem.mp4`` file; ``folder`` is its parent.
    """

    file: Path

    def path(self, stem: str) -> Path:
        """The file holding ``stem``: the track file itself, whatever the stem."""
        return self.file

    def stems(self) -> tuple[str, ...]:
        """The four MUSDB18 sources, which every ``.stem.mp4`` file holds as streams."""
        return tuple(s for s in MUSDB_SOURCES if s in STEM_STREAMS)

    def read(self, stem: str, start: int, frames: int) -> np.ndarray:
        """Decode ``frames`` frames of ``stem`` from frame ``start``: ``(channels, frames)``.

        Only the excerpt (and :data:`SEEK_MARGIN` seconds before it) is decoded; see the module
        docstring.

        Raises:
            DatasetError: ``stem`` has no stream, ffmpeg fails, or fewer frames came out.
        """
        if stem not in STEM_STREAMS:
            raise DatasetError(
                f"{self.file}: no stream for {stem!r}; a {STEM_SUFFIX} file holds "
                f"{', '.join(STEM_STREAMS)}"
            )
        ffmpeg = _tool("ffmpeg", self.file)
        seek = np.floor((start / self.sample_rate - SEEK_MARGIN) * 1000) / 1000
        # Seeking to (nearly) the start is left out: there the decoder must drop the encoder's
        # priming itself, which it does only when it starts from the first packet.
        where = ["-ss", f"{seek:.3f}"] if seek >= SEEK_MARGIN else []
        # -copyts keeps the container's timestamps (in samples), so atrim cuts the same samples
        # whatever point ffmpeg seeked to; the end also drops the decoder's padding.
        end = min(start + frames, self.nb_frames)
        command = [
            ffmpeg, "-v", "error", "-nostdin", *where, "-copyts", "-i", str(self.file),
            "-map", f"0:a:{STEM_STREAMS[stem]}", "-af", f"atrim=start_pts={start}:end_pts={end}",
            "-f", "f32le", "-c:a", "pcm_f32le", "-",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, check=False)
        if result.returncode != 0:
            message = _last_line(result.stderr.decode(errors="replace"))
            raise DatasetError(f"{self.file}: cannot decode stream '{stem}' ({message})")
        data = np.frombuffer(result.stdout, dtype="<f4")
        if data.size != frames * self.channels:
            raise DatasetError(
                f"{self.file}: expected {frames} frames of '{stem}' from frame {start} but "
                f"ffmpeg gave {data.size // self.channels}; the file is truncated or changed "
                "since the dataset was listed"
            )
        return np.ascontiguousarray(data.reshape(frames, self.channels).T)


def _probe_track(path: Path, sources: Sequence[str]) -> StemTrack:
    """Describe one ``.stem.mp4`` from one ffprobe call, checking its five streams."""
    command = [
        _tool("ffprobe", path), "-v", "error", "-select_streams", "a",
        "-show_entries", "stream=sample_rate,channels,duration_ts,time_base",
        "-of", "json", str(path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DatasetError(
            f"{path}: not a readable {STEM_SUFFIX} file; it may be corrupt or truncated "
            f"(ffprobe said: {_last_line(result.stderr)}); replace or remove the track"
        )
    try:
        streams = json.loads(result.stdout).get("streams") or []
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: ffprobe gave unreadable output ({err})") from err
    if len(streams) != len(STEM_STREAMS):
        raise DatasetError(
            f"{path}: holds {len(streams)} audio stream(s) but a MUSDB18 {STEM_SUFFIX} file has "
            f"{len(STEM_STREAMS)} ({', '.join(STEM_STREAMS)}); replace or remove the track"
        )
    described: list[tuple[str, int, int, int]] = []
    for stem in (MIXTURE, *sources):
        entry = streams[STEM_STREAMS[stem]]
        try:
            rate, channels = int(entry["sample_rate"]), int(entry["channels"])
            if entry.get("time_base") != f"1/{rate}":
                raise ValueError(f"time base {entry.get('time_base')} is not 1/{rate}")
            nb_frames = int(entry["duration_ts"])
        except (KeyError, ValueError) as err:
            raise DatasetError(
                f"{path}: stream {STEM_STREAMS[stem]} ('{stem}') has no usable rate, channel "
                f"count or length ({err})"
            ) from err
        if nb_frames <= 0 or rate <= 0 or channels <= 0:
            raise DatasetError(f"{path}: stream '{stem}' holds no audio; replace the track")
        described.append((stem, nb_frames, rate, channels))
    _, nb_frames, rate, channels = described[0]
    for stem, *numbers in described[1:]:
        if tuple(numbers) != (nb_frames, rate, channels):
            raise DatasetError(
                f"{path}: stream '{stem}' has (frames, rate, channels) = {tuple(numbers)} but the "
                f"mixture has {(nb_frames, rate, channels)}; all streams must agree"
            )
    name = path.name[: -len(STEM_SUFFIX)]
    return StemTrack(name, path.parent, nb_frames, rate, channels, path)


def _check_stem_sources(sources: Sequence[str]) -> None:
    _check_sources(sources)
    unknown = [source for source in sources if source not in STEM_STREAMS]
    if unknown:
        raise DatasetError(
            f"source(s) {', '.join(unknown)} are not in MUSDB18 {STEM_SUFFIX} files, which hold "
            f"{', '.join(s for s in STEM_STREAMS if s != MIXTURE)}"
        )


def list_stem_tracks(
    root: str | PathLike[str],
    subset: str,
    sources: Sequence[str] = MUSDB_SOURCES,
) -> list[StemTrack]:
    """List and check the ``.stem.mp4`` tracks of one subset of a MUSDB18 folder.

    One ffprobe call per file reads the stream headers; nothing is decoded. Files whose name
    starts with a dot are skipped.

    Args:
        root: the dataset root, holding ``train/`` and ``test/``.
        subset: ``"train"`` or ``"test"``.
        sources: the sources used; each must be one of the MUSDB18 streams.

    Returns:
        The tracks, sorted by name.

    Raises:
        DatasetError: the root or subset folder is missing or holds no ``.stem.mp4``, a file is
            unreadable, has other than five streams, or its streams disagree; the message names
            the file.
    """
    if subset not in SUBSETS:
        raise DatasetError(f"unknown subset {subset!r}; choose one of {', '.join(SUBSETS)}")
    _check_stem_sources(sources)
    root = Path(root)
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise DatasetError(f"{root}: dataset root {state}; {_layout()}")
    folder = root / subset
    if not folder.is_dir():
        raise DatasetError(f"{folder}: subset folder '{subset}' not found; {_layout()}")
    files = sorted(
        child
        for child in folder.iterdir()
        if child.is_file() and child.name.endswith(STEM_SUFFIX) and not child.name.startswith(".")
    )
    if not files:
        hint = ""
        if any((child / f"{MIXTURE}.wav").is_file() for child in folder.iterdir()):
            hint = " (it holds MUSDB18-HQ track folders: use MusdbHQ, data.format=musdb_hq)"
        raise DatasetError(
            f"{folder}: no {STEM_SUFFIX} files in subset '{subset}'{hint}; {_layout()}"
        )
    return [_probe_track(path, sources) for path in files]


class MusdbStems(MusdbHQ):
    """Stems of a MUSDB18 ``.stem.mp4`` folder, as excerpts for training or as full tracks.

    Takes the arguments of :class:`~stemkit.data.musdb.MusdbHQ` and behaves the same way: the
    same splits, the same excerpt draws for the same ``(seed, epoch, index)``, the same items
    ``(stems, name)`` with stems ``(nb_stem_sources, nb_channels, nb_samples)`` float32 (the
    ``sources``, then the track's other streams). ``sources`` must be among drums, bass, other
    and vocals. Each source of an item costs one ffmpeg
    process (about 70 ms for 6 s; see the module docstring): use DataLoader workers.
    """

    @staticmethod
    def list_tracks(root: str | PathLike[str], subset: str, sources: Sequence[str]) -> list[Track]:
        """The ``.stem.mp4`` tracks of one subset (see :func:`list_stem_tracks`)."""
        return list(list_stem_tracks(root, subset, sources))
