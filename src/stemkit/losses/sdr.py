"""Losses from the signal-to-distortion family, on waveforms: uSDR, SI-SDR and weighted SDR.

Shapes: stems are ``(batch, nb_sources, nb_channels, time)``. uSDR and SI-SDR score each
``(batch, source)`` pair over its channels and samples together, as the MDX 2021 evaluator does
for uSDR; the weighted SDR scores each channel of each signal on its own (one row of ``time``
samples), as the X-UMX recipe does. Every loss is "lower is better": the negated ratio, or
``1 + wSDR``.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The epsilon of the MDX 2021 evaluator, added to numerator and denominator of uSDR.
USDR_EPS = 1e-7

#: The epsilon of the weighted SDR of the X-UMX recipe (Choi et al. 2019).
WSDR_EPS = 1e-10


def _check_pair(estimates: Tensor, references: Tensor, what: str, min_dim: int) -> None:
    if estimates.shape != references.shape:
        raise ValueError(
            f"{what}: estimates {tuple(estimates.shape)} and references "
            f"{tuple(references.shape)} differ in shape; trim or pad them to the same length first"
        )
    if estimates.dim() < min_dim:
        raise ValueError(
            f"{what} expects at least {min_dim} dimensions, e.g. (batch, nb_sources, nb_channels, "
            f"time); got shape {tuple(estimates.shape)}"
        )


def usdr_loss(estimates: Tensor, references: Tensor, eps: float = USDR_EPS) -> Tensor:
    """Negative utterance SDR (the MDX 2021 "global SDR"), averaged over batch and sources.

    Per ``(batch, source)``: ``10·log10((Σ s² + eps) / (Σ (s − ŝ)² + eps))`` with the sums over
    channels and samples; the loss is minus the mean of these values.

    Args:
        estimates: ``(batch, nb_sources, nb_channels, time)``; any shape ``(..., nb_channels,
            time)`` works, the mean running over the leading dimensions.
        references: the same shape.
        eps: added to numerator and denominator; the evaluator's 1e-7 by default.

    Returns:
        A scalar in dB (negated).

    Raises:
        ValueError: shapes differ, or fewer than 2 dimensions.
    """
    _check_pair(estimates, references, "usdr_loss", 2)
    num = (references**2).sum(dim=(-2, -1)) + eps
    den = ((references - estimates) ** 2).sum(dim=(-2, -1)) + eps
    return -(10.0 * torch.log10(num / den)).mean()


def sisdr_loss(
    estimates: Tensor, references: Tensor, eps: float = 1e-8, zero_mean: bool = True
) -> Tensor:
    """Negative scale-invariant SDR (Le Roux et al. 2019), averaged over batch and sources.

    Per ``(batch, source)``, with ``s`` the reference and ``ŝ`` the estimate flattened over
    channels and samples (so one scale serves all channels):
    ``α = ⟨ŝ, s⟩ / (‖s‖² + eps)``, target ``α·s``, noise ``ŝ − α·s`` and
    ``SI-SDR = 10·log10((‖α·s‖² + eps) / (‖ŝ − α·s‖² + eps))``.

    Args:
        estimates: ``(batch, nb_sources, nb_channels, time)``; any shape ``(..., nb_channels,
            time)`` works.
        references: the same shape.
        eps: keeps silent references and perfect estimates finite.
        zero_mean: remove each channel's mean over time first (the usual definition).

    Returns:
        A scalar in dB (negated).

    Raises:
        ValueError: shapes differ, or fewer than 2 dimensions.
    """
    _check_pair(estimates, references, "sisdr_loss", 2)
    if zero_mean:
        estimates = estimates - estimates.mean(dim=-1, keepdim=True)
        references = references - references.mean(dim=-1, keepdim=True)
    est = estimates.flatten(-2)
    ref = references.flatten(-2)
    alpha = (est * ref).sum(-1, keepdim=True) / ((ref**2).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    ratio = ((target**2).sum(-1) + eps) / ((noise**2).sum(-1) + eps)
    return -(10.0 * torch.log10(ratio)).mean()


def _broadcast_mix(mix: Tensor, like: Tensor) -> Tensor:
    # A mixture (batch, channels, time) goes with stems (batch, sources, channels, time).
    if mix.dim() == like.dim() - 1 and like.dim() >= 3:
        mix = mix.unsqueeze(-3)
    try:
        return mix.expand_as(like)
    except RuntimeError as err:
        raise ValueError(
            f"weighted_sdr: the mixture {tuple(mix.shape)} does not broadcast to the estimates "
            f"{tuple(like.shape)}; pass (batch, nb_channels, time) for stems "
            "(batch, nb_sources, nb_channels, time)"
        ) from err


def _cosine(a: Tensor, b: Tensor, eps: float) -> Tensor:
    # eps under both square roots and once more in the denominator: the recipe's arrangement,
    # which keeps all-zero rows (a silenced source, a perfect noise estimate) at 0, not NaN.
    num = (a * b).sum(-1)
    den = torch.sqrt(eps + (a * a).sum(-1)) * torch.sqrt(eps + (b * b).sum(-1))
    return num / (den + eps)


def weighted_sdr(est: Tensor, ref: Tensor, mix: Tensor, eps: float = WSDR_EPS) -> Tensor:
    """Weighted SDR (Choi et al. 2019) of every row of ``time`` samples, unreduced.

    With ``y`` the reference, ``ŷ`` the estimate, ``n = mix − y``, ``n̂ = mix − ŷ`` and
    ``α = ‖y‖² / (‖y‖² + ‖n‖² + eps)``:
    ``wSDR = −α·cos(y, ŷ) − (1 − α)·cos(n, n̂)``, in ``[−1, 1]``; −1 for a perfect estimate.

    Args:
        est: estimates ``(batch, nb_sources, nb_channels, time)`` (any shape ``(..., time)``).
        ref: references, the same shape.
        mix: the mixture the stems add up to: ``(batch, nb_channels, time)`` for stems (it is
            broadcast over sources), or any shape that broadcasts to ``est``.
        eps: the recipe's 1e-10.

    Returns:
        ``est.shape[:-1]``, e.g. ``(batch, nb_sources, nb_channels)``.

    Raises:
        ValueError: shapes differ or the mixture does not broadcast.
    """
    _check_pair(est, ref, "weighted_sdr", 1)
    mix = _broadcast_mix(mix, est)
    noise = mix - ref
    noise_est = mix - est
    ref_energy = (ref * ref).sum(-1)
    alpha = ref_energy / (ref_energy + (noise * noise).sum(-1) + eps)
    return -alpha * _cosine(ref, est, eps) - (1.0 - alpha) * _cosine(noise, noise_est, eps)


def weighted_sdr_loss(est: Tensor, ref: Tensor, mix: Tensor, eps: float = WSDR_EPS) -> Tensor:
    """The X-UMX time-domain loss: ``1 + mean(wSDR)`` over all rows (see :func:`weighted_sdr`).

    Args:
        est: estimates ``(batch, nb_sources, nb_channels, time)``.
        ref: references, the same shape.
        mix: ``(batch, nb_channels, time)``, or any shape broadcasting to ``est``.
        eps: the recipe's 1e-10.

    Returns:
        A scalar in ``[0, 2]``: 0 for a perfect estimate.
    """
    return 1.0 + weighted_sdr(est, ref, mix, eps).mean()
