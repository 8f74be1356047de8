"""The overlap-add strategies at inference, as a grid: segment length × overlap × window.

The BSRNN replication found that how a song is cut into chunks and joined again moves the
vocals score by up to about 0.3 dB (published-tables.md §1). :func:`overlap_add_grid` scores one
trained model with every combination through :func:`stemkit.evaluation.evaluate` and
:func:`overlap_add_table` prints the scores side by side.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stemkit.inference import WINDOWS
from stemkit.models.base import SeparationModel

__all__ = ["overlap_add_grid", "overlap_add_table"]


def overlap_add_grid(
    model: SeparationModel,
    root: str | Path,
    subset: str = "test",
    *,
    segments: Sequence[float] = (6.0, 10.0),
    overlaps: Sequence[float] = (0.1, 0.25, 0.5),
    windows: Sequence[str] = WINDOWS,
    out_dir: str | Path | None = None,
    device: str = "cpu",
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Score ``model`` on ``root/subset`` with every (segment, overlap, window).

    Args:
        model: a trained separation model.
        root: a MUSDB18-HQ-layout folder.
        subset: the split scored.
        segments: chunk lengths in seconds.
        overlaps: overlap fractions, each in [0, 0.5].
        windows: cross-fades (:data:`stemkit.inference.WINDOWS`).
        out_dir: where each combination's scores go (``<window>-<segment>-<overlap>/``), so
            that an interrupted grid resumes; ``None`` keeps them in memory.
        device: where the model runs.
        limit: score only the first tracks.

    Returns:
        One row per combination: ``window``, ``segment``, ``overlap``, then the cSDR of each
        source and ``average`` (dB).
    """
    from stemkit.evaluation import evaluate

    rows = []
    for window, segment, overlap in itertools.product(windows, segments, overlaps):
        folder = None if out_dir is None else Path(out_dir) / f"{window}-{segment:g}-{overlap:g}"
        report = evaluate(
            model,
            root,
            subset,
            method=f"{window} {segment:g} s {overlap:g}",
            segment=segment,
            overlap=overlap,
            window=window,
            device=device,
            out_dir=folder,
            limit=limit,
        )
        summary = report.summary()["sources"]
        row: dict[str, Any] = {"window": window, "segment": segment, "overlap": overlap}
        row.update({source: scores["cSDR"] for source, scores in summary.items()})
        rows.append(row)
    return rows


def overlap_add_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of :func:`overlap_add_grid` rows (cSDR in dB)."""
    sources = [key for key in rows[0] if key not in ("window", "segment", "overlap")]
    header = ["Window", "Segment (s)", "Overlap", *(s.capitalize() for s in sources)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for row in rows:
        cells = [row["window"], f"{row['segment']:g}", f"{row['overlap']:g}"]
        cells += [f"{row[s]:.2f}" for s in sources]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
