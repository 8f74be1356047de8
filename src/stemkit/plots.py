"""Pictures a person would rather look at than read: spectrograms of a mixture and its stems."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch


def spectrogram_grid(
    rows: Mapping[str, Mapping[str, torch.Tensor]],
    sample_rate: int,
    path: str | Path,
    *,
    n_fft: int = 2048,
    hop: int = 512,
    max_hz: float = 8000.0,
) -> Path:
    """Draw log-magnitude spectrograms in a grid and save it as a PNG.

    Args:
        rows: ``{row title: {column title: (channels, time) waveform}}``; every row has the same
            columns, e.g. ``{"true": {...}, "estimated": {...}}``.
        sample_rate: rate of every waveform, in Hz.
        path: the PNG to write.
        n_fft: STFT size; ``hop`` its hop.
        max_hz: upper frequency shown.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    row_names = list(rows)
    col_names = list(next(iter(rows.values())))
    fig, axes = plt.subplots(
        len(row_names),
        len(col_names),
        figsize=(3.2 * len(col_names), 2.4 * len(row_names)),
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    window = torch.hann_window(n_fft)
    for i, row in enumerate(row_names):
        for j, col in enumerate(col_names):
            ax = axes[i][j]
            if col not in rows[row]:
                ax.axis("off")
                continue
            mono = rows[row][col].float().mean(dim=0)
            spec = torch.stft(mono, n_fft, hop, window=window, return_complex=True).abs()
            db = 20 * np.log10(spec.numpy() + 1e-6)
            duration = mono.shape[-1] / sample_rate
            ax.imshow(
                db,
                origin="lower",
                aspect="auto",
                extent=(0.0, duration, 0.0, sample_rate / 2),
                vmin=-80,
                vmax=float(db.max()),
                cmap="magma",
            )
            ax.set_ylim(0, max_hz)
            ax.set_title(f"{col} ({row})", fontsize=9)
            if j == 0:
                ax.set_ylabel("Hz")
            if i == len(row_names) - 1:
                ax.set_xlabel("s")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
