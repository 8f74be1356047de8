"""MIR-1K: the singing-voice clips and the singer-based protocol split.

The layout read here is the one MIR-1K ships in::

    <root>/Wavfile/<singer>_<song>_<clip>.wav      1000 clips, 16 kHz, stereo
    <root>/UndividedWavfile/<singer>_<song>.wav    the whole songs (not read here)

(``Wavs/`` is accepted in place of ``Wavfile/``.) The left channel is the accompaniment, the
right channel the singing voice. The protocol of the literature (Huang et al. 2014; SH-Net,
spec-notes §6, §7.3): train on the clips of the singers ``abjones`` and ``amy``, test on all
the others; the mixture is the average of the two channels; scores are GNSDR, GSIR and GSAR,
the clip-length-weighted means of the ``bss_eval_sources`` NSDR, SIR and SAR
(:mod:`stemkit.evaluation.mir1k`). :mod:`stemkit.data.mir1k_writer` writes this layout from
MUSDB-layout songs.

The stems of an item are **half** of each channel, so that they sum to the channel average,
which is the protocol's mixture (the trainer forms the mixture as the sum of the stems). The
``bss_eval_sources`` scores do not depend on that scale. Items are mono, resampled with soxr to
the model's rate (8 kHz for SH-Net). The protocol has no validation split; ``"valid"`` holds out
whole songs of the training singers (``valid_fraction``), which ``"train"`` then leaves out.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor
from torch.utils.data import Dataset

from stemkit.audio.convert import resample
from stemkit.data.sampling import EpochAware, item_generator
from stemkit.errors import DatasetError

__all__ = [
    "CLIP_FOLDERS",
    "MIR1K_CHANNELS",
    "MIR1K_RATE",
    "MIR1K_SOURCES",
    "TRAIN_SINGERS",
    "Clip",
    "Mir1k",
    "check_sources",
    "list_clips",
    "read_clip",
    "split_clips",
]

#: Native rate of the MIR-1K clips, in Hz.
MIR1K_RATE = 16000
#: Singers whose clips form the training set of the protocol.
TRAIN_SINGERS: frozenset[str] = frozenset({"abjones", "amy"})
#: Folders that may hold the clips, in the order they are looked for.
CLIP_FOLDERS: tuple[str, ...] = ("Wavfile", "Wavs")
#: Channel of each source in a clip file.
MIR1K_CHANNELS: dict[str, int] = {"accompaniment": 0, "vocals": 1}
#: The sources, in the default item order (voice first).
MIR1K_SOURCES: tuple[str, ...] = ("vocals", "accompaniment")
#: Splits a :class:`Mir1k` dataset can be built on.
SPLITS: tuple[str, ...] = ("train", "valid", "test")
#: Rate of the models of the protocol (SH-Net), the default rate of the items.
MODEL_RATE = 8000

_LAYOUT = (
    "expected the MIR-1K layout <root>/Wavfile/<singer>_<song>_<clip>.wav "
    "(16 kHz stereo: left = accompaniment, right = voice)"
)


@dataclass(frozen=True)
class Clip:
    """One clip file, described from its header (nothing is decoded).

    Attributes:
        name: the file name without extension, e.g. ``"abjones_1_01"``.
        path: the WAV file.
        singer: the part of the name before the first underscore.
        song: the singer and song, e.g. ``"abjones_1"``: clips of one song share it.
        nb_frames: length in samples at the native rate.
        sample_rate: native rate in Hz.
    """

    name: str
    path: Path
    singer: str
    song: str
    nb_frames: int
    sample_rate: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.nb_frames / self.sample_rate


def _clip_folder(root: Path) -> Path:
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise DatasetError(f"{root}: MIR-1K root {state}; {_LAYOUT}")
    for name in CLIP_FOLDERS:
        if (root / name).is_dir():
            return root / name
    hint = ""
    if any(root.glob("*_*_*.wav")):
        hint = " (this folder holds clips itself: pass its parent as the root)"
    raise DatasetError(
        f"{root}: no clip folder {' or '.join(f'{n}/' for n in CLIP_FOLDERS)} found{hint}; "
        f"{_LAYOUT}"
    )


def _read_header(path: Path, native_rate: int | None) -> Clip:
    parts = path.stem.split("_")
    if len(parts) < 3 or not all(parts):
        raise DatasetError(
            f"{path}: the name is not <singer>_<song>_<clip>.wav; rename it or move it out of "
            f"{path.parent}"
        )
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError) as err:
        raise DatasetError(f"{path}: cannot read this WAV file's header ({err})") from err
    if info.channels != 2:
        raise DatasetError(
            f"{path}: {info.channels} channel(s); MIR-1K clips are stereo with the "
            "accompaniment on the left and the voice on the right"
        )
    if info.frames <= 0:
        raise DatasetError(f"{path}: the file holds no audio; replace or remove the clip")
    if native_rate is not None and info.samplerate != native_rate:
        raise DatasetError(
            f"{path}: {info.samplerate} Hz but MIR-1K clips are {native_rate} Hz; restore the "
            "original files (or pass native_rate=None to accept another shared rate)"
        )
    return Clip(
        name=path.stem,
        path=path,
        singer=parts[0],
        song="_".join(parts[:-1]),
        nb_frames=int(info.frames),
        sample_rate=int(info.samplerate),
    )


def list_clips(root: str | PathLike[str], native_rate: int | None = MIR1K_RATE) -> list[Clip]:
    """List and check every clip of a MIR-1K-layout folder (file headers only).

    Args:
        root: the MIR-1K folder, holding ``Wavfile/`` (or ``Wavs/``).
        native_rate: the rate every clip must have; ``None`` accepts any rate shared by all.

    Returns:
        The clips, sorted by name.

    Raises:
        DatasetError: a missing folder, no clips, a badly named, unreadable, mono or
            wrong-rate file, or clips of different rates; the message names the file.
    """
    folder = _clip_folder(Path(root))
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav")
    if not paths:
        raise DatasetError(f"{folder}: no .wav clips; {_LAYOUT}")
    clips = [_read_header(path, native_rate) for path in paths]
    for clip in clips[1:]:
        if clip.sample_rate != clips[0].sample_rate:
            raise DatasetError(
                f"{clip.path}: {clip.sample_rate} Hz but {clips[0].path.name} has "
                f"{clips[0].sample_rate} Hz; all clips must share one rate"
            )
    return clips


def _song_key(seed: int, song: str) -> bytes:
    # A seeded hash rather than a shuffle: stable across versions and when clips are added.
    return hashlib.sha256(f"{seed}\0{song}".encode()).digest()


def split_clips(
    clips: Sequence[Clip], split: str, valid_fraction: float = 0.1, seed: int = 42
) -> list[Clip]:
    """The clips of one split of the protocol.

    ``"test"``: every clip whose singer is not in :data:`TRAIN_SINGERS`. ``"train"`` and
    ``"valid"`` partition the clips of the training singers by song:
    ``round(valid_fraction · nb_songs)`` songs (at least 1 when there are 2 or more, never all),
    drawn from ``seed``, are held out for validation. ``valid_fraction=0`` keeps every song for
    training, the exact protocol, and leaves ``"valid"`` empty (an error).

    Raises:
        DatasetError: an unknown split, a fraction outside [0, 1), or an empty split.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if not 0.0 <= valid_fraction < 1.0:
        raise DatasetError(f"valid_fraction must be in [0, 1); got {valid_fraction}")
    singers = ", ".join(sorted(TRAIN_SINGERS))
    if split == "test":
        chosen = [clip for clip in clips if clip.singer not in TRAIN_SINGERS]
        if not chosen:
            raise DatasetError(f"no test clips: every clip is by a training singer ({singers})")
        return chosen
    training = [clip for clip in clips if clip.singer in TRAIN_SINGERS]
    songs = sorted({clip.song for clip in training})
    nb_valid = 0
    if valid_fraction > 0 and len(songs) >= 2:
        nb_valid = min(len(songs) - 1, max(1, round(valid_fraction * len(songs))))
    held_out = set(sorted(songs, key=lambda song: _song_key(seed, song))[:nb_valid])
    chosen = [clip for clip in training if (clip.song in held_out) == (split == "valid")]
    if not chosen:
        raise DatasetError(
            f"no {split} clips: {len(songs)} song(s) by the training singers ({singers}) with "
            f"valid_fraction={valid_fraction}; validation needs at least 2 such songs and a "
            "positive valid_fraction"
        )
    return chosen


