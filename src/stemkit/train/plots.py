"""Pictures of a run: the learning curve."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def learning_curve(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Plot training and validation loss per epoch to a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train")
    ax.plot(epochs, [row["valid_loss"] for row in history], marker="s", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
