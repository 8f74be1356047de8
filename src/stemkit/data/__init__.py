"""Datasets, splits, sampling and augmentation for training and evaluation.

The generator of synthetic multitrack data lives in :mod:`stemkit.data.synth`.
"""

from __future__ import annotations

from stemkit.data.augment import random_channel_swap, random_gain
from stemkit.data.musdb import (
    MIXTURE,
    MUSDB_VALID_TRACKS,
    SPLITS,
    SUBSETS,
    Excerpt,
    MusdbHQ,
    Track,
    list_tracks,
    load_split,
    split_tracks,
)
from stemkit.data.sampling import derive_seed, item_generator

__all__ = [
    "MIXTURE",
    "MUSDB_VALID_TRACKS",
    "SPLITS",
    "SUBSETS",
    "Excerpt",
    "MusdbHQ",
    "Track",
    "derive_seed",
    "item_generator",
    "list_tracks",
    "load_split",
    "random_channel_swap",
    "random_gain",
    "split_tracks",
]
