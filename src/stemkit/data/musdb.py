"""MUSDB18-HQ: listing tracks, the train/valid/test splits, and the training dataset.

The layout read here is the one MUSDB18-HQ ships in::

    <root>/train/<track name>/{mixture,drums,bass,other,vocals}.wav   (100 tracks)
    <root>/test/<track name>/{mixture,drums,bass,other,vocals}.wav    (50 tracks)

Any folder laid out the same way works (other sources, rates or channel counts included), so a
generated data set can be written in this layout and trained on unchanged.

Training items follow the Open-Unmix recipe: fixed-length excerpts, ``samples_per_track`` of them
per track and epoch, each source taken from an independently drawn track at an independently
drawn start (random mixing), then a random gain and a random channel swap per source. An excerpt
is read by seeking in the WAV file, never by decoding the whole file. The mixture is not returned:
the trainer forms it as the sum of the (augmented) stems of a batch. Items therefore hold every
source of the track, not only those a model separates: the requested sources first (the
targets), then the track's other stems (:attr:`MusdbHQ.stem_sources`), so that a vocals-only
model still learns from the full mixture.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor
from torch.utils.data import Dataset

from stemkit import MUSDB_SOURCES
from stemkit.data.augment import random_channel_swap, random_gain
from stemkit.data.sampling import EpochAware, item_generator
from stemkit.errors import DatasetError

#: The file every track folder holds besides one file per source.
MIXTURE = "mixture"

#: The two subset folders of a MUSDB18(-HQ) root.
SUBSETS: tuple[str, ...] = ("train", "test")

#: The splits a dataset can be built on: train and valid partition the train subset.
SPLITS: tuple[str, ...] = ("train", "valid", "test")

#: The 14 tracks of the train subset that the ``musdb`` package holds out for validation.
MUSDB_VALID_TRACKS: frozenset[str] = frozenset(
    {
        "Actions - One Minute Smile",
        "Clara Berry And Wooldog - Waltz For My Victims",
        "Johnny Lokke - Promises & Lies",
        "Patrick Talbot - A Reason To Leave",
        "Triviul - Angelsaint",
        "Alexander Ross - Goodbye Bolero",
        "Fergessen - Nos Palpitants",
        "Leaf - Summerghost",
        "Skelpolu - Human Mistakes",
        "Young Griffo - Pennies",
        "ANiMAL - Rockshow",
        "James May - On The Line",
        "Meaxic - Take A Step",
        "Traffic Experiment - Sirens",
    }
)


def _layout(sources: Sequence[str]) -> str:
    stems = ",".join((MIXTURE, *sources))
    return f"expected the MUSDB18-HQ layout <root>/<train|test>/<track name>/{{{stems}}}.wav"


@dataclass(frozen=True)
class Track:
    """One track folder, described from its file headers (nothing is decoded).

    Attributes:
        name: the folder name, e.g. ``"Actions - One Minute Smile"``.
        folder: the track folder, holding ``<stem>.wav`` per stem.
        nb_frames: length in samples (per channel), shared by all its stems.
        sample_rate: rate in Hz, shared by all its stems.
        channels: channel count, shared by all its stems.
    """

    name: str
    folder: Path
    nb_frames: int
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.nb_frames / self.sample_rate

    def path(self, stem: str) -> Path:
        """The WAV file of ``stem`` (a source name or ``"mixture"``)."""
        return self.folder / f"{stem}.wav"

    def stems(self) -> tuple[str, ...]:
        """Every source this track holds a file of (the mixture excluded).

        MUSDB18's sources come first in their usual order, then any others sorted by name.
        Subclasses for containers with a fixed set of streams override this.
        """
        found = {p.stem for p in self.folder.glob("*.wav") if p.stem != MIXTURE}
        known = [s for s in MUSDB_SOURCES if s in found]
        return (*known, *sorted(found - set(known)))

    def identity(self, stems: Sequence[str]) -> dict[str, str]:
        """A cheap content identity of the files of ``stems`` (source names or ``"mixture"``).

        See :func:`file_identity`; files shared by several stems (one container) are read
        once. Two generated data sets with the same track names and lengths differ here.
        """
        seen: dict[Path, str] = {}
        out: dict[str, str] = {}
        for stem in stems:
            path = self.path(stem)
            if path not in seen:
                seen[path] = file_identity(path)
            out[stem] = seen[path]
        return out

    def read(self, stem: str, start: int, frames: int) -> np.ndarray:
        """``frames`` frames of ``stem`` from frame ``start``, by seeking: ``(channels, frames)``.

        Subclasses for other containers (see :mod:`stemkit.data.stems_mp4`) override this and
        :meth:`path`; the datasets read every excerpt through it.

        Raises:
            DatasetError: the file cannot be read or holds fewer frames than asked.
        """
        path = self.path(stem)
        try:
            data, _ = sf.read(
                str(path), start=start, frames=frames, dtype="float32", always_2d=True
            )
        except (RuntimeError, OSError) as err:
            raise DatasetError(f"{path}: cannot read audio ({err})") from err
        if data.shape[0] != frames:
            raise DatasetError(
                f"{path}: expected {frames} frames from frame {start} but the file gave "
                f"{data.shape[0]}; it changed or is truncated since the dataset was listed"
            )
        return data.T


#: Blocks, and bytes per block, that :func:`file_identity` hashes across a file.
IDENTITY_BLOCKS = 16
IDENTITY_BLOCK_BYTES = 16384


def file_identity(path: str | PathLike[str]) -> str:
    """Short sha256 of a file's size and of :data:`IDENTITY_BLOCKS` evenly spaced blocks of it.

    Reads at most 256 KiB however long the file, so that a whole data set is identified in
    about a second, yet two recordings of the same length (same size, same header) differ as
    soon as any sampled block does. Modification times are left out on purpose: a copied data
    set keeps its identity. An edit that leaves the size and every sampled block unchanged
    goes unnoticed.

    Raises:
        DatasetError: the file cannot be read.
    """
    path = Path(path)
    digest = hashlib.sha256()
    try:
        size = path.stat().st_size
        digest.update(str(size).encode())
        with open(path, "rb") as handle:
            span = max(size - IDENTITY_BLOCK_BYTES, 0)
            for block in range(IDENTITY_BLOCKS):
                handle.seek(span * block // max(IDENTITY_BLOCKS - 1, 1))
                digest.update(handle.read(IDENTITY_BLOCK_BYTES))
    except OSError as err:
        raise DatasetError(f"{path}: cannot read the file to identify it ({err})") from err
    return digest.hexdigest()[:16]


def with_other_sources(sources: Sequence[str], tracks: Sequence[Track]) -> tuple[str, ...]:
    """``sources`` followed by every other source all of ``tracks`` hold.

    The stems of an item: the targets a model separates, then the rest of each track, so that
    the mixture summed from them is the whole song (see :meth:`Track.stems`).
    """
    if not tracks:
        return tuple(sources)
    held = [set(t.stems()) for t in tracks[1:]]
    common = [s for s in tracks[0].stems() if all(s in h for h in held)]
    return (*sources, *(s for s in common if s not in sources))


@dataclass(frozen=True)
class Excerpt:
    """Where one source of a dataset item comes from.

    Attributes:
        source: the source name.
        track: the track it is read from.
        start: first frame read.
        frames: number of frames read; fewer than the segment when the track is shorter
            (the rest of the item is zeros).
    """

    source: str
    track: Track
    start: int
    frames: int


def _reject_stem_mp4(folder: Path) -> None:
    """Explain, rather than report missing folders, when handed the compressed MUSDB18 release."""
    found = sorted(folder.glob("*.stem.mp4"))
    if found:
        raise DatasetError(
            f"{folder}: holds MUSDB18 '.stem.mp4' files (e.g. '{found[0].name}'), the compressed "
            "release. This loader reads the MUSDB18-HQ WAV layout; read it with "
            "stemkit.data.MusdbStems (training: data.format=musdb_stems), or decode each track "
            "into <root>/<train|test>/<track name>/{mixture,drums,bass,other,vocals}.wav (the "
            "musdb package's `musdbconvert` does this) for faster excerpts."
        )


def _read_track(folder: Path, sources: Sequence[str]) -> Track:
    # (file, frames, rate, channels) of the mixture, which every source must match
    reference: tuple[Path, int, int, int] | None = None
    for stem in (MIXTURE, *sources):
        path = folder / f"{stem}.wav"
        if not path.is_file():
            present = sorted(p.name for p in folder.iterdir() if p.is_file())
            raise DatasetError(
                f"{path}: missing stem file '{path.name}' in track '{folder.name}' "
                f"(found: {', '.join(present) or 'no files'}); {_layout(sources)}"
            )
        try:
            info = sf.info(str(path))
        except (RuntimeError, OSError) as err:
            raise DatasetError(f"{path}: cannot read this WAV file's header ({err})") from err
        if info.frames <= 0:
            raise DatasetError(f"{path}: the file holds no audio; replace or remove the track")
        current = (path, int(info.frames), int(info.samplerate), int(info.channels))
        if reference is None:
            reference = current
            continue
        for what, position in (("sample rate", 2), ("channel count", 3), ("length in frames", 1)):
            if current[position] != reference[position]:
                raise DatasetError(
                    f"{path}: {what} is {current[position]} but {reference[0].name} of the same "
                    f"track has {reference[position]}; all stems of a track must share sample "
                    "rate, channel count and length"
                )
    assert reference is not None  # the mixture is always checked first
    _, nb_frames, sample_rate, channels = reference
    return Track(folder.name, folder, nb_frames, sample_rate, channels)


def list_tracks(
    root: str | PathLike[str],
    subset: str,
    sources: Sequence[str] = MUSDB_SOURCES,
) -> list[Track]:
    """List and check the tracks of one subset of a MUSDB18-HQ-layout folder.

    Only file headers are read. Every track folder must hold ``mixture.wav`` and one
    ``<source>.wav`` per source, all with the same sample rate, channel count and length.
    Folders whose name starts with a dot are skipped.

    Args:
        root: the dataset root, holding ``train/`` and ``test/``.
        subset: ``"train"`` or ``"test"``.
        sources: the source files every track must have.

    Returns:
        The tracks, sorted by name.

    Raises:
        DatasetError: the root or subset folder is missing or empty, a stem file is missing or
            unreadable, or the stems of a track disagree; the message names the file.
    """
    if subset not in SUBSETS:
        raise DatasetError(f"unknown subset {subset!r}; choose one of {', '.join(SUBSETS)}")
    _check_sources(sources)
    root = Path(root)
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise DatasetError(f"{root}: dataset root {state}; {_layout(sources)}")
    folder = root / subset
    if not folder.is_dir():
        _reject_stem_mp4(root)
        hint = ""
        if any((child / f"{MIXTURE}.wav").is_file() for child in root.iterdir() if child.is_dir()):
            hint = " (this folder holds track folders itself: pass its parent as the root)"
        raise DatasetError(
            f"{folder}: subset folder '{subset}' not found{hint}; {_layout(sources)}"
        )
    _reject_stem_mp4(folder)
    track_folders = sorted(
        child for child in folder.iterdir() if child.is_dir() and not child.name.startswith(".")
    )
    if not track_folders:
        raise DatasetError(f"{folder}: no track folders in subset '{subset}'; {_layout(sources)}")
    return [_read_track(track_folder, sources) for track_folder in track_folders]


def _check_sources(sources: Sequence[str]) -> None:
    if isinstance(sources, str) or not sources:
        raise DatasetError(f"sources must be a non-empty list of names; got {sources!r}")
    if len(set(sources)) != len(sources) or MIXTURE in sources:
        raise DatasetError(f"sources must be distinct and not include '{MIXTURE}'; got {sources}")


def _shuffle_key(seed: int, name: str) -> bytes:
    # Ordering by a seeded hash of the name, instead of a PRNG shuffle, keeps the split the same
    # across Python and library versions and leaves a track's side unchanged when others are added.
    return hashlib.sha256(f"{seed}\0{name}".encode()).digest()


def split_tracks(
    tracks: Sequence[Track],
    split: str,
    valid_fraction: float = 0.15,
    seed: int = 42,
) -> list[Track]:
    """Select the tracks of one split.

    ``"train"`` and ``"valid"`` partition the tracks of the train subset. When any of the 14
    official MUSDB18 validation tracks (:data:`MUSDB_VALID_TRACKS`) are among them, exactly
    those form the validation split (the ``musdb`` convention, also on the 7-second preview).
    Otherwise ``round(valid_fraction * nb_tracks)`` tracks, at least 1 when there are 2 or more
    and never all of them, are drawn deterministically from ``seed``. ``"test"`` returns all the
    given tracks, which should be those of the test subset.

    Args:
        tracks: tracks from :func:`list_tracks`.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        valid_fraction: share of tracks held out when no official validation name is present,
            in ``(0, 1)``.
        seed: chooses the held-out tracks in that case.

    Returns:
        The tracks of the split, sorted by name.

    Raises:
        DatasetError: unknown split, duplicate track names, a bad fraction, or an empty split.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    by_name = {track.name: track for track in tracks}
    if len(by_name) != len(tracks):
        raise DatasetError("two tracks share a name; track names must be unique within a split")
    names = sorted(by_name)
    if split == "test":
        return [by_name[name] for name in names]
    official = {name for name in names if name in MUSDB_VALID_TRACKS}
    if official:
        valid = official
    else:
        if not 0.0 < valid_fraction < 1.0:
            raise DatasetError(f"valid_fraction must be in (0, 1); got {valid_fraction}")
        nb_valid = 0
        if len(names) >= 2:
            nb_valid = min(len(names) - 1, max(1, round(valid_fraction * len(names))))
        valid = set(sorted(names, key=lambda name: _shuffle_key(seed, name))[:nb_valid])
    chosen = [by_name[name] for name in names if (name in valid) == (split == "valid")]
    if not chosen:
        if split == "valid":
            raise DatasetError(
                f"no validation tracks: the train subset holds {len(names)} track(s) and none of "
                "the official MUSDB18 validation names; at least 2 tracks are needed"
            )
        raise DatasetError(
            "no training tracks: every track of the train subset is an official MUSDB18 "
            "validation track; add other tracks to train on"
        )
    return chosen


