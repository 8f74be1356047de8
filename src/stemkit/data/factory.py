"""The datasets a training run reads, chosen by its ``data`` configuration.

The trainer only needs a map-style dataset of ``(stems, name)`` items with ``set_epoch`` and
``fingerprint`` (see :class:`TrainingData`); this module picks the class that reads the
configured layout, so that the loop does not know about dataset formats.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from torch import Tensor

from stemkit.errors import StemkitError

if TYPE_CHECKING:
    from stemkit.train.config import DataConfig

#: Dataset layouts the trainer reads, and what each expects on disk.
FORMATS = {
    "musdb_hq": "MUSDB18-HQ layout: <root>/{train,test}/<track>/{mixture,<source>}.wav",
}


class TrainingData(Protocol):
    """What the trainer needs of a dataset: items ``(stems, name)`` re-drawn per epoch.

    ``stems`` is ``(nb_sources, nb_channels, nb_samples)`` float32, in the configured source
    order.
    """

    sample_rate: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Tensor, str]: ...

    def set_epoch(self, epoch: int) -> None: ...

    def fingerprint(self) -> str: ...


def _check_format(data: DataConfig) -> None:
    if data.format not in FORMATS:
        raise StemkitError(
            f"data.format={data.format!r}: choose one of {', '.join(FORMATS)} (for {data.root})"
        )


def training_dataset(data: DataConfig, seed: int) -> TrainingData:
    """The augmented training excerpts of ``data``, seeded by ``seed``.

    Raises:
        StemkitError: an unknown ``data.format`` or malformed options.
        DatasetError: the folder does not hold the expected layout.
    """
    from stemkit.data.musdb import MusdbHQ

    _check_format(data)
    if len(data.gain) != 2:
        raise StemkitError(f"data.gain must be [low, high], got {data.gain}")
    return MusdbHQ(
        data.root,
        split="train",
        sources=data.sources,
        segment=data.segment,
        samples_per_track=data.samples_per_track,
        random_mix=data.random_mix,
        gain=(data.gain[0], data.gain[1]),
        channel_swap=data.channel_swap,
        seed=seed,
        valid_fraction=data.valid_fraction,
    )


def full_tracks(data: DataConfig, split: str, seed: int) -> TrainingData:
    """Whole, unaugmented tracks of ``split`` (validation, input statistics, testing)."""
    from stemkit.data.musdb import MusdbHQ

    _check_format(data)
    return MusdbHQ(
        data.root,
        split=split,
        sources=data.sources,
        segment=None,
        seed=seed,
        valid_fraction=data.valid_fraction,
    )
