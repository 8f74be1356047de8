"""Losses on spectrograms: magnitude MSE and the band-split "t+tf" loss.

Spectrograms follow :mod:`stemkit.dsp.stft`: ``(..., nb_channels, nb_bins, nb_frames)``, e.g.
``(batch, nb_sources, nb_channels, nb_bins, nb_frames)`` for the stems of a batch. Magnitudes
are real and non-negative; complex spectrograms are native complex tensors.
"""

from __future__ import annotations

from torch import Tensor

from stemkit.losses.waveform import l1_loss


def _check_same_shape(estimates: Tensor, targets: Tensor, what: str) -> None:
    if estimates.shape != targets.shape:
        raise ValueError(
            f"{what}: estimates {tuple(estimates.shape)} and targets {tuple(targets.shape)} "
            "differ in shape; trim or pad them to the same length first"
        )


def magnitude_mse_loss(est_mag: Tensor, ref_mag: Tensor) -> Tensor:
    """Mean squared error between magnitude spectrograms (the Open-Unmix training loss).

    Args:
        est_mag: estimated magnitudes, e.g. ``(batch, nb_sources, nb_channels, nb_bins,
            nb_frames)``; any shape, real.
        ref_mag: reference magnitudes of the same shape.

    Returns:
        A scalar: the mean over every element of ``(est_mag - ref_mag) ** 2``.

    Raises:
        ValueError: the shapes differ or a complex tensor is passed (take ``.abs()`` first).
    """
    _check_same_shape(est_mag, ref_mag, "magnitude_mse_loss")
    if est_mag.is_complex() or ref_mag.is_complex():
        raise ValueError(
            "magnitude_mse_loss compares magnitudes: pass real tensors (spec.abs()), "
            "not complex spectrograms"
        )
    return ((est_mag - ref_mag) ** 2).mean()


def complex_l1_loss(est_spec: Tensor, ref_spec: Tensor) -> Tensor:
    """L1 on the real parts plus L1 on the imaginary parts of complex spectrograms.

    Args:
        est_spec: complex ``(batch, nb_sources, nb_channels, nb_bins, nb_frames)`` (any shape).
        ref_spec: complex, the same shape.

    Returns:
        A scalar: ``mean|Re(est - ref)| + mean|Im(est - ref)|``.

    Raises:
        ValueError: the shapes differ or a spectrogram is not complex.
    """
    _check_same_shape(est_spec, ref_spec, "complex_l1_loss")
    if not (est_spec.is_complex() and ref_spec.is_complex()):
        raise ValueError(
            "complex_l1_loss needs complex spectrograms; a real (..., 2) tensor of real and "
            "imaginary parts converts with torch.view_as_complex"
        )
    diff = est_spec - ref_spec
    return diff.real.abs().mean() + diff.imag.abs().mean()


def tf_l1_loss(est_wave: Tensor, ref_wave: Tensor, est_spec: Tensor, ref_spec: Tensor) -> Tensor:
    """The BSRNN "t+tf" loss: L1 on waveforms plus L1 on real and imaginary STFT parts.

    Each of the three terms is a mean over its own elements, and the terms are added with unit
    weights, as in the band-split RNN replication. ``ref_spec`` must come from the same STFT
    (size, hop, window, centring) whose inverse turned ``est_spec`` into ``est_wave``.

    Args:
        est_wave: estimated stems ``(batch, nb_sources, nb_channels, time)``.
        ref_wave: reference stems, the same shape.
        est_spec: complex ``(batch, nb_sources, nb_channels, nb_bins, nb_frames)``.
        ref_spec: complex, the same shape as ``est_spec``.

    Returns:
        A scalar.

    Raises:
        ValueError: a shape mismatch, or a spectrogram that is not complex.
    """
    return l1_loss(est_wave, ref_wave) + complex_l1_loss(est_spec, ref_spec)