#: A function listing the tracks of one subset: ``(root, subset, sources) -> tracks``.
TrackLister = Callable[[str | PathLike[str], str, Sequence[str]], list[Track]]


def load_split(
    root: str | PathLike[str],
    split: str,
    sources: Sequence[str] = MUSDB_SOURCES,
    valid_fraction: float = 0.15,
    seed: int = 42,
    lister: TrackLister | None = None,
) -> list[Track]:
    """The tracks of ``split`` (``"train"``, ``"valid"`` or ``"test"``) under ``root``.

    Lists the right subset with ``lister`` (:func:`list_tracks`, the WAV layout, by default)
    and selects with :func:`split_tracks`.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    subset = "test" if split == "test" else "train"
    tracks = (lister or list_tracks)(root, subset, sources)
    return split_tracks(tracks, split, valid_fraction, seed)


class MusdbHQ(EpochAware, Dataset[tuple[Tensor, str]]):
    """Stems of a MUSDB18-HQ-layout folder, as excerpts for training or as full tracks.

    With a ``segment``, item ``index`` is an excerpt of ``segment`` seconds: each source comes
    from its own uniformly drawn track at its own uniformly drawn start when ``random_mix``;
    otherwise all sources come from track ``index // samples_per_track`` at one shared start, so
    they sum to a real excerpt of that song. With ``by_length``, tracks are drawn (for every
    item, random mix or not) with probability proportional to their number of excerpt starts,
    so that every (track, start) pair is equally likely and long tracks are not under-sampled
    against short ones. A gain uniform in ``gain`` and a channel swap with
    probability 0.5 are then applied per source. Tracks shorter than the segment are read whole
    and zero-padded at the end. The randomness of an item derives from ``(seed, epoch, index)``
    only (see :meth:`set_epoch`), so items do not depend on DataLoader workers or order.

    With ``segment=None``, item ``index`` is the whole of track ``index``, unaugmented
    (validation and test). A full MUSDB18 track is about 10 M frames: 4 stereo float32 stems
    take about 340 MB.

    Args:
        root: the dataset root, holding ``train/`` and ``test/``.
        split: ``"train"``, ``"valid"`` or ``"test"`` (see :func:`split_tracks`).
        sources: the target sources, first in every item and in this order; each track needs
            ``<source>.wav``. The other stems every track holds follow them in the item
            (:attr:`stem_sources`), so that the sum of an item is the whole mixture.
        segment: excerpt length in seconds, or ``None`` for full tracks.
        samples_per_track: excerpts per track and epoch (with a ``segment``).
        random_mix: draw a track per source, rather than one track per item.
        gain: ``(low, high)`` bounds of the random linear gain, or ``None`` for no gain.
        channel_swap: swap the channels of each source with probability 0.5.
        seed: seed of the excerpt draws and augmentations.
        valid_fraction: share of train-subset tracks held out for ``"valid"`` when the official
            MUSDB18 validation names are absent.
        split_seed: chooses those held-out tracks; kept apart from ``seed`` so that runs with
            different seeds validate on the same tracks.
        by_length: draw tracks in proportion to their excerpt starts (uniform over all valid
            excerpts) rather than uniformly.

    Attributes:
        tracks: the tracks of the split, sorted by name.
        sources: the target sources, as given.
        stem_sources: the sources of the item rows: ``sources``, then the other stems common to
            all tracks (:func:`with_other_sources`).
        sample_rate: rate in Hz shared by all tracks.
        nb_channels: channel count shared by all tracks.
        segment_frames: excerpt length in frames, or ``None`` for full tracks.

    Items are ``(stems, name)``: stems ``(nb_stem_sources, nb_channels, nb_samples)`` float32
    in :attr:`stem_sources` order, and the track name (for a random mix,
    ``"vocals=<track> | drums=<track> | ..."``).
    """

    def __init__(
        self,
        root: str | PathLike[str],
        split: str = "train",
        sources: Sequence[str] = MUSDB_SOURCES,
        segment: float | None = 6.0,
        samples_per_track: int = 64,
        random_mix: bool = True,
        gain: tuple[float, float] | None = (0.25, 1.25),
        channel_swap: bool = True,
        seed: int = 42,
        valid_fraction: float = 0.15,
        split_seed: int = 42,
        by_length: bool = False,
    ) -> None:
        if segment is not None and not segment > 0:
            raise DatasetError(
                f"segment must be a positive number of seconds or None; got {segment}"
            )
        if samples_per_track < 1:
            raise DatasetError(f"samples_per_track must be at least 1; got {samples_per_track}")
        if gain is not None and not 0.0 <= gain[0] <= gain[1]:
            raise DatasetError(f"gain must be (low, high) with 0 <= low <= high; got {gain}")
        if seed < 0:
            raise DatasetError(f"seed must be a non-negative integer; got {seed}")
        _check_sources(sources)
        self.root = Path(root)
        self.split = split
        self.sources: tuple[str, ...] = tuple(sources)
        self.tracks = load_split(
            root, split, sources, valid_fraction, split_seed, lister=self.list_tracks
        )
        self.stem_sources = with_other_sources(sources, self.tracks)
        if self.stem_sources != self.sources:
            # Listed again with every stem, so that the other stems' headers (rate, channels,
            # length) are checked too; the split depends on the names only and is unchanged.
            self.tracks = load_split(
                root, split, self.stem_sources, valid_fraction, split_seed, self.list_tracks
            )
        first = self.tracks[0]
        for track in self.tracks[1:]:
            if (track.sample_rate, track.channels) != (first.sample_rate, first.channels):
                raise DatasetError(
                    f"{track.path(MIXTURE)}: {track.sample_rate} Hz, {track.channels} channel(s), "
                    f"but '{first.name}' has {first.sample_rate} Hz, {first.channels} channel(s); "
                    "all tracks of a split must share rate and channel count (resample them)"
                )
        self.sample_rate = first.sample_rate
        self.nb_channels = first.channels
        self.segment_frames = None if segment is None else max(1, round(segment * self.sample_rate))
        self.samples_per_track = int(samples_per_track)
        self.random_mix = random_mix
        self.gain = None if gain is None else (float(gain[0]), float(gain[1]))
        self.channel_swap = channel_swap
        self.seed = int(seed)
        self.by_length = by_length
        # Weight of each track when drawing by length: its number of excerpt starts.
        frames = self.segment_frames or 1
        self._start_counts = torch.tensor(
            [max(t.nb_frames - frames, 0) + 1 for t in self.tracks], dtype=torch.float64
        )
        self._init_epoch()

    @staticmethod
    def list_tracks(root: str | PathLike[str], subset: str, sources: Sequence[str]) -> list[Track]:
        """The tracks of one subset; subclasses reading another layout override this."""
        return list_tracks(root, subset, sources)

    def __len__(self) -> int:
        if self.segment_frames is None:
            return len(self.tracks)
        return self.samples_per_track * len(self.tracks)

    def _check_index(self, index: int) -> int:
        index = operator.index(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        return index

    def _plan(self, index: int) -> tuple[list[Excerpt], torch.Generator | None]:
        index = self._check_index(index)
        if self.segment_frames is None:
            track = self.tracks[index]
            return [Excerpt(s, track, 0, track.nb_frames) for s in self.stem_sources], None
        generator = item_generator(self.seed, self.epoch, index)
        nb_sources = len(self.stem_sources)
        if self.by_length:
            draws = nb_sources if self.random_mix else 1
            drawn = torch.multinomial(self._start_counts, draws, True, generator=generator)
            picks = drawn.tolist() if self.random_mix else drawn.tolist() * nb_sources
        elif self.random_mix:
            picks = torch.randint(len(self.tracks), (nb_sources,), generator=generator).tolist()
        else:
            picks = [index // self.samples_per_track] * nb_sources
        excerpts: list[Excerpt] = []
        start = 0
        for source, pick in zip(self.stem_sources, picks, strict=True):
            track = self.tracks[pick]
            frames = min(self.segment_frames, track.nb_frames)
            if self.random_mix or not excerpts:
                start = int(torch.randint(track.nb_frames - frames + 1, (1,), generator=generator))
            excerpts.append(Excerpt(source, track, start, frames))
        return excerpts, generator

    def excerpts(self, index: int) -> list[Excerpt]:
        """Where each source of item ``index`` (at the current epoch) is read from."""
        return self._plan(index)[0]

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        """Item ``index``: stems ``(nb_stem_sources, nb_channels, nb_samples)`` float32, a name."""
        excerpts, generator = self._plan(index)
        nb_samples = self.segment_frames or excerpts[0].track.nb_frames
        stems = np.zeros((len(excerpts), self.nb_channels, nb_samples), dtype=np.float32)
        for row, excerpt in zip(stems, excerpts, strict=True):
            row[:, : excerpt.frames] = _read_excerpt(excerpt)
        out = torch.from_numpy(stems)
        if generator is not None:
            if self.gain is not None:
                out = random_gain(out, *self.gain, generator=generator)
            if self.channel_swap:
                out = random_channel_swap(out, generator=generator)
        names = {excerpt.track.name for excerpt in excerpts}
        if len(names) == 1:
            name = excerpts[0].track.name
        else:
            name = " | ".join(f"{e.source}={e.track.name}" for e in excerpts)
        return out, name

    def fingerprint(self) -> str:
        """Short sha256 of the sorted (track name, nb_frames, sample_rate) list, for provenance."""
        items = sorted((t.name, t.nb_frames, t.sample_rate) for t in self.tracks)
        return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        mode = (
            "full tracks"
            if self.segment_frames is None
            else f"{self.segment_frames} frames x {self.samples_per_track} per track"
        )
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"tracks={len(self.tracks)}, sources={self.sources}, {mode})"
        )


def _read_excerpt(excerpt: Excerpt) -> np.ndarray:
    """Read ``excerpt.frames`` frames from ``excerpt.start``: ``(channels, frames)``."""
    return excerpt.track.read(excerpt.source, excerpt.start, excerpt.frames)
