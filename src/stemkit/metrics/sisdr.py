"""Scale-invariant SDR and the MIR-1K scores (NSDR, GNSDR).

``SI-SDR``  Le Roux et al. 2019: the estimate is compared with the best *scaled* copy of the
            reference, over the whole signal.
``NSDR``    the improvement of the BSS Eval v3 ``bss_eval_sources`` SDR of an estimate over
            that of the unprocessed mixture; ``GNSDR`` is its clip-length-weighted mean over a
            dataset (the MIR-1K singing-voice convention, spec-notes §6). The same weighting
            gives GSIR and GSAR from the ``bss_eval_sources`` SIR and SAR.

Shapes: ``(nb_sources, nb_channels, nb_samples)`` or ``(nb_sources, nb_samples)``; numpy or
torch; computed in float64.
"""

from __future__ import annotations

import numpy as np
import torch

from stemkit.metrics.bsseval import ArrayLike, bss_eval_sources


def _as_sources(x: ArrayLike, name: str) -> np.ndarray:
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    array = array.astype(np.float64)
    if array.ndim == 2:
        array = array[:, None, :]
    if array.ndim != 3 or array.shape[-1] == 0:
        raise ValueError(
            f"{name} must be shaped (nb_sources, [nb_channels,] nb_samples), got {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite samples; a score would be meaningless")
    return array


def si_sdr(references: ArrayLike, estimates: ArrayLike, *, zero_mean: bool = False) -> np.ndarray:
    """Scale-invariant SDR of each source, over the whole signal.

    The channels of a source are concatenated into one vector ``s`` (and ``ŝ``); the target
    is the projection ``α·s`` with ``α = ⟨ŝ, s⟩ / ‖s‖²``, and
    ``SI-SDR = 10·log10(‖α·s‖² / ‖α·s − ŝ‖²)``. No frames, no filters: a rescaled estimate
    scores as well as the unscaled one, a filtered one does not.

    Args:
        references: ``(nb_sources, [nb_channels,] nb_samples)``.
        estimates: same shape.
        zero_mean: subtract each channel's mean first (as some speech toolkits do).

    Returns:
        ``(nb_sources,)`` in dB; +inf for an exactly scaled copy of the reference, −inf for an
        estimate orthogonal to it.

    Raises:
        ValueError: mismatched shapes, NaN or infinite samples, or an all-zero reference.
    """
    ref = _as_sources(references, "references")
    est = _as_sources(estimates, "estimates")
    if ref.shape != est.shape:
        raise ValueError(f"references {ref.shape} and estimates {est.shape} differ in shape")
    if zero_mean:
        ref = ref - ref.mean(axis=-1, keepdims=True)
        est = est - est.mean(axis=-1, keepdims=True)
    ref = ref.reshape(ref.shape[0], -1)
    est = est.reshape(est.shape[0], -1)
    energy = np.einsum("jn,jn->j", ref, ref)
    if (energy == 0).any():
        index = int(np.flatnonzero(energy == 0)[0])
        raise ValueError(f"references[{index}] is all zeros; SI-SDR is undefined for it")
    scale = np.einsum("jn,jn->j", est, ref) / energy
    target = scale[:, None] * ref
    with np.errstate(divide="ignore"):
        return np.asarray(
            10.0 * np.log10(np.sum(target**2, axis=1) / np.sum((target - est) ** 2, axis=1))
        )


def nsdr(
    references: ArrayLike,
    estimates: ArrayLike,
    mixture: ArrayLike,
    *,
    compute_permutation: bool = True,
    filters_len: int = 512,
) -> np.ndarray:
    """Normalised SDR of each source: SDR(estimate) − SDR(mixture), MIR-1K style.

    Both SDRs are :func:`~stemkit.metrics.bsseval.bss_eval_sources` SDRs over the whole clip
    (512-tap distortion filters, estimates matched to references by the permutation with the
    best mean SIR, as mir_eval does); the mixture is scored as the estimate of every source.

    Args:
        references: ``(nb_sources, [nb_channels,] nb_samples)``, e.g. (accompaniment, voice).
        estimates: same shape.
        mixture: ``([nb_channels,] nb_samples)`` the input the estimates were separated from.
        compute_permutation: search the estimate-to-reference matching (mir_eval's default).
        filters_len: distortion filter taps.

    Returns:
        ``(nb_sources,)`` in dB, in the order of ``references``.
    """
    ref = _as_sources(references, "references")
    mix = mixture.detach().cpu().numpy() if isinstance(mixture, torch.Tensor) else mixture
    mix = _as_sources(np.asarray(mix)[None], "mixture")[0]
    if mix.shape != ref.shape[1:]:
        raise ValueError(
            f"mixture {mix.shape} does not match one reference {ref.shape[1:]} "
            "(([nb_channels,] nb_samples))"
        )
    est = _as_sources(estimates, "estimates")
    unprocessed = np.repeat(mix[None], ref.shape[0], axis=0)
    separated, baseline = (
        bss_eval_sources(
            ref, candidate, compute_permutation=compute_permutation, filters_len=filters_len
        )
        for candidate in (est, unprocessed)
    )
    return np.asarray(separated.sdr - baseline.sdr)


def gnsdr(values: ArrayLike, lengths: ArrayLike) -> np.ndarray:
    """Length-weighted mean over clips: GNSDR from NSDRs (or GSIR, GSAR from SIRs, SARs).

    Args:
        values: ``(nb_clips,)`` or ``(nb_clips, nb_sources)`` per-clip scores in dB.
        lengths: ``(nb_clips,)`` clip lengths (samples or seconds), all positive.

    Returns:
        ``()`` or ``(nb_sources,)``: ``Σ_i lengths_i · values_i / Σ_i lengths_i``.

    Raises:
        ValueError: mismatched sizes, a non-positive length, or a non-finite score (a perfect
            estimate's +inf would swamp the mean: leave that clip out or clip its score).
    """
    scores = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values)
    weights = np.asarray(lengths.detach().cpu() if isinstance(lengths, torch.Tensor) else lengths)
    scores = scores.astype(np.float64)
    weights = weights.astype(np.float64)
    if weights.ndim != 1 or scores.ndim not in (1, 2) or scores.shape[0] != weights.shape[0]:
        raise ValueError(
            f"values {scores.shape} must be (nb_clips,) or (nb_clips, nb_sources) and lengths "
            f"{weights.shape} (nb_clips,)"
        )
    if scores.shape[0] == 0:
        raise ValueError("no clips to average")
    if not (weights > 0).all():
        raise ValueError("every clip length must be positive")
    if not np.isfinite(scores).all():
        raise ValueError("values hold NaN or infinite scores; a weighted mean would be meaningless")
    return np.asarray(np.tensordot(weights, scores, axes=(0, 0)) / weights.sum())
