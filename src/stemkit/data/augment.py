"""Seeded augmentations of stacked stems, applied before the mixture is formed.

Every function takes stems shaped ``(..., nb_sources, nb_channels, nb_samples)``: one dataset item
``(nb_sources, nb_channels, nb_samples)`` or a batch ``(batch, nb_sources, nb_channels,
nb_samples)``. A draw is made per source (and per batch element), never per sample, so a source
stays one coherent signal. The functions are pure: they return a new tensor and take all their
randomness from the ``generator`` passed in, which makes an item reproducible from its seed.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_stems(stems: Tensor, what: str) -> None:
    if stems.ndim < 3:
        raise ValueError(
            f"{what} expects stems shaped (..., nb_sources, nb_channels, nb_samples); "
            f"got shape {tuple(stems.shape)}"
        )


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Uniform [0, 1) draws of ``shape``, made on the generator's device, returned on ``like``'s."""
    device = generator.device if generator is not None else like.device
    draws = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    return draws.to(device=like.device)


def random_gain(
    stems: Tensor,
    low: float = 0.25,
    high: float = 1.25,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Scale each source by its own gain drawn uniformly from ``[low, high)``.

    Args:
        stems: ``(..., nb_sources, nb_channels, nb_samples)``.
        low: smallest gain (linear, not dB), ``0 <= low <= high``.
        high: largest gain.
        generator: source of randomness; ``None`` uses torch's global generator.

    Returns:
        A new tensor of the shape and dtype of ``stems``; all channels and samples of one
        source share one gain.
    """
    _check_stems(stems, "random_gain")
    if not 0.0 <= low <= high:
        raise ValueError(f"random_gain needs 0 <= low <= high; got low={low}, high={high}")
    gains = low + (high - low) * _uniform((*stems.shape[:-2], 1, 1), generator, stems)
    return stems * gains.to(stems.dtype)


def random_channel_swap(
    stems: Tensor,
    generator: torch.Generator | None = None,
    p: float = 0.5,
) -> Tensor:
    """Reverse the channel order of each source with probability ``p``.

    For stereo this swaps left and right; mono input comes back unchanged.

    Args:
        stems: ``(..., nb_sources, nb_channels, nb_samples)``.
        generator: source of randomness; ``None`` uses torch's global generator.
        p: probability that a given source (of a given batch element) is swapped.

    Returns:
        A new tensor of the shape and dtype of ``stems``.
    """
    _check_stems(stems, "random_channel_swap")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"random_channel_swap needs 0 <= p <= 1; got p={p}")
    swap = _uniform((*stems.shape[:-2], 1, 1), generator, stems) < p
    return torch.where(swap, stems.flip(-2), stems)