def check_sources(sources: Sequence[str]) -> tuple[str, ...]:
    """``sources`` as a tuple, checked against :data:`MIR1K_SOURCES`."""
    if isinstance(sources, str) or not sources:
        raise DatasetError(f"sources must be a non-empty list of names; got {sources!r}")
    unknown = [s for s in sources if s not in MIR1K_CHANNELS]
    if unknown or len(set(sources)) != len(sources):
        raise DatasetError(
            f"MIR-1K sources must be distinct names among {', '.join(MIR1K_CHANNELS)}; "
            f"got {list(sources)}"
        )
    return tuple(sources)


def read_clip(
    clip: Clip, sources: Sequence[str] = MIR1K_SOURCES, sample_rate: int | None = None
) -> Tensor:
    """Decode one clip into mono stems that sum to the protocol's mixture.

    Args:
        clip: from :func:`list_clips`.
        sources: stem order, names among ``"vocals"`` (right channel) and
            ``"accompaniment"`` (left channel).
        sample_rate: rate of the result (soxr); ``None`` keeps the native rate.

    Returns:
        ``(nb_sources, 1, nb_samples)`` float32: half of each source's channel, so that
        vocals + accompaniment is the channel average.

    Raises:
        DatasetError: the file cannot be read or changed since it was listed.
    """
    sources = check_sources(sources)
    try:
        data, rate = sf.read(str(clip.path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as err:
        raise DatasetError(f"{clip.path}: cannot read audio ({err})") from err
    if data.shape[1] != 2 or rate != clip.sample_rate:
        raise DatasetError(
            f"{clip.path}: now {data.shape[1]} channel(s) at {rate} Hz, listed as stereo at "
            f"{clip.sample_rate} Hz; it changed since the dataset was listed"
        )
    audio = torch.from_numpy(np.ascontiguousarray(data.T))
    if sample_rate is not None:
        audio = resample(audio, clip.sample_rate, sample_rate)
    return 0.5 * audio[[MIR1K_CHANNELS[s] for s in sources]].unsqueeze(1)


class Mir1k(EpochAware, Dataset[tuple[Tensor, str]]):
    """MIR-1K clips as training excerpts or as whole clips, mono, at the model's rate.

    With a ``segment``, item ``index`` is an excerpt of ``segment`` seconds of clip
    ``index // samples_per_track`` at a uniformly drawn start (with ``random_mix``, each source
    from its own drawn clip and start instead); clips shorter than the segment are zero-padded
    at the end. The draws depend on ``(seed, epoch, index)`` only (:meth:`set_epoch`). With
    ``segment=None``, item ``index`` is the whole of clip ``index``. Clips are short (4–13 s), so
    each item decodes its whole clip and resamples it before cutting, which avoids resampling
    edge effects at the excerpt boundaries.

    Args:
        root: the MIR-1K folder, holding ``Wavfile/``.
        split: ``"train"``, ``"valid"`` or ``"test"`` (see :func:`split_clips`).
        sources: the target sources, names among ``"vocals"`` and ``"accompaniment"``; the
            other one follows them in every item (:attr:`stem_sources`), so that the sum of an
            item is the clip's whole mixture whatever a model separates.
        sample_rate: rate of the items in Hz (SH-Net: 8000); ``None`` keeps 16 kHz.
        segment: excerpt length in seconds, or ``None`` for whole clips.
        samples_per_track: excerpts per clip and epoch (with a ``segment``).
        random_mix: draw voice and accompaniment from independent clips.
        seed: seed of the excerpt draws.
        valid_fraction: share of the training singers' songs held out for ``"valid"``.
        split_seed: chooses those songs, apart from ``seed``.
        native_rate: rate every clip file must have (``None``: any shared rate).
        by_length: draw each excerpt's clip in proportion to its number of valid starts, so
            that every (clip, start) of the split is equally likely (the replication study's
            sampling; clips have between 33 and 311 valid 64-frame starts), instead of
            ``samples_per_track`` excerpts from every clip. The number of items is unchanged.

    Attributes:
        clips: the clips of the split, sorted by name.
        sources: the target sources, as given.
        stem_sources: the sources of the item rows: ``sources``, then the other MIR-1K channel.
        sample_rate: rate of the items in Hz.
        segment_frames: excerpt length in samples, or ``None`` for whole clips.

    Items are ``(stems, name)``: stems ``(2, 1, nb_samples)`` float32 and the clip
    name (for a random mix, ``"vocals=<clip> | accompaniment=<clip>"``).
    """

    def __init__(
        self,
        root: str | PathLike[str],
        split: str = "train",
        sources: Sequence[str] = MIR1K_SOURCES,
        sample_rate: int | None = MODEL_RATE,
        segment: float | None = 2.016125,
        samples_per_track: int = 4,
        random_mix: bool = False,
        seed: int = 42,
        valid_fraction: float = 0.1,
        split_seed: int = 42,
        native_rate: int | None = MIR1K_RATE,
        by_length: bool = False,
    ) -> None:
        if segment is not None and not segment > 0:
            raise DatasetError(
                f"segment must be a positive number of seconds or None; got {segment}"
            )
        if samples_per_track < 1:
            raise DatasetError(f"samples_per_track must be at least 1; got {samples_per_track}")
        if seed < 0:
            raise DatasetError(f"seed must be a non-negative integer; got {seed}")
        if sample_rate is not None and (int(sample_rate) != sample_rate or sample_rate <= 0):
            raise DatasetError(f"sample_rate must be a positive integer or None; got {sample_rate}")
        self.root = Path(root)
        self.split = split
        self.sources = check_sources(sources)
        self.stem_sources = (*self.sources, *(s for s in MIR1K_CHANNELS if s not in self.sources))
        self.clips = split_clips(list_clips(root, native_rate), split, valid_fraction, split_seed)
        self.native_rate = self.clips[0].sample_rate
        self.sample_rate = int(sample_rate) if sample_rate is not None else self.native_rate
        self.segment_frames = None if segment is None else max(1, round(segment * self.sample_rate))
        self.samples_per_track = int(samples_per_track)
        self.random_mix = random_mix
        self.seed = int(seed)
        self.by_length = bool(by_length)
        self._init_epoch()

    def start_counts(self) -> list[int]:
        """Valid excerpt starts of each clip at the item rate (at least 1; whole clips: 1)."""
        if self.segment_frames is None:
            return [1] * len(self.clips)
        counts = []
        for clip in self.clips:
            frames = math.ceil(clip.nb_frames * self.sample_rate / clip.sample_rate)
            counts.append(max(1, frames - self.segment_frames + 1))
        return counts

    def __len__(self) -> int:
        if self.segment_frames is None:
            return len(self.clips)
        return self.samples_per_track * len(self.clips)

    def _read(self, clip: Clip, sources: Sequence[str]) -> Tensor:
        return read_clip(clip, sources, self.sample_rate)

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        """Item ``index``: stems ``(2, 1, nb_samples)`` float32 (:attr:`stem_sources`), a name."""
        index = operator.index(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        if self.segment_frames is None:
            clip = self.clips[index]
            return self._read(clip, self.stem_sources), clip.name
        generator = item_generator(self.seed, self.epoch, index)
        if self.by_length:
            weights = torch.tensor(self.start_counts(), dtype=torch.float64)
            own = self.clips[int(torch.multinomial(weights, 1, generator=generator))]
        else:
            own = self.clips[index // self.samples_per_track]
        if self.random_mix:
            picks = torch.randint(len(self.clips), (len(self.stem_sources),), generator=generator)
            groups = [
                (self.clips[int(p)], [s]) for p, s in zip(picks, self.stem_sources, strict=True)
            ]
        else:
            groups = [(own, list(self.stem_sources))]
        out = torch.zeros(len(self.stem_sources), 1, self.segment_frames)
        row = 0
        for clip, names in groups:
            audio = self._read(clip, names)
            frames = min(self.segment_frames, audio.shape[-1])
            start = int(torch.randint(audio.shape[-1] - frames + 1, (1,), generator=generator))
            out[row : row + len(names), :, :frames] = audio[..., start : start + frames]
            row += len(names)
        if len({clip.name for clip, _ in groups}) == 1:
            return out, groups[0][0].name
        return out, " | ".join(f"{names[0]}={clip.name}" for clip, names in groups)

    def fingerprint(self) -> str:
        """Short sha256 of the sorted (clip, nb_frames, native rate) list and the item rate."""
        items = sorted((c.name, c.nb_frames, c.sample_rate) for c in self.clips)
        payload = json.dumps({"clips": items, "sample_rate": self.sample_rate})
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        mode = (
            "whole clips"
            if self.segment_frames is None
            else f"{self.segment_frames} samples x {self.samples_per_track} per clip"
        )
        return (
            f"Mir1k(root={str(self.root)!r}, split={self.split!r}, clips={len(self.clips)}, "
            f"sources={self.sources}, {self.sample_rate} Hz, {mode}"
            f"{', by length' if self.by_length else ''})"
        )
