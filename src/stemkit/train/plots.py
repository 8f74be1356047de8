"""Pictures of a run: the learning curve."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def learning_curve(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Plot training and validation loss per epoch to a PNG at ``path``.

    When the rows carry ``valid_usdr`` (validation monitored on uSDR), it is drawn in dB on a
    second vertical axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    lines = ax.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train")
    lines += ax.plot(epochs, [row["valid_loss"] for row in history], marker="s", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    # A log axis needs positive values; negative losses (SDR-type) keep a linear one.
    if all(row["train_loss"] > 0 and row["valid_loss"] > 0 for row in history):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    scored = [row for row in history if "valid_usdr" in row]
    if scored:
        right = ax.twinx()
        lines += right.plot(
            [row["epoch"] for row in scored],
            [row["valid_usdr"] for row in scored],
            marker="^",
            color="tab:green",
            label="validation uSDR",
        )
        right.set_ylabel("uSDR (dB)")
    ax.legend(lines, [str(line.get_label()) for line in lines], loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
