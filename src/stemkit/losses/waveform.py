"""Losses on waveforms or any aligned tensors: ``estimates`` and ``targets`` of equal shape."""

from __future__ import annotations

import torch
from torch import Tensor


def _check(estimates: Tensor, targets: Tensor) -> None:
    if estimates.shape != targets.shape:
        raise ValueError(
            f"estimates {tuple(estimates.shape)} and targets {tuple(targets.shape)} differ in "
            "shape; trim or pad them to the same length first"
        )


def l1_loss(estimates: Tensor, targets: Tensor) -> Tensor:
    """Mean absolute error over all elements."""
    _check(estimates, targets)
    return (estimates - targets).abs().mean()


def mse_loss(estimates: Tensor, targets: Tensor) -> Tensor:
    """Mean squared error over all elements (on magnitudes: the Open-Unmix recipe loss)."""
    _check(estimates, targets)
    return torch.mean((estimates - targets) ** 2)
