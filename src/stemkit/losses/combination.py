"""The X-UMX losses: the combination scheme and the multi-domain loss (Sawata et al. 2021).

The combination scheme scores, besides each source, every sum of a proper subset of sources:
the estimates of the subset summed against the references summed. For ``N`` sources that is
every subset of size 1 … N−1, ``2^N − 2`` terms (14 for the four MUSDB18 sources).

The multi-domain loss adds a frequency term (magnitude MSE) and ``mix_coef`` times a time term
(``1 + wSDR``), each averaged over the same terms. The averaging follows the X-UMX recipe:
the frequency term is the plain mean of one MSE per term; the time term is the mean of the
weighted SDR over every ``(batch, term, channel)`` row. Since all terms have the same shape,
both equal the mean over all terms of the per-term mean.

Shapes: magnitudes ``(batch, nb_sources, nb_channels, nb_bins, nb_frames)``, waveforms
``(batch, nb_sources, nb_channels, time)``, the mixture ``(batch, nb_channels, time)``.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from stemkit.losses.sdr import WSDR_EPS, weighted_sdr


def source_combinations(nb_sources: int) -> list[tuple[int, ...]]:
    """Every proper, non-empty subset of ``range(nb_sources)``, smallest first.

    Args:
        nb_sources: ``N >= 1``.

    Returns:
        ``2^N − 2`` sorted index tuples: the ``N`` singletons, then the pairs, … up to the
        subsets of size ``N − 1`` (empty for ``N = 1``).

    Raises:
        ValueError: ``nb_sources < 1``.
    """
    if nb_sources < 1:
        raise ValueError(f"source_combinations needs at least one source; got {nb_sources}")
    return [
        subset
        for size in range(1, nb_sources)
        for subset in itertools.combinations(range(nb_sources), size)
    ]


def _terms(nb_sources: int, combination: bool) -> list[tuple[int, ...]]:
    if combination and nb_sources > 1:
        return source_combinations(nb_sources)
    # Without the scheme (or with a single source, which has no proper subset) each source
    # is its own term.
    return [(index,) for index in range(nb_sources)]


def _subset_sums(stems: Tensor, terms: list[tuple[int, ...]]) -> Tensor:
    """``(batch, nb_sources, ...)`` → ``(batch, nb_terms, ...)``: each term's sources summed."""
    selection = torch.zeros(len(terms), stems.shape[1], dtype=stems.dtype, device=stems.device)
    for row, subset in enumerate(terms):
        selection[row, list(subset)] = 1.0
    return torch.einsum("ks,bs...->bk...", selection, stems)


def _check_stems(est: Tensor, ref: Tensor, what: str, ndim: int, layout: str) -> None:
    if est.shape != ref.shape:
        raise ValueError(
            f"{what}: estimates {tuple(est.shape)} and references {tuple(ref.shape)} differ in "
            "shape; trim or pad them to the same length first"
        )
    if est.dim() != ndim:
        raise ValueError(f"{what} expects {layout}; got shape {tuple(est.shape)}")


def combination_magnitude_mse(est_mag: Tensor, ref_mag: Tensor, combination: bool = True) -> Tensor:
    """The X-UMX frequency term: magnitude MSE averaged over the combination terms.

    For each term the estimated magnitudes of its sources are summed (magnitudes, not complex
    spectrograms, as in the recipe) and compared with the summed reference magnitudes.

    Args:
        est_mag: ``(batch, nb_sources, nb_channels, nb_bins, nb_frames)``.
        ref_mag: the same shape.
        combination: score every proper subset (see :func:`source_combinations`); ``False``
            scores the sources alone.

    Returns:
        A scalar.

    Raises:
        ValueError: shapes differ or are not 5-dimensional.
    """
    _check_stems(
        est_mag,
        ref_mag,
        "combination_magnitude_mse",
        5,
        "magnitudes (batch, nb_sources, nb_channels, nb_bins, nb_frames)",
    )
    terms = _terms(est_mag.shape[1], combination)
    # The difference of sums is the sum of differences: sum once, after subtracting.
    return (_subset_sums(est_mag - ref_mag, terms) ** 2).mean()


def combination_weighted_sdr_loss(
    est_wave: Tensor,
    ref_wave: Tensor,
    mix_wave: Tensor | None = None,
    combination: bool = True,
    eps: float = WSDR_EPS,
) -> Tensor:
    """The X-UMX time term: ``1 + wSDR`` averaged over the combination terms.

    Each term compares the summed estimates of a subset with its summed references; its noise
    is the mixture minus the subset (see :func:`~stemkit.losses.sdr.weighted_sdr`).

    Args:
        est_wave: ``(batch, nb_sources, nb_channels, time)``.
        ref_wave: the same shape.
        mix_wave: ``(batch, nb_channels, time)``; ``None`` uses the sum of the references, which
            is what the recipe uses (and what the trainer's mixture is).
        combination: score every proper subset; ``False`` scores the sources alone.
        eps: the recipe's 1e-10.

    Returns:
        A scalar in ``[0, 2]``; 0 for perfect estimates.

    Raises:
        ValueError: shapes differ or are not 4-dimensional, or the mixture does not match.
    """
    _check_stems(
        est_wave,
        ref_wave,
        "combination_weighted_sdr_loss",
        4,
        "waveforms (batch, nb_sources, nb_channels, time)",
    )
    if mix_wave is None:
        mix_wave = ref_wave.sum(dim=1)
    expected = (ref_wave.shape[0], *ref_wave.shape[2:])
    if tuple(mix_wave.shape) != expected:
        raise ValueError(
            f"combination_weighted_sdr_loss: the mixture {tuple(mix_wave.shape)} should be "
            f"(batch, nb_channels, time) = {expected}"
        )
    terms = _terms(est_wave.shape[1], combination)
    scores = weighted_sdr(
        _subset_sums(est_wave, terms), _subset_sums(ref_wave, terms), mix_wave, eps
    )
    return 1.0 + scores.mean()


def multi_domain_loss(
    est_mag: Tensor,
    ref_mag: Tensor,
    est_wave: Tensor,
    ref_wave: Tensor,
    mix_wave: Tensor | None = None,
    mix_coef: float = 10.0,
    combination: bool = True,
) -> Tensor:
    """The X-UMX multi-domain loss: frequency term + ``mix_coef`` × time term.

    ``combination_magnitude_mse(est_mag, ref_mag) + mix_coef ·
    combination_weighted_sdr_loss(est_wave, ref_wave, mix_wave)``, both over the same terms.
    The estimated waveforms are those the model makes from ``est_mag`` (X-UMX: the mixture
    phase and an inverse STFT), so that the time term trains the magnitudes too.

    Args:
        est_mag: ``(batch, nb_sources, nb_channels, nb_bins, nb_frames)``.
        ref_mag: the same shape.
        est_wave: ``(batch, nb_sources, nb_channels, time)``.
        ref_wave: the same shape.
        mix_wave: ``(batch, nb_channels, time)``, or ``None`` for the sum of the references.
        mix_coef: weight of the time term; 10 in the X-UMX recipe.
        combination: use the combination scheme (``2^N − 2`` terms) or the sources alone.

    Returns:
        A scalar.
    """
    freq = combination_magnitude_mse(est_mag, ref_mag, combination)
    time = combination_weighted_sdr_loss(est_wave, ref_wave, mix_wave, combination)
    return freq + mix_coef * time
