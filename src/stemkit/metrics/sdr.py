"""Signal-to-distortion ratios that need no distortion filters: uSDR and the v4 frame SDR.

Shapes: ``references`` and ``estimates`` are ``(nb_sources, nb_channels, nb_samples)`` arrays
(numpy or torch; computed in float64, float32 inputs upcast a piece at a time).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

#: The epsilon the MDX 2021 evaluator adds to numerator and denominator.
MDX_EPS = 1e-7

ArrayLike = np.ndarray | torch.Tensor

#: Samples per channel of one chunk of :func:`usdr`'s sums (about 2 MB of float64 for 4 stereo
#: sources). The same for any number of sources, so that a source's score never depends on the
#: others' (the summation order would).
_CHUNK_SAMPLES = 1 << 15


def _as_samples(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` as a numpy array, float32 kept (every sum below upcasts a frame or a chunk at a
    time, exactly), anything else as float64; copied only when its type changes, so that a
    broadcast view (the mixture as the estimate of every source) stays a view. A 4-minute
    4-source stereo track is 680 MB in float64, and fresh memory costs a page fault per 4 KiB."""
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    array = np.asarray(array, dtype=np.float32 if array.dtype == np.float32 else np.float64)
    if array.ndim != 3:
        raise ValueError(f"{name} must be (nb_sources, nb_channels, nb_samples), got {array.shape}")
    # a NaN or ±inf sample makes the sum non-finite (audio never overflows a float64 sum),
    # without the boolean array of np.isfinite
    if not math.isfinite(float(array.sum(dtype=np.float64))):
        raise ValueError(f"{name} holds NaN or infinite samples; a score would be meaningless")
    return array


def _check_pair(references: ArrayLike, estimates: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    ref = _as_samples(references, "references")
    est = _as_samples(estimates, "estimates")
    if ref.shape != est.shape:
        raise ValueError(
            f"references {ref.shape} and estimates {est.shape} differ in shape; "
            "pad or trim the estimates to the references first"
        )
    return ref, est


def usdr(references: ArrayLike, estimates: ArrayLike, eps: float = MDX_EPS) -> np.ndarray:
    """Utterance SDR per source, as the MDX 2021 evaluator defines it.

    ``10·log10((Σ s² + eps) / (Σ (s − ŝ)² + eps))``, the sums running over channels and samples.

    Returns:
        ``(nb_sources,)`` in dB.
    """
    ref, est = _check_pair(references, estimates)
    num = np.full(ref.shape[0], eps)
    den = np.full(ref.shape[0], eps)
    # a cache-sized span at a time: no signal-sized temporaries
    for first in range(0, ref.shape[-1], _CHUNK_SAMPLES):
        x = ref[..., first : first + _CHUNK_SAMPLES].astype(np.float64)
        error = est[..., first : first + _CHUNK_SAMPLES] - x
        for j in range(ref.shape[0]):  # source by source: the same sums whatever the others
            num[j] += np.einsum("cn,cn->", x[j], x[j])
            den[j] += np.einsum("cn,cn->", error[j], error[j])
    return np.asarray(10.0 * np.log10(num / den))


def silent_frames(references: ArrayLike, estimates: ArrayLike, window: int, hop: int) -> np.ndarray:
    """Frames museval sets to NaN: some reference or estimate is all-zero there.

    museval tests the channel sum of each signal over the frame; a frame where any of them is
    zero for every sample is NaN for every source (which is why a source's score depends on
    which other sources are evaluated with it).

    Returns:
        ``(nb_frames,)`` booleans.
    """
    ref, est = _check_pair(references, estimates)
    nb_frames = _nb_frames(ref.shape[-1], window, hop)
    silent = np.zeros(nb_frames, dtype=bool)
    for t in range(nb_frames):
        span = slice(t * hop, t * hop + window)
        for signal in (ref, est):
            mono = signal[:, :, span].sum(axis=1, dtype=np.float64)
            silent[t] |= bool((~mono.any(axis=-1)).any())
    return silent


def framewise_sdr(
    references: ArrayLike, estimates: ArrayLike, window: int = 44100, hop: int = 44100
) -> np.ndarray:
    """BSS Eval v4 SDR of each frame, without the distortion filters.

    With museval's time-invariant filters the three error terms add up to ``ŝ − s``, so the
    frame SDR is the frame SNR ``10·log10(Σ s² / Σ (ŝ − s)²)`` over both channels, whatever
    the filter length. Frames are ``window`` samples every ``hop``; a trailing partial frame is
    dropped (one frame when the signal is shorter than a window), and silent frames (see
    :func:`silent_frames`) are NaN, as in museval.

    Returns:
        ``(nb_sources, nb_frames)`` in dB.
    """
    ref, est = _check_pair(references, estimates)
    nb_frames = _nb_frames(ref.shape[-1], window, hop)
    scores = np.empty((ref.shape[0], nb_frames))
    for t in range(nb_frames):
        span = slice(t * hop, t * hop + window)
        x = ref[:, :, span].astype(np.float64)
        num = (x**2).sum(axis=(1, 2))
        den = ((est[:, :, span] - x) ** 2).sum(axis=(1, 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            scores[:, t] = 10.0 * np.log10(num / den)
    scores[~np.isfinite(scores)] = np.nan  # museval stores ±inf as NaN
    scores[:, silent_frames(ref, est, window, hop)] = np.nan
    return scores


def aggregate_csdr(per_track_frames: Sequence[np.ndarray]) -> float:
    """cSDR of one source over a dataset: median over frames, then median over tracks.

    Args:
        per_track_frames: one ``(nb_frames,)`` array of frame SDRs per track.

    Returns:
        The median of the per-track frame medians; NaN when no track has a finite frame.
    """
    medians = [
        float(np.nanmedian(f)) if np.isfinite(f).any() else math.nan for f in per_track_frames
    ]
    finite = [m for m in medians if not math.isnan(m)]
    return float(np.median(finite)) if finite else math.nan


def _nb_frames(nb_samples: int, window: int, hop: int) -> int:
    if window < nb_samples:
        return (nb_samples - window + hop) // hop
    return 1
