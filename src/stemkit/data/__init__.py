"""Datasets, splits, sampling and augmentation for training and evaluation.

The generator of synthetic multitrack data lives in :mod:`stemkit.data.synth`. The names below
are imported on first use, so that ``import stemkit.data.synth`` (and its worker processes) does
not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "random_channel_swap": "stemkit.data.augment",
    "random_gain": "stemkit.data.augment",
    "MIXTURE": "stemkit.data.musdb",
    "MUSDB_VALID_TRACKS": "stemkit.data.musdb",
    "SPLITS": "stemkit.data.musdb",
    "SUBSETS": "stemkit.data.musdb",
    "Excerpt": "stemkit.data.musdb",
    "MusdbHQ": "stemkit.data.musdb",
    "Track": "stemkit.data.musdb",
    "list_tracks": "stemkit.data.musdb",
    "load_split": "stemkit.data.musdb",
    "split_tracks": "stemkit.data.musdb",
    "MusdbStems": "stemkit.data.stems_mp4",
    "STEM_STREAMS": "stemkit.data.stems_mp4",
    "StemTrack": "stemkit.data.stems_mp4",
    "list_stem_tracks": "stemkit.data.stems_mp4",
    "FORMATS": "stemkit.data.factory",
    "SAMPLERS": "stemkit.data.factory",
    "detect_format": "stemkit.data.factory",
    "full_tracks": "stemkit.data.factory",
    "training_dataset": "stemkit.data.factory",
    "SadDataset": "stemkit.data.sad",
    "SadIndex": "stemkit.data.sad",
    "SadParams": "stemkit.data.sad",
    "active_windows": "stemkit.data.sad",
    "build_sad_index": "stemkit.data.sad",
    "load_or_build_sad_index": "stemkit.data.sad",
    "DemucsAugment": "stemkit.data.demucs_augment",
    "derive_seed": "stemkit.data.sampling",
    "item_generator": "stemkit.data.sampling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stemkit.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
