"""Per-track scores in museval's JSON layout, and their aggregation.

The layout is the one museval's ``TrackStore`` writes, so museval's own tools read our files::

    {"museval_version": "...", "targets": [
        {"name": "vocals", "frames": [
            {"time": 0.0, "duration": 1.0, "metrics": {"SDR": 3.1, "SIR": NaN, ...}}, ...]}]}

Values are rounded to 5 decimals and NaN is written as the bare token ``NaN``, as museval
does. stemkit adds a ``stemkit`` object beside ``targets`` holding whole-track numbers
(``uSDR`` per target); museval ignores keys it does not know.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: The museval version whose layout we follow.
MUSEVAL_LAYOUT_VERSION = "0.4.1"

METRICS = ("SDR", "SIR", "SAR", "ISR")


def _round(value: float) -> float:
    return math.nan if not math.isfinite(value) else round(float(value), 5)


def track_document(
    frames: Mapping[str, Mapping[str, np.ndarray]],
    *,
    window: float = 1.0,
    hop: float = 1.0,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the JSON document of one track.

    Args:
        frames: ``{target: {metric: (nb_frames,) array}}``; metrics not given are NaN.
        window: frame length, in seconds (the unit museval uses in ``eval_mus_track``).
        hop: frame hop, in seconds.
        extra: whole-track numbers to keep under the ``stemkit`` key.
    """
    targets = []
    for name, metrics in frames.items():
        nb_frames = len(next(iter(metrics.values())))
        rows = []
        for t in range(nb_frames):
            values = {m: _round(metrics[m][t]) if m in metrics else math.nan for m in METRICS}
            rows.append({"time": t * hop, "duration": window, "metrics": values})
        targets.append({"name": name, "frames": rows})
    document: dict[str, Any] = {"museval_version": MUSEVAL_LAYOUT_VERSION, "targets": targets}
    if extra:
        document["stemkit"] = dict(extra)
    return document


def write_json(path: str | os.PathLike[str], document: Mapping[str, Any]) -> Path:
    """Write ``document`` atomically; NaN is written as the bare token, as museval does."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=2, allow_nan=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a per-track document (ours or museval's; the ``NaN`` token is accepted)."""
    with open(path) as handle:
        document: dict[str, Any] = json.load(handle)
    return document


def frame_medians(document: Mapping[str, Any], metric: str = "SDR") -> dict[str, float]:
    """Median over frames of ``metric`` per target, skipping NaN (museval's track aggregate)."""
    medians = {}
    for target in document["targets"]:
        values = np.array([f["metrics"][metric] for f in target["frames"]], dtype=np.float64)
        medians[target["name"]] = (
            float(np.nanmedian(values)) if np.isfinite(values).any() else math.nan
        )
    return medians
