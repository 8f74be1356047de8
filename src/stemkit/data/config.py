"""Data settings of a training run: where the stems come from and how excerpts are drawn.

Part of the run configuration (:class:`stemkit.train.config.TrainConfig` holds a
:class:`DataConfig` as ``data``), kept here so that the data layer reads its own settings
without importing the training package. The detector defaults are those of
:class:`~stemkit.data.sad.SadParams`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stemkit import MUSDB_SOURCES
from stemkit.data.sad import SadParams

__all__ = ["DataConfig", "SadConfig", "excerpt_seconds"]


@dataclass
class SadConfig:
    """Source activity detection sampling (BSRNN recipe, spec-notes §4.6), for ``sampler: sad``.

    The detector settings are those of :class:`stemkit.data.sad.SadParams`; ``items`` is the
    number of excerpts per epoch (``null``: ``samples_per_track`` × the number of training
    tracks); ``silence`` chooses which sources ``silence_p`` applies to; ``index`` is a JSON
    cache of the kept windows, reused while it matches the tracks and settings (``null``: scan
    the stems at every start).
    """

    window: float = SadParams.window
    hop: float = SadParams.hop
    nb_chunks: int = SadParams.nb_chunks
    quantile: float = SadParams.quantile
    floor: float = SadParams.floor
    min_fraction: float = SadParams.min_fraction
    items: int | None = None
    gain_db: float | None = 10.0
    silence_p: float = 0.1
    #: ``"all"``: every source silenced independently with ``silence_p`` (the recipe);
    #: ``"target"``: only the item's target, one of ``data.sources`` in turn (the replication's
    #: "silent target" variant; see :class:`stemkit.data.sad.SadDataset`).
    silence: str = "all"
    normalize: bool = True
    index: str | None = None


@dataclass
class DataConfig:
    """Where the stems come from and how training excerpts are drawn.

    ``sampler`` is ``"uniform"`` (Open-Unmix: uniform excerpts, ``random_mix``, ``gain`` and
    ``channel_swap`` apply) or ``"sad"`` (BSRNN: excerpts from the active windows of each source,
    with the gains and silencing of ``sad``; MUSDB layouts: ``musdb_hq`` or ``musdb_stems``).
    """

    root: str = "data/synth"
    #: Layout of ``root``: a key of :data:`stemkit.data.factory.FORMATS`.
    format: str = "musdb_hq"
    #: Rate in Hz the items are resampled to, for formats that resample (MIR-1K: None = 8 kHz).
    sample_rate: int | None = None
    sources: list[str] = field(default_factory=lambda: list(MUSDB_SOURCES))
    segment: float = 6.0
    samples_per_track: int = 64
    random_mix: bool = True
    gain: list[float] = field(default_factory=lambda: [0.25, 1.25])
    channel_swap: bool = True
    valid_fraction: float = 0.15
    num_workers: int = 0
    sampler: str = "uniform"
    #: With the uniform sampler (MUSDB layouts and MIR-1K): draw tracks in proportion to their
    #: length, so that every excerpt start of the data set is equally likely (``false``: every
    #: track equally often).
    by_length: bool = False
    #: Batch augmentation on the loaded stems: ``"none"`` or ``"demucs"`` (Demucs v1: per-source
    #: sign flip and channel swap, a random shift of up to ``shift`` seconds, remix of each
    #: source across groups of ``remix_group`` batch items). With ``"demucs"`` the excerpts are
    #: drawn ``shift`` seconds longer than ``segment``, and the shift crops them back.
    augment: str = "none"
    shift: float = 1.0
    remix_group: int = 4
    sad: SadConfig = field(default_factory=SadConfig)


def excerpt_seconds(data: DataConfig) -> float:
    """Length of the excerpts to draw: ``segment``, plus the shift the augmentation crops."""
    return data.segment + (data.shift if data.augment == "demucs" else 0.0)
