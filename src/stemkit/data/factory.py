"""The datasets a training run reads, chosen by its ``data`` configuration.

The trainer only needs a map-style dataset of ``(stems, name)`` items with ``set_epoch`` and
``fingerprint`` (see :class:`TrainingData`); this module picks the class that reads the
configured layout (``data.format``) and draws the configured excerpts (``data.sampler``), so
that the loop does not know about dataset formats.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from torch import Tensor

from stemkit.data.config import excerpt_seconds
from stemkit.errors import DatasetError, StemkitError

if TYPE_CHECKING:
    from stemkit.data.config import DataConfig
    from stemkit.data.musdb import MusdbHQ

#: Dataset layouts the trainer reads (``data.format``), and what each expects on disk.
FORMATS = {
    "musdb_hq": (
        "MUSDB18-HQ layout (WAV): <root>/{train,test}/<track>/{mixture,<source>}.wav, every file "
        "of a track with the same rate, channels and length; any sources, e.g. generated songs"
    ),
    "musdb_stems": (
        "MUSDB18 layout (compressed): <root>/{train,test}/<track>.stem.mp4, five AAC streams "
        "0 mixture, 1 drums, 2 bass, 3 other, 4 vocals; needs ffmpeg; sources among those four"
    ),
    "mir1k": (
        "MIR-1K layout: <root>/Wavfile/<singer>_<song>_<clip>.wav, 16 kHz stereo clips, left = "
        "accompaniment, right = vocals; sources [accompaniment, vocals] (train = abjones, amy); "
        "items resampled to data.sample_rate (default 8 kHz)"
    ),
}

#: How training excerpts are drawn (``data.sampler``).
SAMPLERS = {
    "uniform": "uniform excerpts, random mixing, gain and channel swap (Open-Unmix)",
    "sad": "excerpts from the active windows of each source (BSRNN, data.sad.*; MUSDB layouts)",
}


class TrainingData(Protocol):
    """What the trainer needs of a dataset: items ``(stems, name)`` re-drawn per epoch.

    ``stems`` is ``(nb_stem_sources, nb_channels, nb_samples)`` float32 in ``stem_sources``
    order: the configured sources (the model's targets) first, then every other stem of the
    track, so that their sum is the whole mixture whatever subset a model separates.
    """

    sample_rate: int
    stem_sources: tuple[str, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Tensor, str]: ...

    def set_epoch(self, epoch: int) -> None: ...

    def fingerprint(self) -> str: ...


def detect_format(root: str | Path) -> str | None:
    """The :data:`FORMATS` key whose layout ``root`` holds, or ``None`` when none matches.

    Looks only at the names in ``root/train`` and ``root/test``: a ``.stem.mp4`` file means
    ``"musdb_stems"``, a track folder with ``mixture.wav`` means ``"musdb_hq"``; a MIR-1K clip
    folder (``Wavfile/``) means ``"mir1k"``.
    """
    from stemkit.data.mir1k import CLIP_FOLDERS
    from stemkit.data.musdb import MIXTURE, SUBSETS
    from stemkit.data.stems_mp4 import STEM_SUFFIX

    if any((Path(root) / name).is_dir() for name in CLIP_FOLDERS):
        return "mir1k"
    for subset in SUBSETS:
        folder = Path(root) / subset
        if not folder.is_dir():
            continue
        for child in folder.iterdir():
            if child.is_file() and child.name.endswith(STEM_SUFFIX):
                return "musdb_stems"
            if (child / f"{MIXTURE}.wav").is_file():
                return "musdb_hq"
    return None


def _check_format(data: DataConfig) -> None:
    if data.format not in FORMATS:
        raise StemkitError(
            f"data.format={data.format!r}: choose one of {', '.join(FORMATS)} (for {data.root})"
        )


def _check_root(data: DataConfig) -> None:
    """Refuse a missing root, or one in another layout, before any track is listed."""
    root = Path(data.root)
    expected = f"data.format={data.format} expects the {FORMATS[data.format]}"
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise DatasetError(f"{root}: data.root {state}; {expected}")
    found = detect_format(root)
    if found is None:
        # A track folder or file handed as the root itself is the usual mistake.
        parent = detect_format(root.parent) if root.name in ("train", "test") else None
        hint = f" (it looks like a subset folder: set data.root={root.parent})" if parent else ""
        raise DatasetError(
            f"{root}: data.root holds no train/ or test/ tracks in a known layout{hint}; {expected}"
        )
    if found != data.format:
        raise DatasetError(
            f"{root}: data.root holds the {FORMATS[found].split(':')[0]}, but "
            f"data.format={data.format}; set data.format={found}"
        )


def _dataset_class(data: DataConfig) -> type[MusdbHQ]:
    if data.format == "musdb_stems":
        from stemkit.data.stems_mp4 import MusdbStems

        return MusdbStems
    from stemkit.data.musdb import MusdbHQ

    return MusdbHQ


def training_dataset(data: DataConfig, seed: int) -> TrainingData:
    """The augmented training excerpts of ``data``, seeded by ``seed``.

    ``data.sampler="uniform"`` gives :class:`~stemkit.data.musdb.MusdbHQ` (or
    :class:`~stemkit.data.stems_mp4.MusdbStems` for ``data.format="musdb_stems"``);
    ``"sad"`` gives :class:`~stemkit.data.sad.SadDataset`, building (or reusing, with
    ``data.sad.index``) the index of active windows first.

    Raises:
        StemkitError: an unknown ``data.format`` or ``data.sampler``, or malformed options
            (the message names the key).
        DatasetError: the root is missing or does not hold the expected layout.
    """
    _check_format(data)
    if data.sampler not in SAMPLERS:
        raise StemkitError(f"data.sampler={data.sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if data.sampler == "sad":
        if data.format not in ("musdb_hq", "musdb_stems"):
            raise StemkitError(
                f"data.sampler=sad reads the MUSDB18(-HQ) layouts, not data.format={data.format}; "
                "set data.sampler=uniform"
            )
        _check_root(data)
        return _sad_dataset(data, seed)
    if len(data.gain) != 2:
        raise StemkitError(f"data.gain must be [low, high], got {data.gain}")
    _check_root(data)
    if data.format == "mir1k":
        # MIR-1K clips are mono voice and accompaniment: no gain or channel augmentation.
        from stemkit.data.mir1k import MODEL_RATE, Mir1k

        return Mir1k(
            data.root,
            split="train",
            sources=data.sources,
            sample_rate=data.sample_rate or MODEL_RATE,
            segment=excerpt_seconds(data),
            samples_per_track=data.samples_per_track,
            random_mix=data.random_mix,
            seed=seed,
            valid_fraction=data.valid_fraction,
            by_length=data.by_length,
        )
    return _dataset_class(data)(
        data.root,
        split="train",
        sources=data.sources,
        segment=excerpt_seconds(data),
        samples_per_track=data.samples_per_track,
        random_mix=data.random_mix,
        gain=(data.gain[0], data.gain[1]),
        channel_swap=data.channel_swap,
        seed=seed,
        valid_fraction=data.valid_fraction,
        by_length=data.by_length,
    )


def _sad_dataset(data: DataConfig, seed: int) -> TrainingData:
    from stemkit.data.musdb import load_split, with_other_sources
    from stemkit.data.sad import (
        SILENCE_MODES,
        SadDataset,
        SadParams,
        build_sad_index,
        load_or_build_sad_index,
    )

    sad = data.sad
    try:
        params = SadParams(
            sad.window, sad.hop, sad.nb_chunks, sad.quantile, sad.floor, sad.min_fraction
        )
    except ValueError as err:
        raise StemkitError(f"data.sad: {err}") from err
    if sad.silence not in SILENCE_MODES:
        raise StemkitError(
            f"data.sad.silence={sad.silence!r}: choose one of {', '.join(SILENCE_MODES)}"
        )
    if sad.items is not None and sad.items < 1:
        raise StemkitError(f"data.sad.items={sad.items}: must be at least 1, or null")
    lister = _dataset_class(data).list_tracks
    tracks = load_split(data.root, "train", data.sources, data.valid_fraction, lister=lister)
    # Every stem of the tracks, not only the targets: the mixture is the sum of all of them.
    sources = with_other_sources(data.sources, tracks)
    if sources != tuple(data.sources):
        tracks = load_split(data.root, "train", sources, data.valid_fraction, lister=lister)
    if sad.index is None:
        index = build_sad_index(tracks, sources, params, progress=True)
    else:
        index = load_or_build_sad_index(sad.index, tracks, sources, params, progress=True)
    nb_items = sad.items if sad.items is not None else data.samples_per_track * len(tracks)
    return SadDataset(
        index,
        segment=excerpt_seconds(data),
        nb_items=nb_items,
        gain_db=sad.gain_db,
        silence_p=sad.silence_p,
        silence=sad.silence,
        nb_targets=len(data.sources),
        normalize=sad.normalize,
        seed=seed,
    )


def full_tracks(data: DataConfig, split: str, seed: int) -> TrainingData:
    """Whole, unaugmented tracks of ``split`` (validation, input statistics, testing).

    Raises:
        StemkitError: an unknown ``data.format``.
        DatasetError: the root is missing or does not hold the expected layout.
    """
    _check_format(data)
    _check_root(data)
    if data.format == "mir1k":
        from stemkit.data.mir1k import MODEL_RATE, Mir1k

        return Mir1k(
            data.root,
            split=split,
            sources=data.sources,
            sample_rate=data.sample_rate or MODEL_RATE,
            segment=None,
            seed=seed,
            valid_fraction=data.valid_fraction,
        )
    return _dataset_class(data)(
        data.root,
        split=split,
        sources=data.sources,
        segment=None,
        seed=seed,
        valid_fraction=data.valid_fraction,
    )
