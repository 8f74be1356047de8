"""BSS Eval v4 (museval's ``evaluate(..., mode="v4")``), BSS Eval v3 ``bss_eval_sources``, and
the MIR-1K global scores built on the latter (GNSDR, GSIR, GSAR: :func:`global_scores`).

Both decompose each estimate into the reference it should match, spatial (filtering) distortion,
interference and artifacts, using least-squares *distortion filters* of ``filters_len`` taps:
each estimate channel is projected on the space spanned by delayed versions (0 … filters_len − 1
samples) of every reference channel (``P_all``), and of the channels of its own reference only
(``P_j``). The filters are estimated once on the whole signal (v4 "time-invariant" filters);
the metrics are then computed frame by frame on the decomposition of each frame.

The numbers are museval's (and, for :func:`bss_eval_sources`, mir_eval's); the computation is
restructured so that it costs a small fraction of theirs and runs batched in torch (CPU or GPU):

* the signals are cut into blocks (the frames themselves when frames tile the signal), a
  chunk at a time laid out block-major and zero-padded to the FFT size in reused buffers, and
  transformed once; summing the blocks' cross-spectra (one batched matrix product per
  frequency) and adding back the few products that straddle block boundaries gives every
  auto- and cross-correlation the normal equations need, at lags below ``filters_len``;
* the Gram matrix of the delayed references is block Toeplitz: one factorisation by the
  generalised Schur algorithm (``O(L²P³)`` instead of ``O(L³P³)``), checked and refined
  against the exact matrix, serves all estimates (museval solves one dense system per
  estimate); a dense Cholesky factorisation (float64), then LAPACK's LU, take over when the
  matrix is too close to singular for it. The projection on a single source uses the Gram's
  diagonal block, factorised once per source, for all its estimates;
* each frame's projections are products of the frame's spectra (zero-padded by
  ``filters_len − 1``, as museval pads it) with the filters' frequency responses, and every
  energy of the decomposition comes from per-frame Gram matrices of those spectra (Parseval):
  no inverse FFT, no loop over frames (chunks of frames and frequency slices only bound
  memory);
* when frames tile the signal (hop = window, museval's default, one estimate per reference)
  there is a single pass instead: short overlap-save FFTs give each frame's *local*
  correlations at lags below ``filters_len``; summed (with the terms straddling frame
  boundaries) they are the whole-signal correlations the filters need, and every energy of a
  frame is a quadratic or bilinear form of the filters in them. Nothing the size of the
  signal's spectra is stored, and the spectra are taken once (:func:`_decompose_tiled`);
  where the forms' rounding bound is too loose (ill-conditioned references), the two passes
  above take over. float32 samples are upcast a piece at a time, never copied whole.

Shapes: signals are ``(nb_sources, nb_channels, nb_samples)`` (museval uses
``(nb_sources, nb_samples, nb_channels)``); results are ``(nb_sources, nb_frames)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = np.ndarray | torch.Tensor

#: Largest number of sources :func:`bss_eval_sources` searches all permutations of.
MAX_PERMUTED_SOURCES = 8

#: Largest normwise backward error accepted from the block Toeplitz solver (a dense Cholesky
#: solve reaches about 1e-17 on these matrices; beyond this, it is used instead).
_BACKWARD_ERROR = 2e-16

#: museval's Tikhonov term: float64 machine epsilon added to the Gram matrix's diagonal.
GRAM_EPS = float(np.finfo(np.float64).eps)

# Memory budgets (bytes): spectra of one chunk of blocks; block spectra kept between the two
# passes (beyond it they are computed twice); one frequency slice (meant to stay in cache); the
# zero-padded blocks of one FFT call; one chunk of frames of the time-domain energies and of
# the input checks (in cache, likewise).
_CHUNK_BYTES = 1 << 28
_CACHE_BYTES = 1 << 31
_SLICE_BYTES = 1 << 22
_FFT_BYTES = 1 << 25
_TIME_CHUNK_BYTES = 1 << 21

#: Sub-block FFT size the frame-local correlations aim at (:func:`_frame_correlations`), and
#: the budget of one chunk of their sub-blocks: 2048 points (about 1500 new samples each) and
#: 8 MB chunks were the fastest of 1024–8192 points and 4–64 MB (here, one thread: 0.33 s against
#: 0.42 s for 4096 points and 32 MB, on 60 s of 4 stereo sources). Shorter FFTs redo more of
#: the ``filters_len − 1`` samples of overlap; longer ones make the inverse FFTs (one per pair
#: and frame) longer and the buffers spill out of cache.
_SUB_FFT = 2048
_FRAME_FFT_BYTES = 1 << 23

#: FFTs and stacked small products on the CPU run in numpy (faster there, see
#: :func:`_rfft_into`, :func:`_matmul_into`); False runs torch's everywhere, as on a GPU.
_NUMPY_ON_CPU = True

#: Frames that tile the signal take the one-pass path (:func:`_decompose_tiled`); the two-pass
#: path is kept for overlapping frames and permutations (and to check one against the other).
_TILED = True

#: Bound of the rounding error of the one-pass path's forms, relative to the sum of the
#: magnitudes of their terms (FFT correlations, about 1e-15, and sums of up to ~3e5 products
#: in float64, at most 3e5 · 1.1e-16 in the worst case).
_FORM_ROUNDING = 1e-11

#: Largest relative error of an energy accepted from the one-pass path (4e-4 dB); beyond it,
#: the frames are decomposed by filtering their spectra (the two-pass path).
_FORM_RELATIVE_ERROR = 1e-4


@dataclass(frozen=True)
class BssEvalResult:
    """Frame-wise BSS Eval v4 (images) metrics, in dB.

    Attributes:
        sdr: ``(nb_sources, nb_frames)`` source-to-distortion ratio.
        isr: ``(nb_sources, nb_frames)`` source-image-to-spatial-distortion ratio.
        sir: ``(nb_sources, nb_frames)`` source-to-interference ratio.
        sar: ``(nb_sources, nb_frames)`` source-to-artifacts ratio.
    """

    sdr: np.ndarray
    isr: np.ndarray
    sir: np.ndarray
    sar: np.ndarray

    @property
    def nb_frames(self) -> int:
        """Number of frames (the trailing partial window is dropped)."""
        return int(self.sdr.shape[1])


@dataclass(frozen=True)
class BssEvalSourcesResult:
    """Whole-signal ``bss_eval_sources`` metrics (BSS Eval v3 "sources" variant), in dB.

    Attributes:
        sdr: ``(nb_sources,)`` SDR of the estimate matched to each reference.
        sir: ``(nb_sources,)`` SIR, same matching.
        sar: ``(nb_sources,)`` SAR, same matching.
        perm: ``(nb_sources,)`` integers; ``perm[j]`` is the estimate matched to reference
            ``j`` (the permutation with the largest mean SIR; the identity when permutations
            are not searched).
    """

    sdr: np.ndarray
    sir: np.ndarray
    sar: np.ndarray
    perm: np.ndarray


def bss_eval_v4(
    references: ArrayLike,
    estimates: ArrayLike,
    *,
    window: int = 44100,
    hop: int = 44100,
    filters_len: int = 512,
    padding: bool = True,
    device: str | torch.device | None = None,
) -> BssEvalResult:
    """BSS Eval v4 frame metrics, numerically museval's ``evaluate(..., mode="v4")``.

    The "images" variant with time-invariant distortion filters: filters of ``filters_len``
    taps are estimated once on the whole signal; each frame of ``window`` samples taken every
    ``hop`` samples is then decomposed (as museval does, by filtering that frame of the
    references, zero-padded by ``filters_len − 1``) and scored:

    * ``SDR = 10·log10(‖s‖² / ‖ŝ − s‖²)`` (the frame SNR, whatever the filters),
    * ``ISR = 10·log10(‖s‖² / ‖P_j ŝ − s‖²)``,
    * ``SIR = 10·log10(‖P_j ŝ‖² / ‖P_all ŝ − P_j ŝ‖²)``,
    * ``SAR = 10·log10(‖P_all ŝ‖² / ‖ŝ − P_all ŝ‖²)``,

    sums running over channels and samples of the frame. A trailing partial window is dropped
    (a signal shorter than one window gives one frame covering it). A frame where any reference
    or estimate has an all-zero channel sum is NaN for every metric of every source, as in
    museval; ±inf (a zero denominator, e.g. an estimate equal to its reference) is stored as
    NaN, as museval's JSON writer does. A signal so short that the filtered references span
    every signal of its length (``nb_samples + filters_len − 1 ≤ nb_sources · nb_channels ·
    filters_len``, e.g. 0.3 s of 4 stereo sources at 8 kHz) has zero artifacts, so its SAR
    is the rounding error of a zero, in museval as here: NaN or a meaningless value above
    about 140 dB, which need not agree between the two.

    Args:
        references: ``(nb_sources, nb_channels, nb_samples)`` true source images.
        estimates: ``(nb_sources, nb_channels, nb_samples_est)`` estimates, same order.
        window: frame length in samples (44100 = museval's 1 s at 44.1 kHz).
        hop: frame hop in samples.
        filters_len: distortion filter taps (museval: 512).
        padding: zero-pad or truncate the estimates to the references' length (museval's
            default); when False the lengths must match.
        device: torch device for the computation; default: the estimates' device when they are
            tensors, else the CPU.

    Returns:
        The four ``(nb_sources, nb_frames)`` float64 arrays.

    Raises:
        ValueError: shapes that do not match, NaN or infinite samples, or a reference or
            estimate that is silent over the whole signal (museval refuses those too).
    """
    _check_lengths(window, hop, filters_len)
    frames = (window, hop)
    ref, est, sounding = _prepare(references, estimates, device, padding=padding, frames=frames)
    wf = min(window, ref.shape[-1])
    energies = _decompose(ref, est, filters_len, wf, hop, pairs=False)
    sdr = _db(energies.ref, energies.error)
    isr = _db(energies.ref, energies.spatial[:, 0])
    sir = _db(energies.own[:, 0], energies.interference[:, 0])
    sar = _db(energies.total, energies.artifacts)
    metrics = torch.stack([sdr, isr, sir, sar])
    metrics[~torch.isfinite(metrics)] = math.nan
    metrics[:, :, _silent_frames(sounding, wf, hop, ref.shape[-1])] = math.nan
    out = metrics.cpu().numpy()
    return BssEvalResult(sdr=out[0], isr=out[1], sir=out[2], sar=out[3])


def bss_eval_sources(
    references: ArrayLike,
    estimates: ArrayLike,
    *,
    compute_permutation: bool = True,
    filters_len: int = 512,
    device: str | torch.device | None = None,
) -> BssEvalSourcesResult:
    """Whole-signal BSS Eval v3 ``bss_eval_sources`` (mir_eval's and museval's definition).

    Unlike the v4 images metrics, the target is the reference *filtered* by the best
    ``filters_len``-tap filter, ``P_j ŝ``, so a filtered or rescaled estimate is not penalised:

    * ``SDR = 10·log10(‖P_j ŝ‖² / ‖ŝ − P_j ŝ‖²)``,
    * ``SIR = 10·log10(‖P_j ŝ‖² / ‖P_all ŝ − P_j ŝ‖²)``,
    * ``SAR = 10·log10(‖P_all ŝ‖² / ‖ŝ − P_all ŝ‖²)``.

    This is the metric of the MIR-1K singing-voice literature (NSDR, GNSDR). A zero
    denominator gives +inf, as in mir_eval.

    Args:
        references: ``(nb_sources, nb_samples)`` or ``(nb_sources, nb_channels, nb_samples)``.
        estimates: same shape as ``references``.
        compute_permutation: match estimates to references by the permutation with the largest
            mean SIR (mir_eval's default); otherwise estimate ``j`` is scored against
            reference ``j``.
        filters_len: distortion filter taps (512 in mir_eval and museval).
        device: torch device for the computation (default: the estimates' device, else CPU).

    Returns:
        SDR, SIR, SAR ``(nb_sources,)`` in dB and the permutation.

    Raises:
        ValueError: as :func:`bss_eval_v4`.
    """
    _check_lengths(1, 1, filters_len)
    ref, est, _ = _prepare(references, estimates, device, padding=False, allow_2d=True)
    nb_sources, _, nb_samples = ref.shape
    if compute_permutation and nb_sources > MAX_PERMUTED_SOURCES:
        raise ValueError(
            f"{nb_sources} sources make {math.factorial(nb_sources)} permutations to try; "
            f"pass compute_permutation=False or at most {MAX_PERMUTED_SOURCES} sources"
        )
    pairs = compute_permutation and nb_sources > 1
    energies = _decompose(ref, est, filters_len, nb_samples, nb_samples, pairs=pairs)
    # scores[metric, reference j, estimate k] (k = j only when pairs are not computed)
    total = energies.total[None] if pairs else energies.total[:, None]
    artifacts = energies.artifacts[None] if pairs else energies.artifacts[:, None]
    scores = torch.stack(
        [
            _db(energies.own, energies.residual)[..., 0],
            _db(energies.own, energies.interference)[..., 0],
            _db(total, artifacts)[..., 0].expand(nb_sources, -1),
        ]
    ).cpu()
    rows = torch.arange(nb_sources)
    if not pairs:
        chosen = scores[:, :, 0].numpy()
        return BssEvalSourcesResult(
            sdr=chosen[0], sir=chosen[1], sar=chosen[2], perm=rows.numpy().astype(np.int64)
        )
    # mir_eval's choice: the first permutation (in itertools order) with the largest mean SIR
    candidates = list(itertools.permutations(range(nb_sources)))
    mean_sir = [float(scores[1, rows, list(p)].mean()) for p in candidates]
    best = list(candidates[int(np.argmax(mean_sir))])
    chosen = scores[:, rows, best].numpy()
    return BssEvalSourcesResult(
        sdr=chosen[0], sir=chosen[1], sar=chosen[2], perm=np.asarray(best, dtype=np.int64)
    )


@dataclass(frozen=True)
class GlobalScores:
    """MIR-1K global scores: clip-length-weighted means of ``bss_eval_sources`` results, in dB.

    Attributes:
        gnsdr: ``(nb_sources,)`` weighted mean of NSDR = SDR(estimate) − SDR(mixture).
        gsir: ``(nb_sources,)`` weighted mean of SIR.
        gsar: ``(nb_sources,)`` weighted mean of SAR.
        nsdr: ``(nb_clips, nb_sources)`` per-clip NSDR.
        sir: ``(nb_clips, nb_sources)`` per-clip SIR.
        sar: ``(nb_clips, nb_sources)`` per-clip SAR.
        lengths: ``(nb_clips,)`` clip lengths in samples (the weights).
    """

    gnsdr: np.ndarray
    gsir: np.ndarray
    gsar: np.ndarray
    nsdr: np.ndarray
    sir: np.ndarray
    sar: np.ndarray
    lengths: np.ndarray


def global_scores(
    clips: Iterable[tuple[ArrayLike, ArrayLike, ArrayLike]],
    *,
    compute_permutation: bool = True,
    filters_len: int = 512,
    device: str | torch.device | None = None,
) -> GlobalScores:
    """GNSDR, GSIR and GSAR over clips, the MIR-1K singing-voice protocol (spec-notes §6).

    For each clip, :func:`bss_eval_sources` scores the estimates (matched to the references
    by the permutation with the largest mean SIR, as mir_eval does) and the mixture taken as
    the estimate of every source; NSDR is the difference of the two SDRs. Each global score
    is the mean over clips weighted by clip length. Scores stay in the order of the
    references, e.g. (accompaniment, voice).

    Args:
        clips: ``(references, estimates, mixture)`` per clip: ``(nb_sources, [nb_channels,]
            nb_samples)``, the same, and ``([nb_channels,] nb_samples)``.
        compute_permutation: search the estimate-to-reference matching (mir_eval's default).
        filters_len: distortion filter taps.
        device: torch device for the computation.

    Returns:
        The global and per-clip scores.

    Raises:
        ValueError: no clips, clips with different numbers of sources, a mixture whose shape
            is not one reference's, or a non-finite score (a perfect estimate's +inf SIR
            would swamp the mean: leave that clip out).
    """
    nsdrs, sirs, sars, lengths = [], [], [], []
    for index, (references, estimates, mixture) in enumerate(clips):
        ref = _to_tensor(references, "references", torch.device("cpu"), allow_2d=True)
        mix = mixture.detach() if isinstance(mixture, torch.Tensor) else torch.as_tensor(mixture)
        mix = mix.to(torch.float64)
        if mix.ndim == 1:
            mix = mix[None]
        if tuple(mix.shape) != tuple(ref.shape[1:]):
            raise ValueError(
                f"clip {index}: mixture {tuple(mix.shape)} does not match one reference "
                f"{tuple(ref.shape[1:])} (([nb_channels,] nb_samples))"
            )
        scored = [
            bss_eval_sources(
                ref,
                candidate,
                compute_permutation=compute_permutation,
                filters_len=filters_len,
                device=device,
            )
            for candidate in (estimates, mix.expand_as(ref))
        ]
        separated, baseline = scored
        nsdrs.append(separated.sdr - baseline.sdr)
        sirs.append(separated.sir)
        sars.append(separated.sar)
        lengths.append(ref.shape[-1])
    if not lengths:
        raise ValueError("no clips to score")
    if len({len(row) for row in nsdrs}) > 1:
        raise ValueError("every clip must have the same number of sources")
    per_clip = [np.stack(rows) for rows in (nsdrs, sirs, sars)]
    if not all(np.isfinite(rows).all() for rows in per_clip):
        raise ValueError(
            "a clip scored ±inf (an estimate equal to its reference, or silent): its score "
            "would swamp a weighted mean; leave that clip out"
        )
    weights = np.asarray(lengths, dtype=np.float64)
    means = [weights @ rows / weights.sum() for rows in per_clip]
    return GlobalScores(
        gnsdr=means[0],
        gsir=means[1],
        gsar=means[2],
        nsdr=per_clip[0],
        sir=per_clip[1],
        sar=per_clip[2],
        lengths=weights.astype(np.int64),
    )


# --- inputs -----------------------------------------------------------------------------------


def _check_lengths(window: int, hop: int, filters_len: int) -> None:
    for name, value in (("window", window), ("hop", hop), ("filters_len", filters_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer number of samples, got {value!r}")


def _to_tensor(x: ArrayLike, name: str, device: torch.device, allow_2d: bool) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        tensor = x.detach()
    else:  # one conversion at most, and any strides numpy allows
        array = np.asarray(x)
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=_sample_dtype(array.dtype)))
    if allow_2d and tensor.ndim == 2:
        tensor = tensor[:, None, :]
    if tensor.ndim != 3:
        channels = "[nb_channels,] " if allow_2d else "nb_channels, "
        expected = f"(nb_sources, {channels}nb_samples)"
        raise ValueError(f"{name} must be shaped {expected}, got {tuple(tensor.shape)}")
    if tensor.shape[-1] == 0 or tensor.shape[0] == 0:
        raise ValueError(f"{name} is empty {tuple(tensor.shape)}; there is nothing to score")
    return tensor.to(device=device, dtype=_sample_dtype(tensor.dtype))


def _sample_dtype(dtype: np.dtype | torch.dtype) -> Any:
    """float32 samples stay float32 (a 4-minute 4-source stereo track is 680 MB in float64,
    and every consumer upcasts a cache-sized piece at a time, exactly); anything else is
    converted to float64. Returns the numpy or torch dtype, like ``dtype``."""
    if isinstance(dtype, torch.dtype):
        return torch.float32 if dtype == torch.float32 else torch.float64
    return np.float32 if dtype == np.float32 else np.float64


def _sounding(signal: torch.Tensor, name: str, granule: int) -> torch.Tensor:
    """``(nb_sources, ceil(nb_samples / granule))`` booleans, True where the sum over channels
    is not zero at some sample of that ``granule``-sample piece, after checking every sample is
    finite.

    Frames start at multiples of the hop and span a window, so with ``granule = gcd(window,
    hop)`` each is a run of whole granules, and these flags answer both "silent source" and
    "silent frame" without a flag per sample. One pass over the samples for the three checks
    (finite, silent source, silent frame), a cache-sized chunk at a time. The channels are
    added one by one, in float64: torch's ``sum(dim=1)`` over the middle axis takes four times
    as long.
    """
    nb_sources, nb_channels, nb_samples = signal.shape
    flags = signal.new_zeros((nb_sources, -(-nb_samples // granule)), dtype=torch.bool)
    step = max(1, _TIME_CHUNK_BYTES // (8 * nb_sources * nb_channels))
    sums = []
    first = 0
    while first < nb_samples:  # a chunk is whole granules, or a piece of one granule
        if granule <= step:
            stop = min(first + granule * (step // granule), nb_samples)
        else:
            stop = min(first + step, (first // granule + 1) * granule, nb_samples)
        piece = signal[:, :, first:stop]
        mono = piece[:, 0].to(torch.float64)
        if nb_channels > 1:
            mono = torch.add(mono, piece[:, 1])
        for channel in range(2, nb_channels):
            mono += piece[:, channel]
        sums.append(mono.sum())
        nonzero = mono != 0
        if granule <= step:  # whole granules (the signal's last one may be partial)
            pad = -(stop - first) % granule
            grouped = F.pad(nonzero, (0, pad)).reshape(nb_sources, -1, granule).any(dim=-1)
            flags[:, first // granule : first // granule + grouped.shape[1]] = grouped
        else:
            flags[:, first // granule] |= nonzero.any(dim=-1)
        first = stop
    # a NaN or ±inf sample makes the sum non-finite (audio never overflows a float64 sum)
    if not math.isfinite(float(torch.stack(sums).sum())):
        raise ValueError(f"{name} holds NaN or infinite samples; a score would be meaningless")
    return flags


def _prepare(
    references: ArrayLike,
    estimates: ArrayLike,
    device: str | torch.device | None,
    *,
    padding: bool,
    allow_2d: bool = False,
    frames: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Checked ``(nb_sources, nb_channels, nb_samples)`` references and estimates: float32
    kept as such (see :func:`_sample_dtype`), anything else as float64.

    Args:
        frames: ``(window, hop)`` of the frames to be scored, if any.

    Returns:
        The references, the estimates (padded or truncated to the references' length) and,
        for both, :func:`_sounding`'s flags, in granules of ``gcd(min(window, nb_samples),
        hop)`` samples (the whole signal without ``frames``).
    """
    if device is None:
        device = estimates.device if isinstance(estimates, torch.Tensor) else "cpu"
    dev = torch.device(device)
    ref = _to_tensor(references, "references", dev, allow_2d)
    est = _to_tensor(estimates, "estimates", dev, allow_2d)
    if ref.shape[:2] != est.shape[:2]:
        raise ValueError(
            f"references {tuple(ref.shape)} and estimates {tuple(est.shape)} differ in "
            "(nb_sources, nb_channels); give one estimate per reference, same channels"
        )
    nb_samples = ref.shape[-1]
    if est.shape[-1] != nb_samples:
        if not padding:
            raise ValueError(
                f"references have {nb_samples} samples but estimates {est.shape[-1]}; "
                "trim or pad the estimates (or pass padding=True)"
            )
        # museval's pad_or_truncate: zeros at the end, or cut to the reference length
        extra = nb_samples - est.shape[-1]
        est = F.pad(est, (0, extra)) if extra > 0 else est[..., :nb_samples]
    granule = math.gcd(min(frames[0], nb_samples), frames[1]) if frames else nb_samples
    sounding = (_sounding(ref, "references", granule), _sounding(est, "estimates", granule))
    for name, nonzero in zip(("references", "estimates"), sounding, strict=True):
        silent = ~nonzero.any(dim=-1)
        if bool(silent.any()):
            index = int(torch.nonzero(silent)[0, 0])
            raise ValueError(
                f"{name}[{index}] is silent (its channels sum to zero at every sample); BSS "
                "Eval is undefined for it. Leave that source out of the evaluation."
            )
    return ref, est, sounding


# --- the two passes over the signals ----------------------------------------------------------


@dataclass(frozen=True)
class _Filters:
    """Least-squares distortion filters, applied as ``y = Σ conv(filter, x)``.

    ``all``: ``(nb_refs, filters_len, nb_ests)`` with ``nb_refs = nb_ests = nb_sources ·
    nb_channels``: the projection of estimate channel ``e`` on every reference channel.
    ``own``: ``(nb_sources, nb_channels, filters_len, nb_pairs, nb_channels)``: the projection
    of an estimate on the channels of one reference; ``nb_pairs`` is ``nb_sources`` (every
    estimate against every reference) or 1 (estimate ``j`` against reference ``j``).
    """

    all: torch.Tensor
    own: torch.Tensor


@dataclass(frozen=True)
class _Energies:
    """Frame energies, summed over channels and samples of the (zero-padded) frame.

    ``k`` indexes the estimate projected on reference ``j``: estimate ``k`` when every pair is
    computed, else estimate ``j`` (``nb_pairs = 1``).
    """

    ref: torch.Tensor  # (nb_sources, nb_frames): ‖s_j‖²
    error: torch.Tensor  # (nb_sources, nb_frames): ‖ŝ_j − s_j‖²
    own: torch.Tensor  # (nb_sources, nb_pairs, nb_frames): ‖P_j ŝ_k‖²
    spatial: torch.Tensor  # (nb_sources, nb_pairs, nb_frames): ‖P_j ŝ_k − s_j‖²
    interference: torch.Tensor  # (nb_sources, nb_pairs, nb_frames): ‖P_all ŝ_k − P_j ŝ_k‖²
    residual: torch.Tensor  # (nb_sources, nb_pairs, nb_frames): ‖ŝ_k − P_j ŝ_k‖²
    total: torch.Tensor  # (nb_sources, nb_frames): ‖P_all ŝ_k‖², indexed by estimate
    artifacts: torch.Tensor  # (nb_sources, nb_frames): ‖ŝ_k − P_all ŝ_k‖², by estimate


def _decompose(
    ref: torch.Tensor,
    est: torch.Tensor,
    filters_len: int,
    window: int,
    hop: int,
    *,
    pairs: bool,
    tiled: bool = True,
) -> _Energies:
    """Estimate the filters on the whole signals, then decompose every frame.

    Pass 1 cuts the signals into consecutive blocks, takes their spectra and sums the
    cross-spectra of every (signal, reference) pair over the blocks: with the few samples that
    straddle block boundaries added back, that gives the whole-signal correlations at lags
    ``0 … filters_len − 1``, hence the Gram matrix and the right-hand sides. Pass 2 filters the
    spectra of each frame (zero-padded by ``filters_len − 1``, as museval pads it) and reads
    the energies of the projections off the spectra (Parseval). When frames tile the signal
    (hop = window) the blocks *are* the frames, and their spectra are computed once.

    Args:
        ref: ``(nb_sources, nb_channels, nb_samples)`` float32 or float64.
        est: same shape.
        filters_len: filter taps.
        window: frame length, at most ``nb_samples``.
        hop: frame hop.
        pairs: project every estimate on every reference (for permutations).
        tiled: allow the one-pass path (:func:`_decompose_tiled`) where frames tile the
            signal; it comes back here with False when the forms are too ill-conditioned.
    """
    nb_sources, nb_channels, nb_samples = ref.shape
    nb_refs = nb_sources * nb_channels
    shared = hop == window and window >= filters_len
    if shared and not pairs and tiled and _TILED:
        return _decompose_tiled(ref, est, filters_len, window)
    ref, est = ref.to(torch.float64), est.to(torch.float64)
    if shared:
        block = window
    else:
        default = max(16384, 1 << (4 * filters_len - 1).bit_length()) - filters_len + 1
        block = max(min(default, nb_samples), filters_len)
    n_fft = _next_fast_len(block + filters_len - 1)
    nb_blocks = -(-nb_samples // block)
    # references then estimates, (signals, samples), cut into blocks a chunk at a time
    groups = [ref.reshape(nb_refs, -1), est.reshape(nb_refs, -1)]
    nb_frames = (nb_samples - window) // hop + 1
    nb_bins = n_fft // 2 + 1
    keep = shared and 2 * nb_refs * nb_bins * 16 * nb_blocks <= _CACHE_BYTES

    # pass 1: whole-signal correlations r[u, v, k] = Σ_n u[n + k] · v[n]. The spectra are
    # scaled by √(Parseval weight) for pass 2, which reuses them; the weight is divided out
    # of the cross-spectra.
    weight = _parseval_weights(n_fft, ref.device)
    cross_spec = ref.new_zeros((nb_bins, 2 * nb_refs, nb_refs), dtype=torch.complex128)
    spectra = _BlockSpectra(groups, block, nb_blocks, n_fft, weight.sqrt(), keep=keep)
    for _, bins, z in spectra.slices(nb_blocks):
        # a conjugated view: BLAS conjugates on the fly, no copy
        cross_spec[bins].baddbmm_(z, z[:, :nb_refs].mT.conj())
    cross_spec /= weight[:, None, None]
    corr = torch.fft.irfft(cross_spec.permute(1, 2, 0), n=n_fft)[..., :filters_len]
    del cross_spec
    corr = corr + _straddling_correlations(groups, block, filters_len)
    filters = _distortion_filters(corr, nb_sources, nb_channels, filters_len, pairs=pairs)

    # pass 2: frame-wise decomposition
    if shared:
        frame_fft = n_fft
        slices: Iterable[tuple[int, slice, torch.Tensor]] = spectra.slices(nb_frames)
    else:
        del spectra  # its buffers, before the frames' own
        frame_fft = _next_fast_len(window + filters_len - 1)
        frames = torch.stack([ref, est]).reshape(2 * nb_refs, -1).unfold(-1, window, hop)
        frame_weight = _parseval_weights(frame_fft, ref.device)
        slices = _spectral_slices(frames, frame_fft, frame_weight.sqrt())
    response = _frequency_response(filters, frame_fft)
    nb_pairs = filters.own.shape[3]
    size = 1 + 3 * nb_pairs
    gram = ref.new_zeros((nb_sources, nb_frames, size, size))
    for first, bins, z in slices:
        part = _slice_gram(z, response[bins], nb_sources, nb_pairs)
        gram[:, first : first + z.shape[-1]] += part
    signal, error, _ = _time_energies(ref, est, window, hop)
    return _energies_from_gram(gram, signal, error, nb_pairs)


# --- frames that tile the signal: one pass, energies from per-frame correlations -------------


def _decompose_tiled(
    ref: torch.Tensor, est: torch.Tensor, filters_len: int, window: int
) -> _Energies:
    """:func:`_decompose` for frames that tile the signal (hop = window ≥ filters_len), one
    estimate per reference, in a single pass over the samples.

    Every energy of a frame's decomposition is a quadratic or bilinear form of the (fixed)
    filters in that frame's *local* correlations at lags ``0 … filters_len − 1`` (the frame
    zero-padded, as museval pads it):

    * ``‖Σ_p h_p * x_p‖² = Σ_{p,q} Σ_d w_d · ρ_qp(d) · κ_pq(d)``, with ``ρ_uv(d) = Σ_n
      u[n + d] · v[n]`` over the frame, ``κ_pq(d) = Σ_a h_p[a] · h_q[a − d]`` the filters'
      own correlation and ``w_0 = 1``, ``w_d = 2`` (``ρ_qp(−d) = ρ_pq(d)`` folds the
      negative lags onto the positive ones);
    * ``⟨ŝ, Σ_p h_p * x_p⟩ = Σ_p Σ_a h_p[a] · ρ_ŝp(a)``.

    The interference ``P_all ŝ − P_j ŝ`` and the spatial distortion ``P_j ŝ − s_j`` are
    themselves filters of the references (``h_all − h_j``, ``h_j − δ``), so their energies are
    such forms too, with no difference of large numbers. The frame correlations (a few MB)
    come from short FFTs (:func:`_frame_correlations`) and, summed with the terms straddling
    frame boundaries, are the whole-signal correlations the filters need: the spectra of the
    signal are computed once and never stored, and there is no second pass over them.

    The forms square the filters' conditioning; where their rounding bound exceeds
    ``_FORM_RELATIVE_ERROR`` of an energy (ill-conditioned references, e.g. pure tones), the
    two-pass path decomposes the frames instead (:func:`_tiled_energies`).

    Args:
        ref: ``(nb_sources, nb_channels, nb_samples)`` float32 or float64 (float32 is
            upcast a piece at a time, as it is copied into the FFT buffers).
        est: same shape.
        filters_len: filter taps, at most ``window``.
        window: frame length and hop, at most ``nb_samples``.
    """
    nb_sources, nb_channels, nb_samples = ref.shape
    nb_refs = nb_sources * nb_channels
    groups = [ref.reshape(nb_refs, -1), est.reshape(nb_refs, -1)]
    nb_frames = nb_samples // window
    local = _frame_correlations(groups, window, filters_len)  # (blocks, 2·refs, refs, lags)
    corr = local.sum(dim=0) + _straddling_correlations(groups, window, filters_len)
    filters = _distortion_filters(corr, nb_sources, nb_channels, filters_len, pairs=False)
    signal, error, est_power = _time_energies(ref, est, window, window, channels=True)
    assert est_power is not None
    energies = _tiled_energies(local[:nb_frames], filters, signal, error, est_power)
    if energies is None:  # too ill-conditioned for the forms: filter the spectra instead
        return _decompose(ref, est, filters_len, window, window, pairs=False, tiled=False)
    return energies


def _frame_correlations(groups: list[torch.Tensor], window: int, nb_lags: int) -> torch.Tensor:
    """Local correlations of every ``window``-sample block: ``ρ_uv(d) = Σ_n u[n + d] · v[n]``,
    ``u`` and ``v`` zero outside the block (the last block may be shorter).

    Each block is cut into ``nb_sub`` sub-blocks of ``sub`` samples. Sub-block ``b`` of ``v``
    zero-padded to ``n_fft``, against ``u`` over the same sub-block extended by the next
    ``nb_lags − 1`` samples of the block (overlap-save: ``n_fft ≥ sub + nb_lags − 1``, so
    the circular correlation does not wrap at lags below ``nb_lags``), gives every term of
    ``ρ_uv(d)`` whose ``v`` sample lies in sub-block ``b``: summed over the sub-blocks, the
    block's cross-spectrum, one inverse FFT per pair and block. Short FFTs (about 2000
    points, ``_SUB_FFT``) keep every buffer in cache and cost about what one long FFT per
    block would.

    Args:
        groups: the references' then the estimates' ``(nb_refs, nb_samples)`` signals.
        window: block length, at least ``nb_lags``.
        nb_lags: lags kept.

    Returns:
        ``(nb_blocks, nb_signals, nb_refs, nb_lags)``, ``nb_blocks = ceil(nb_samples /
        window)``; rows ``u`` are the references then the estimates, columns ``v`` the
        references.
    """
    refs = groups[0]
    nb_refs, nb_samples = refs.shape
    nb_signals = sum(signals.shape[0] for signals in groups)
    nb_blocks = -(-nb_samples // window)
    span = nb_lags - 1
    target = max(_SUB_FFT, 2 * nb_lags)
    nb_sub = -(-window // (target - span))
    sub = -(-window // nb_sub)
    n_fft = _next_fast_len(sub + span)
    nb_bins = n_fft // 2 + 1
    step = max(1, _FRAME_FFT_BYTES // (nb_sub * (nb_signals + nb_refs) * n_fft * 8))
    # reused buffers: fresh memory costs a page fault per 4 KiB, as much as the work on it
    u_in = refs.new_zeros((step, nb_sub, nb_signals, n_fft), dtype=torch.float64)
    v_in = refs.new_zeros((step, nb_sub, nb_refs, n_fft), dtype=torch.float64)
    # the spectra are written bin-major, the layout of the products over sub-blocks: a
    # strided store in the FFT costs less than a transposing copy before the products
    u_spec = refs.new_empty((step, nb_bins, nb_signals, nb_sub), dtype=torch.complex128)
    v_spec = refs.new_empty((step, nb_bins, nb_sub, nb_refs), dtype=torch.complex128)
    cross = refs.new_empty((step, nb_bins, nb_signals, nb_refs), dtype=torch.complex128)
    lagged = refs.new_empty((step, nb_signals, nb_refs, n_fft), dtype=torch.float64)
    out = refs.new_empty((nb_blocks, nb_signals, nb_refs, nb_lags), dtype=torch.float64)
    # sub-blocks whose extension stays inside the block come straight from strided views
    # (none when one sub-block's extension is longer than the block: short windows, many lags)
    nb_inner = max(0, min(nb_sub, (window - sub - span) // sub + 1))
    for first in range(0, nb_blocks, step):
        count = min(step, nb_blocks - first)
        start, stop = first * window, min((first + count) * window, nb_samples)
        full, rest = divmod(stop - start, window)
        row = 0
        for signals in groups:
            rows = slice(row, row + signals.shape[0])
            row += signals.shape[0]
            segment = signals[:, start:stop]
            blocks = segment[:, : full * window].reshape(signals.shape[0], full, window)
            if nb_inner:
                inner = blocks.unfold(-1, sub + span, sub)[:, :, :nb_inner]
                u_in[:full, :nb_inner, rows, : sub + span] = inner.permute(1, 2, 0, 3)
            for b in range(nb_inner, nb_sub):  # the block's end: its samples, then zeros
                length = max(0, min(sub + span, window - b * sub))
                part = blocks[:, :, b * sub : b * sub + length]
                u_in[:full, b, rows, :length] = part.transpose(0, 1)
                u_in[:full, b, rows, length : sub + span] = 0.0
            if rest:  # the signals end inside this block
                last = u_in[full, :, rows]
                last[..., : sub + span] = 0.0
                tail = segment[:, full * window :]
                for b in range(nb_sub):
                    length = max(0, min(sub + span, rest - b * sub))
                    last[b, :, :length] = tail[:, b * sub : b * sub + length]
        v_in[:count, :, :, :sub] = u_in[:count, :, :nb_refs, :sub]
        _rfft_into(u_in[:count], u_spec[:count].permute(0, 3, 2, 1))
        _rfft_into(v_in[:count], v_spec[:count].permute(0, 2, 3, 1))
        _conjugate_(v_spec[:count])
        # (block, bin, u, v): Σ over sub-blocks, one small matrix product per bin
        _matmul_into(u_spec[:count], v_spec[:count], cross[:count])
        _irfft_into(cross[:count], lagged[:count].permute(0, 3, 1, 2), dim=1)
        out[first : first + count] = lagged[:count, ..., :nb_lags]
    return out


def _filter_correlations(filters: torch.Tensor) -> torch.Tensor:
    """``κ_pq(d) = Σ_a h_p[a] · h_q[a − d]`` for ``d = 0 … nb_lags − 1``.

    Args:
        filters: ``(..., nb_refs, nb_lags)`` filters ``h_p``.

    Returns:
        ``(..., nb_refs p, nb_refs q, nb_lags)``.
    """
    nb_lags = filters.shape[-1]
    n_fft = _next_fast_len(2 * nb_lags - 1)
    spec = torch.fft.rfft(filters, n=n_fft)
    return torch.fft.irfft(spec[..., :, None, :] * spec[..., None, :, :].conj(), n=n_fft)[
        ..., :nb_lags
    ]


def _tiled_energies(
    local: torch.Tensor,
    filters: _Filters,
    signal: torch.Tensor,
    error: torch.Tensor,
    est_power: torch.Tensor,
) -> _Energies | None:
    """The energies of :func:`_decompose_tiled`, from the frames' local correlations, or None
    where rounding could move one of them by more than ``_FORM_RELATIVE_ERROR``.

    The forms square the filters' conditioning: with an ill-conditioned Gram matrix
    (band-limited or nearly silent references) the filters are large, and a form can be many
    orders of magnitude below its terms, where filtering the spectra (the two-pass path) loses
    only as much as the filters' norm. So every energy is checked against the bound of its
    rounding error: ``|ρ_qp(d)| ≤ √(E_q E_p)`` (Cauchy–Schwarz, ``E`` the frames' energies,
    the correlations at lag 0) and ``|ρ_ŝp(a)| ≤ √(‖ŝ‖² E_p)`` bound the terms of each form by
    ``S`` (below), and the FFTs and the sums err by at most ``_FORM_ROUNDING · S``; an energy
    below ``_FORM_ROUNDING · S / _FORM_RELATIVE_ERROR`` returns None.

    Args:
        local: ``(nb_frames, 2 · nb_refs, nb_refs, nb_lags)`` from :func:`_frame_correlations`.
        filters: the distortion filters (one estimate per reference).
        signal: ``(nb_sources, nb_frames)`` ``‖s_j‖²``.
        error: ``(nb_sources, nb_frames)`` ``‖ŝ_j − s_j‖²``.
        est_power: ``(nb_sources, nb_channels, nb_frames)`` ``‖ŝ_jc‖²``.
    """
    nb_frames, _, nb_refs, nb_lags = local.shape
    nb_sources, nb_channels = filters.own.shape[:2]
    # per estimate channel e = (j, c): its filters on every reference channel p, (e, p, a)
    h_all = filters.all.permute(2, 0, 1)
    h_own = h_all.new_zeros((nb_sources, nb_channels, nb_sources, nb_channels, nb_lags))
    for j in range(nb_sources):
        h_own[j, :, j] = filters.own[j, :, :, 0].permute(2, 0, 1)
    h_own = h_own.reshape(nb_refs, nb_refs, nb_lags)
    identity = torch.zeros_like(h_own)
    identity[:, :, 0] = torch.eye(nb_refs, dtype=h_own.dtype, device=h_own.device)
    # the filtered signals whose energies are wanted: P_all ŝ, P_j ŝ, their difference
    # (interference) and P_j ŝ − s (spatial distortion)
    kinds = torch.stack([h_all, h_own, h_all - h_own, h_own - identity])
    kappa = _filter_correlations(kinds)  # (kind, e, p, q, d)
    kappa[..., 1:] *= 2.0
    # Σ_{p,q,d} ρ_qp(d) κ_pq(d): ρ is stored (q, p, d)
    kernel = kappa.transpose(2, 3).reshape(4 * nb_refs, -1)
    quadratic = local[:, :nb_refs].reshape(nb_frames, -1) @ kernel.T  # (frames, kind · e)
    quadratic = quadratic.T.reshape(4, nb_sources, nb_channels, nb_frames)
    # ⟨ŝ_e, P ŝ_e⟩ = Σ_{p,a} h_ep[a] ρ_{ŝ_e p}(a), for P_all and P_j
    linear = torch.einsum("fepa,kepa->kef", local[:, nb_refs:], kinds[:2])
    linear = linear.reshape(2, nb_sources, nb_channels, nb_frames)
    total, own, interference, spatial = quadratic.sum(dim=2)
    total_est, own_est = (est_power - 2.0 * linear).sum(dim=2)
    artifacts, residual = total_est + total, own_est + own

    # the bounds S of the terms of each form, in the same layout
    root = torch.diagonal(local[:, :nb_refs, :, 0], dim1=1, dim2=2).clamp(min=0.0).sqrt()
    terms_q = torch.einsum("fp,kepq,fq->kef", root, kappa.abs().sum(dim=-1), root)
    terms_q = terms_q.reshape(4, nb_sources, nb_channels, nb_frames)
    est_root = est_power.reshape(nb_refs, nb_frames).sqrt()
    terms_l = est_root * torch.einsum("fp,kep->kef", root, kinds[:2].abs().sum(dim=-1))
    terms_l = terms_l.reshape(2, nb_sources, nb_channels, nb_frames)
    bound_total, bound_own, bound_interference, bound_spatial = terms_q.sum(dim=2)
    bound_total_est, bound_own_est = (est_power + 2.0 * terms_l).sum(dim=2)
    checks = [
        (total, bound_total),
        (own, bound_own),
        (interference, bound_interference),
        (spatial, bound_spatial),
        (artifacts, bound_total_est + bound_total),
        (residual, bound_own_est + bound_own),
    ]
    margin = _FORM_ROUNDING / _FORM_RELATIVE_ERROR
    if not all(bool((energy >= margin * bound).all()) for energy, bound in checks):
        return None
    return _Energies(
        ref=signal,
        error=error,
        own=own[:, None],
        spatial=spatial.clamp(min=0.0)[:, None],
        interference=interference.clamp(min=0.0)[:, None],
        residual=residual.clamp(min=0.0)[:, None],
        total=total,
        artifacts=artifacts.clamp(min=0.0),
    )


def _time_energies(
    ref: torch.Tensor, est: torch.Tensor, window: int, hop: int, *, channels: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``‖s‖²`` and ``‖ŝ − s‖²`` of every frame, in the time domain like museval.

    Args:
        ref: ``(nb_sources, nb_channels, nb_samples)``.
        est: same shape.
        window: frame length.
        hop: frame hop.
        channels: also return ``‖ŝ‖²`` per channel.

    Returns:
        Two ``(nb_sources, nb_frames)`` tensors, then, with ``channels``, one
        ``(nb_sources, nb_channels, nb_frames)`` (else None).
    """
    ref_frames = ref.unfold(-1, window, hop)  # (sources, channels, frames, window)
    est_frames = est.unfold(-1, window, hop)
    # small chunks: the temporary difference stays in cache
    step = max(1, _TIME_CHUNK_BYTES // (8 * ref.shape[0] * ref.shape[1] * window))
    signal, error, power = [], [], []
    for first in range(0, ref_frames.shape[2], step):
        # float64 before the difference (float32 inputs are upcast here, a chunk at a time)
        x = ref_frames[:, :, first : first + step].to(torch.float64)
        e = est_frames[:, :, first : first + step].to(torch.float64)
        # a norm is one pass over the samples, without the temporary of a square-then-sum
        signal.append(torch.linalg.vector_norm(x, dim=(1, 3)).square())
        error.append(torch.linalg.vector_norm(e - x, dim=(1, 3)).square())
        if channels:
            power.append(torch.linalg.vector_norm(e, dim=3).square())
    est_power = torch.cat(power, dim=-1) if channels else None
    return torch.cat(signal, dim=-1), torch.cat(error, dim=-1), est_power


class _BlockSpectra:
    """Spectra of the consecutive ``block``-sample blocks of signals, handed out like
    :func:`_spectral_slices`, for the two passes of :func:`_decompose`.

    Blocks are cut and zero-padded to ``n_fft`` a few at a time in one small reused buffer
    (an FFT of contiguous pre-padded rows costs about two thirds of one that pads or gathers
    them itself) and transformed straight into ``store``: every block's spectra when ``keep``
    (pass 2 then reads them again instead of transforming again), else one chunk's. The
    frequency slices are copied bin-major into one reused buffer too: fresh memory costs a
    page fault per 4 KiB, about 0.4 s per gigabyte, as much as the products themselves.

    Args:
        groups: ``(nb_group_signals, nb_samples)`` tensors, stacked in this order.
        block: block length, at most ``n_fft``.
        nb_blocks: blocks there are, ``ceil(nb_samples / block)``; samples beyond the
            signals' end are zeros.
        n_fft: FFT size.
        scale: ``(nb_bins,)`` real factors applied to the bins.
        keep: store every block's spectra (``nb_blocks × nb_signals × nb_bins`` complex).
    """

    def __init__(
        self,
        groups: list[torch.Tensor],
        block: int,
        nb_blocks: int,
        n_fft: int,
        scale: torch.Tensor,
        *,
        keep: bool,
    ) -> None:
        self.groups, self.block, self.scale = groups, block, scale
        self.nb_signals = sum(signals.shape[0] for signals in groups)
        nb_bins = n_fft // 2 + 1
        per_block = self.nb_signals * nb_bins * 16
        self.step = min(nb_blocks, max(1, _CHUNK_BYTES // per_block))
        fft_step = min(self.step, max(1, _FFT_BYTES // (self.nb_signals * n_fft * 8)))
        self.padded = groups[0].new_zeros((fft_step, self.nb_signals, n_fft))
        self.keep = keep
        self.store = self.padded.new_empty(
            (nb_blocks if keep else self.step, self.nb_signals, nb_bins), dtype=torch.complex128
        )
        self.transformed = 0  # blocks of ``store`` holding their spectra, when ``keep``
        self.width = max(16, _SLICE_BYTES // (16 * self.step * self.nb_signals))
        self.slice_buffer = self.store.new_empty(self.width * self.nb_signals * self.step)

    def slices(self, nb_blocks: int) -> Iterator[tuple[int, slice, torch.Tensor]]:
        """Frequency slices of the first ``nb_blocks`` blocks' spectra.

        Yields:
            ``(first block of the chunk, frequency slice, (nb_bins_slice, nb_signals,
            nb_chunk))`` contiguous complex spectra, scaled; a view of a buffer the next
            slice overwrites.
        """
        nb_bins = self.store.shape[-1]
        for first in range(0, nb_blocks, self.step):
            count = min(self.step, nb_blocks - first)
            if self.keep:
                spectra = self.store[first : first + count]
                if first + count > self.transformed:
                    self._transform(first, spectra)
                    self.transformed = first + count
            else:
                spectra = self.store[:count]
                self._transform(first, spectra)
            for start in range(0, nb_bins, self.width):
                bins = slice(start, min(start + self.width, nb_bins))
                size = (bins.stop - start) * self.nb_signals * count
                out = self.slice_buffer[:size].view(bins.stop - start, self.nb_signals, count)
                yield first, bins, _bin_major(spectra[:, :, bins], self.scale[bins], out)

    def _transform(self, first: int, out: torch.Tensor) -> None:
        """``out[i]``: spectra of block ``first + i``, a few blocks at a time."""
        block = self.block
        for offset in range(0, out.shape[0], self.padded.shape[0]):
            count = min(self.padded.shape[0], out.shape[0] - offset)
            start = first + offset
            chunk = self.padded[:count]
            row = 0
            for signals in self.groups:
                rows = slice(row, row + signals.shape[0])
                segment = signals[:, start * block : (start + count) * block]
                full, rest = divmod(segment.shape[-1], block)
                head = segment[:, : full * block].reshape(signals.shape[0], full, block)
                chunk[:full, rows, :block] = head.transpose(0, 1)
                if full < count:  # the signals end inside this block
                    chunk[full, rows, :rest] = segment[:, full * block :]
                    chunk[full, rows, rest:block] = 0.0
                row += signals.shape[0]
            _rfft_into(chunk, out[offset : offset + count])


def _rfft(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """``rfft(x, n=n_fft)`` along the last axis, any strides: numpy's on the CPU (a quarter of
    the time of torch's for stacks of short transforms, e.g. 1024 points), else torch's."""
    if _NUMPY_ON_CPU and x.device.type == "cpu":
        return torch.from_numpy(np.fft.rfft(x.numpy(), n=n_fft, axis=-1))
    return torch.fft.rfft(x, n=n_fft)


def _rfft_into(x: torch.Tensor, out: torch.Tensor) -> None:
    """``out = rfft(x)`` along the last axis; ``x`` contiguous, ``out`` any strides.

    On the CPU numpy's pocketfft does it, in 0.4 to 0.7 of the time of torch's (MKL, one
    thread) at 45000 points, float64: the largest single cost of :func:`bss_eval_v4`. It
    writes a strided ``out`` in place. Elsewhere, torch's.
    """
    if _NUMPY_ON_CPU and x.device.type == "cpu":
        np.fft.rfft(x.numpy(), axis=-1, out=out.numpy())
    else:
        out.copy_(torch.fft.rfft(x))


def _irfft_into(x: torch.Tensor, out: torch.Tensor, dim: int = -1) -> None:
    """``out = irfft(x, n=out.shape[dim])`` along ``dim``; any strides.

    numpy's pocketfft on the CPU (about 0.6 of torch's time at 4000 points), torch's
    elsewhere.
    """
    if _NUMPY_ON_CPU and x.device.type == "cpu":
        np.fft.irfft(x.numpy(), n=out.shape[dim], axis=dim, out=out.numpy())
    else:
        out.copy_(torch.fft.irfft(x, n=out.shape[dim], dim=dim))


def _matmul_into(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """``out = a @ b`` for stacks of small matrices.

    On the CPU numpy's, which runs stacks of 16 × 29 by 29 × 8 complex products at 2.3 times
    the speed of torch's (4.4 against 1.9 G complex multiply-adds per second, one thread).
    """
    if _NUMPY_ON_CPU and a.device.type == "cpu":
        np.matmul(a.numpy(), b.numpy(), out=out.numpy())
    else:
        torch.matmul(a, b, out=out)


def _conjugate_(x: torch.Tensor) -> None:
    """Conjugate a complex tensor in place (numpy's on the CPU: it skips torch's dispatch)."""
    if _NUMPY_ON_CPU and x.device.type == "cpu":
        np.conjugate(x.numpy(), out=x.numpy())
    else:
        x.conj_physical_()


def _spectral_slices(
    blocks: torch.Tensor, n_fft: int, scale: torch.Tensor | None = None
) -> Iterator[tuple[int, slice, torch.Tensor]]:
    """Spectra of ``(nb_signals, nb_blocks, length)`` blocks, zero-padded to ``n_fft``.

    The blocks are transformed a bounded chunk at a time, and each chunk's spectra are handed
    out in frequency slices laid out for batched products over frequency.

    Args:
        blocks: the signals' blocks.
        n_fft: FFT size.
        scale: optional ``(nb_bins,)`` real factors applied to the bins.

    Yields:
        ``(first block of the chunk, frequency slice, (nb_bins_slice, nb_signals, nb_chunk))``
        contiguous complex spectra.
    """
    nb_signals, nb_blocks, _ = blocks.shape
    nb_bins = n_fft // 2 + 1
    step = max(1, _CHUNK_BYTES // (nb_signals * nb_bins * 16))
    for first in range(0, nb_blocks, step):
        spec = _rfft(blocks[:, first : first + step], n_fft)
        columns = spec.shape[0] * spec.shape[1]
        width = max(16, _SLICE_BYTES // (16 * columns))
        for start in range(0, nb_bins, width):
            bins = slice(start, min(start + width, nb_bins))
            part = spec[:, :, bins].transpose(0, 1)
            yield first, bins, _bin_major(part, None if scale is None else scale[bins])


def _bin_major(
    spec: torch.Tensor, scale: torch.Tensor | None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``(nb_bins_slice, nb_signals, nb_chunk)`` contiguous copy of ``(nb_chunk, nb_signals,
    nb_bins_slice)`` spectra, scaled bin by bin.

    Contiguous, not merely permuted: an elementwise product of a permuted view keeps the
    view's memory order, and every batched product over frequency would then copy it again.
    """
    if out is None:
        out = spec.new_empty((spec.shape[2], spec.shape[1], spec.shape[0]))
    view = spec.permute(2, 1, 0)
    if scale is None:
        return out.copy_(view)
    return torch.mul(view, scale[:, None, None], out=out)


def _straddling_correlations(groups: list[torch.Tensor], block: int, nb_lags: int) -> torch.Tensor:
    """The correlation terms block-wise spectra miss: ``v[n]`` in a block, ``u[n + k]`` in the next.

    For each boundary, the last ``nb_lags − 1`` samples of the references before it and the
    first ``nb_lags − 1`` samples of every signal after it, correlated with short FFTs.

    Args:
        groups: the references' then the estimates' ``(nb_refs, nb_samples)`` signals.
        block: block length, at least ``nb_lags − 1``.
        nb_lags: correlation lags.

    Returns:
        ``(nb_signals, nb_refs, nb_lags)``.
    """
    refs = groups[0]
    nb_refs, nb_samples = refs.shape
    nb_signals = sum(signals.shape[0] for signals in groups)
    nb_blocks = -(-nb_samples // block)
    span = nb_lags - 1
    if nb_blocks < 2 or span == 0:  # no boundary, or no lag reaches across one
        return refs.new_zeros((nb_signals, nb_refs, nb_lags), dtype=torch.float64)
    n_fft = _next_fast_len(2 * span)
    nb_bins = n_fft // 2 + 1
    nb_bounds = nb_blocks - 1
    chunk = max(1, min(nb_bounds, _FRAME_FFT_BYTES // ((nb_signals + nb_refs) * n_fft * 8)))
    # per boundary: zeros then the head of the next block (every signal; zeros past the end),
    # and the tail of the block before it (references), zero-padded to the same length
    after = refs.new_zeros((chunk, nb_signals, n_fft), dtype=torch.float64)
    before = refs.new_zeros((chunk, nb_refs, n_fft), dtype=torch.float64)
    # spectra bin-major, boundaries last: one product per bin sums over the boundaries
    after_spec = refs.new_empty((nb_bins, nb_signals, chunk), dtype=torch.complex128)
    before_spec = refs.new_empty((nb_bins, chunk, nb_refs), dtype=torch.complex128)
    part = refs.new_empty((nb_bins, nb_signals, nb_refs), dtype=torch.complex128)
    acc = torch.zeros_like(part)
    for first in range(0, nb_bounds, chunk):
        count = min(chunk, nb_bounds - first)
        for k in range(count):
            start = (first + k + 1) * block
            length = min(span, nb_samples - start)
            row = 0
            for signals in groups:
                rows = slice(row, row + signals.shape[0])
                row += signals.shape[0]
                after[k, rows, span : span + length] = signals[:, start : start + length]
                after[k, rows, span + length :] = 0.0
            before[k, :, :span] = refs[:, start - span : start]
        _rfft_into(after[:count], after_spec[:, :, :count].permute(2, 1, 0))
        _rfft_into(before[:count], before_spec[:, :count].permute(1, 2, 0))
        _conjugate_(before_spec[:, :count])
        _matmul_into(after_spec[:, :, :count], before_spec[:, :count], part)
        acc += part
    out = refs.new_empty((nb_signals, nb_refs, n_fft), dtype=torch.float64)
    _irfft_into(acc, out.permute(2, 0, 1), dim=0)
    return out[..., :nb_lags].clone()


def _gram(corr: torch.Tensor, nb_lags: int) -> torch.Tensor:
    """Gram matrix of the delayed reference channels, from their correlations.

    ``G[(p, a), (q, b)] = Σ_n x_p[n − a] · x_q[n − b]``, equal to ``corr[q, p, a − b]`` when
    ``a ≥ b`` and ``corr[p, q, b − a]`` otherwise.

    Args:
        corr: ``(..., nb_refs, nb_refs, nb_lags)``, ``corr[u, v, k] = Σ_n x_u[n + k] · x_v[n]``.

    Returns:
        ``(..., nb_refs · nb_lags, nb_refs · nb_lags)``, rows and columns ordered ``(p, a)``.
    """
    nb_refs = corr.shape[-2]
    # lag 0 of r_pq and of r_qp is one inner product: make it exactly symmetric
    lag0 = 0.5 * (corr[..., 0] + corr[..., 0].mT)
    # sequence[p, q, nb_lags − 1 + d] = G[(p, a), (q, a − d)] for −nb_lags < d < nb_lags
    sequence = torch.cat(
        [corr[..., 1:].flip(-1), lag0[..., None], corr.transpose(-3, -2)[..., 1:]], dim=-1
    )
    refs = torch.arange(nb_refs, device=corr.device)
    lags = torch.arange(nb_lags, device=corr.device)
    # one gather straight into the (p, a, q, b) layout
    gram = sequence[
        ...,
        refs[:, None, None, None],
        refs[None, None, :, None],
        nb_lags - 1 + lags[None, :, None, None] - lags[None, None, None, :],
    ]
    size = nb_refs * nb_lags
    return gram.reshape(*corr.shape[:-3], size, size)


def _solve_spd(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``matrix · x = rhs`` for symmetric positive (semi)definite matrices.

    Cholesky, batched. Batched LU solves in torch are unreliable on CPU for large matrices
    with several threads (pitfalls.md). A matrix Cholesky rejects (numerically singular: a
    reference channel that copies another, a band with no energy) goes to museval's own
    solver, LAPACK's LU, which copes with tiny pivots. LU stops only at an exactly zero pivot,
    which bit-identical channels produce here (museval's rounding happens to avoid it); a
    relative nudge of a few ulps to the diagonal then gets it through, at a much lower cost
    than museval's last resort, least squares (kept for anything still singular). The
    projections do not depend on the filter components that such singular directions leave
    undetermined.

    Args:
        matrix: ``(..., n, n)``, regularised already.
        rhs: ``(..., n, k)``.

    Returns:
        ``(..., n, k)``.
    """
    factor, info = torch.linalg.cholesky_ex(matrix)
    # two triangular solves: several times faster than cholesky_solve on CPU
    half = torch.linalg.solve_triangular(factor, rhs, upper=False)
    solution = torch.linalg.solve_triangular(factor.mT, half, upper=True)
    failed = torch.nonzero(info.reshape(-1)).reshape(-1).tolist()
    if failed:
        flat_a = matrix.reshape(-1, *matrix.shape[-2:])
        flat_b = rhs.reshape(-1, *rhs.shape[-2:])
        flat_x = solution.reshape(-1, *solution.shape[-2:]).clone()
        for index in failed:
            a = flat_a[index].cpu().numpy()
            b = flat_b[index].cpu().numpy()
            flat_x[index] = torch.from_numpy(_solve_singular(a, b)).to(flat_x)
        solution = flat_x.reshape(solution.shape)
    return solution


def _solve_singular(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """museval's fallback chain (LU, then least squares), with a few-ulp nudge in between."""
    try:
        return np.asarray(np.linalg.solve(a, b))
    except np.linalg.LinAlgError:
        pass
    nudged = a.copy()
    np.fill_diagonal(nudged, np.diagonal(a) * (1.0 + 16.0 * GRAM_EPS))
    try:
        return np.asarray(np.linalg.solve(nudged, b))
    except np.linalg.LinAlgError:
        return np.asarray(np.linalg.lstsq(a, b, rcond=None)[0])


def _distortion_filters(
    corr: torch.Tensor, nb_sources: int, nb_channels: int, filters_len: int, *, pairs: bool
) -> _Filters:
    """Least-squares filters projecting every estimate channel on the delayed references.

    The normal equations of the projection on all sources have museval's matrix
    ``G + eps·I`` (the Gram matrix of the delayed reference channels) and one right-hand side
    per estimate channel, solved together. ``G`` is block Toeplitz, which
    :func:`_solve_block_toeplitz` exploits; should it fail, ``G`` is built and factorised
    (Cholesky) like any dense matrix. The single-source projections use ``G``'s diagonal
    blocks, each factorised once.

    Args:
        corr: ``(2 · nb_refs, nb_refs, filters_len)`` correlations of (references, then
            estimates) with the references.
    """
    nb_refs = nb_sources * nb_channels
    block = nb_channels * filters_len
    # D[(p, a), e] = Σ_n x_p[n − a] · ŝ_e[n] = r_{ŝ_e, x_p}(a)
    cross = corr[nb_refs:].permute(1, 2, 0).reshape(nb_refs * filters_len, nb_refs)
    by_source = corr[:nb_refs].reshape(nb_sources, nb_channels, nb_sources, nb_channels, -1)
    own_corr = torch.diagonal(by_source, dim1=0, dim2=2).permute(3, 0, 1, 2)  # (j, u, v, d)
    cross_blocks = cross.reshape(nb_sources, block, nb_sources, nb_channels)
    if pairs:
        own_rhs = cross_blocks.reshape(nb_sources, block, nb_refs)
    else:
        own_rhs = torch.stack([cross_blocks[j, :, j] for j in range(nb_sources)])
    # each source's own Gram is block Toeplitz too (P = nb_channels): Schur, batched over the
    # sources, in its lag-major order; a dense Cholesky per source where it gives up
    own_blocks = _toeplitz_blocks(own_corr)
    lag_major = own_rhs.reshape(nb_sources, nb_channels, filters_len, -1).transpose(1, 2)
    own = _solve_block_toeplitz(own_blocks, lag_major.reshape(nb_sources, block, -1))
    if own is None:
        own_gram = _gram(own_corr, filters_len)
        own_gram.diagonal(dim1=-2, dim2=-1).add_(GRAM_EPS)
        own = _solve_spd(own_gram, own_rhs)
    else:
        own = own.reshape(nb_sources, filters_len, nb_channels, -1).transpose(1, 2)
    own = own.reshape(nb_sources, nb_channels, filters_len, -1, nb_channels)
    if nb_sources == 1:  # the projection on all sources is the one on the only source
        return _Filters(all=own.reshape(nb_refs, filters_len, nb_refs), own=own)

    blocks = _toeplitz_blocks(corr[:nb_refs])
    lag_major = cross.reshape(nb_refs, filters_len, nb_refs).transpose(0, 1)
    solution = _solve_block_toeplitz(blocks, lag_major.reshape(filters_len * nb_refs, nb_refs))
    if solution is None:
        gram = _gram(corr[:nb_refs], filters_len)
        gram.diagonal().add_(GRAM_EPS)
        all_filters = _solve_spd(gram, cross).reshape(nb_refs, filters_len, nb_refs)
    else:
        all_filters = solution.reshape(filters_len, nb_refs, nb_refs).transpose(0, 1)
    return _Filters(all=all_filters.contiguous(), own=own)


def _toeplitz_blocks(corr: torch.Tensor) -> torch.Tensor:
    """The blocks of ``G + eps·I`` for :func:`_solve_block_toeplitz`, lag-major.

    ``T_d[p, q] = G[(p, a), (q, a − d)] = corr[q, p, d]``; lag 0 made exactly symmetric (one
    inner product, as in :func:`_gram`) and given museval's Tikhonov term.

    Args:
        corr: ``(..., P, P, nb_lags)`` correlations of the reference channels.

    Returns:
        ``(..., nb_lags, P, P)``.
    """
    blocks = corr.permute(*range(corr.ndim - 3), -1, -2, -3).clone()
    blocks[..., 0, :, :] = 0.5 * (blocks[..., 0, :, :] + blocks[..., 0, :, :].mT)
    blocks[..., 0, :, :].diagonal(dim1=-2, dim2=-1).add_(GRAM_EPS)
    return blocks


def _solve_block_toeplitz(blocks: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor | None:
    """Solve ``T x = rhs`` for symmetric positive definite block Toeplitz ``T``s, or give up.

    ``T`` has ``nb_lags × nb_lags`` blocks of ``P × P``, block ``(a, b)`` being
    ``blocks[a − b]`` (``blocks[d].T`` when ``a < b``). Its Cholesky factor comes from the
    generalised Schur algorithm, which works on a ``2P``-row generator and costs
    ``O(nb_lags² · P³)`` instead of the ``O(nb_lags³ · P³)`` of a dense factorisation (an
    order of magnitude less for 512 lags). One step of iterative refinement, with residuals
    computed from ``T``'s blocks by FFT, then makes the solution as accurate as a dense
    Cholesky solve. The Schur algorithm is less robust than Cholesky on nearly singular
    matrices, so the answer is accepted only if, for every system of the batch, its normwise
    backward error ``‖rhs − T x‖ / (‖T‖ ‖x‖)`` is at rounding level (``_BACKWARD_ERROR``);
    otherwise None.

    Args:
        blocks: ``(..., nb_lags, P, P)``.
        rhs: ``(..., nb_lags · P, k)``, rows ordered ``(a, p)``.

    Returns:
        ``(..., nb_lags · P, k)`` or None.
    """
    nb_lags, size = blocks.shape[-3:-1]
    factor = _schur_cholesky(blocks)
    if factor is None:
        return None

    def solve(b: torch.Tensor) -> torch.Tensor:
        half = torch.linalg.solve_triangular(factor.mT, b, upper=False)
        return torch.linalg.solve_triangular(factor, half, upper=True)

    def residual(x: torch.Tensor) -> torch.Tensor:
        lagged = x.reshape(*x.shape[:-2], nb_lags, size, x.shape[-1])
        return rhs - _block_toeplitz_matvec(blocks, lagged).reshape(x.shape)

    solution = solve(rhs)
    solution = solution + solve(residual(solution))
    # ‖T‖_F from its blocks: block d ≠ 0 appears 2·(nb_lags − d) times
    counts = 2.0 * (nb_lags - torch.arange(nb_lags, device=blocks.device, dtype=blocks.dtype))
    counts[0] = nb_lags
    norm = torch.sqrt((counts * blocks.square().sum(dim=(-2, -1))).sum(dim=-1))
    matrix_norm = torch.linalg.matrix_norm  # Frobenius, per system of the batch
    error = matrix_norm(residual(solution)) / (norm * matrix_norm(solution))
    if not bool(torch.isfinite(error).all()) or float(error.max()) > _BACKWARD_ERROR:
        return None
    return solution


def _schur_cholesky(blocks: torch.Tensor) -> torch.Tensor | None:
    """Upper Cholesky factors ``R`` (``T = Rᵀ R``) of block Toeplitz ``T``s, by the Schur
    algorithm.

    The displacement ``T − Z T Zᵀ`` (``Z``: shift down by one block) equals ``uᵀu − vᵀv`` with
    ``u`` the first block row of ``R`` and ``v`` the same with its first block zeroed. Each
    step shifts ``u`` one block right and applies the ``J``-orthogonal transformation that
    zeroes the leading block of ``v``; the new ``u`` is the next block row of ``R``. Leading
    dimensions are a batch of independent systems, factorised in the same steps.

    Args:
        blocks: ``(..., nb_lags, P, P)``, ``T``'s first block column.

    Returns:
        ``(..., nb_lags · P, nb_lags · P)`` whose upper triangle is ``R`` (the strictly lower
        part is left unset: read it through ``solve_triangular`` or ``triu``), or None when a
        step meets a matrix that is not numerically positive definite.
    """
    *batch, nb_lags, size, _ = blocks.shape
    n = nb_lags * size
    head, info = torch.linalg.cholesky_ex(blocks[..., 0, :, :], upper=True)
    first_row = blocks.mT.movedim(-3, -2).reshape(*batch, size, n)  # [T_0, T_1ᵀ, …]
    u = torch.linalg.solve_triangular(head.mT, first_row, upper=False)
    v = u.clone()
    v[..., :size] = 0.0
    u[..., :size] = head  # C⁻ᵀ T_0 = C, exactly triangular
    # only the upper triangle is written, and only it is read (solve_triangular reads the
    # triangle it is told; tests/unit/test_bsseval.py holds torch to that): the strictly lower
    # part is never touched, which saves zero-filling (and faulting in) half of 134 MB
    factor = blocks.new_empty((*batch, n, n))
    factor[..., :size, :] = u
    sums = [u.sum()]
    eye = torch.eye(size, dtype=blocks.dtype, device=blocks.device).expand(*batch, size, size)
    lower = blocks.new_zeros((*batch, 2 * size, 2 * size))
    failures = [info.reshape(-1)]
    for step in range(1, nb_lags):
        start = step * size
        # shifted u over v, (..., 2P, n − start)
        stacked = torch.cat([u[..., : n - start], v[..., size:]], dim=-2)
        a, b = stacked[..., :size, :size], stacked[..., size:, :size]
        gain_t, singular = torch.linalg.solve_ex(a.mT, b.mT)
        gain = gain_t.mT  # K = b a⁻¹, ‖K‖ < 1
        pivots = torch.stack([a.mT @ a - b.mT @ b, eye - gain @ gain.mT])
        chol, info = torch.linalg.cholesky_ex(pivots)  # lower factors
        failures += [info.reshape(-1), singular.reshape(-1)]
        mix = torch.cat(
            [torch.cat([a.mT, -b.mT], dim=-1), torch.cat([-gain, eye], dim=-1)], dim=-2
        )  # rows: aᵀu − bᵀv and v − K u
        lower[..., :size, :size] = chol[0]
        lower[..., size:, size:] = chol[1]
        # the 2P × 2P transform first, then one product with the long generator (a triangular
        # solve on the generator itself took twice the product's time)
        stacked = torch.linalg.solve_triangular(lower, mix, upper=False) @ stacked
        u, v = stacked[..., :size, :], stacked[..., size:, :]
        u[..., :size] = chol[0].mT  # in exact arithmetic; keeps the factor exactly triangular
        factor[..., start : start + size, start:] = u
        sums.append(u.sum())
    if bool(torch.cat(failures).any()) or not math.isfinite(float(torch.stack(sums).sum())):
        return None
    return factor


def _block_toeplitz_matvec(blocks: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y_a = Σ_b T_{a−b} x_b`` by FFT, with ``T_{−d} = T_dᵀ``.

    Args:
        blocks: ``(..., nb_lags, P, P)``.
        x: ``(..., nb_lags, P, k)``.

    Returns:
        ``(..., nb_lags, P, k)``.
    """
    nb_lags = blocks.shape[-3]
    n_fft = _next_fast_len(3 * nb_lags - 2)
    # the kernel over d = −(nb_lags − 1) … nb_lags − 1, stored from index 0
    kernel = torch.cat([blocks[..., 1:, :, :].flip(-3).mT, blocks], dim=-3)
    spectra = torch.fft.rfft(kernel, n=n_fft, dim=-3) @ torch.fft.rfft(x, n=n_fft, dim=-3)
    return torch.fft.irfft(spectra, n=n_fft, dim=-3)[..., nb_lags - 1 : 2 * nb_lags - 1, :, :]


def _frequency_response(filters: _Filters, n_fft: int) -> torch.Tensor:
    """All projection filters as one matrix per frequency bin.

    Returns:
        ``(nb_bins, nb_refs + nb_sources · nb_pairs · nb_channels, nb_refs)``: rows ``e``
        give ``P_all`` of estimate channel ``e``; the next rows, ordered ``(j, k, c)``, give
        ``P_j`` of channel ``c`` of estimate ``k`` (zero outside the columns of source ``j``).
    """
    nb_sources, nb_channels, _, nb_pairs, _ = filters.own.shape
    nb_refs = nb_sources * nb_channels
    all_resp = torch.fft.rfft(filters.all.permute(2, 0, 1), n=n_fft)  # (e, p, bins)
    own_resp = torch.fft.rfft(filters.own.permute(0, 3, 4, 1, 2), n=n_fft)  # (j, k, c, c', bins)
    nb_bins = all_resp.shape[-1]
    own_rows = all_resp.new_zeros(
        (nb_sources, nb_pairs, nb_channels, nb_sources, nb_channels, nb_bins)
    )
    for j in range(nb_sources):
        own_rows[j, :, :, j] = own_resp[j]
    own_rows = own_rows.reshape(nb_sources * nb_pairs * nb_channels, nb_refs, nb_bins)
    return torch.cat([all_resp, own_rows]).permute(2, 0, 1).contiguous()


def _parseval_weights(n_fft: int, device: torch.device) -> torch.Tensor:
    """``Σ_n x[n]² = Σ_bins weight · |X|²`` for the one-sided spectrum of a real signal."""
    weight = torch.full((n_fft // 2 + 1,), 2.0 / n_fft, dtype=torch.float64, device=device)
    weight[0] = 1.0 / n_fft
    if n_fft % 2 == 0:
        weight[-1] = 1.0 / n_fft
    return weight


def _slice_gram(
    z: torch.Tensor, response: torch.Tensor, nb_sources: int, nb_pairs: int
) -> torch.Tensor:
    """Inner products between the terms of the decomposition, over one frequency slice.

    For reference ``j`` the terms are ``s_j``, then for each estimate ``k`` it is paired with
    (``k = j``, or every ``k``): ``ŝ_k``, ``P_all ŝ_k`` and ``P_j ŝ_k``. Their real inner
    products, summed over bins and channels, give every energy of the decomposition
    (``‖a − b‖² = ⟨a, a⟩ + ⟨b, b⟩ − 2⟨a, b⟩``) with one matrix product per frame, instead
    of one pass over the spectra per energy.

    Args:
        z: ``(nb_bins_slice, 2 · nb_refs, nb_chunk)`` spectra of the frames (references then
            estimates), scaled by the square roots of the Parseval weights.
        response: ``(nb_bins_slice, rows, nb_refs)`` from :func:`_frequency_response`.
        nb_sources: number of sources.
        nb_pairs: estimates paired with each reference (``nb_sources`` or 1).

    Returns:
        ``(nb_sources, nb_chunk, 1 + 3 · nb_pairs, 1 + 3 · nb_pairs)`` partial Gram matrices.
    """
    nb_bins, nb_signals, nb_chunk = z.shape
    nb_refs = nb_signals // 2
    nb_channels = nb_refs // nb_sources
    projected = torch.bmm(response, z[:, :nb_refs])
    by_source = (nb_bins, nb_sources, 1, nb_channels, nb_chunk)
    x = z[:, :nb_refs].reshape(by_source)
    e = z[:, nb_refs:].reshape(by_source)
    p_all = projected[:, :nb_refs].reshape(by_source)
    p_own = projected[:, nb_refs:].reshape(nb_bins, nb_sources, nb_pairs, nb_channels, nb_chunk)
    if nb_pairs > 1:  # every estimate k with every reference j
        paired = (nb_bins, nb_sources, nb_pairs, nb_channels, nb_chunk)
        e, p_all = e.transpose(1, 2).expand(paired), p_all.transpose(1, 2).expand(paired)
    nb_terms = 1 + 3 * nb_pairs
    # (j, frames, terms, bins, c): each (j, frame) a contiguous row per term
    terms = z.new_empty((nb_sources, nb_chunk, nb_terms, nb_bins, nb_channels))
    offsets = (0, 1, 1 + nb_pairs, 1 + 2 * nb_pairs)
    for first, part in zip(offsets, (x, e, p_all, p_own), strict=True):
        terms[:, :, first : first + part.shape[2]] = part.permute(1, 4, 2, 0, 3)
    flat = torch.view_as_real(terms).reshape(nb_sources * nb_chunk, nb_terms, -1)
    gram = torch.bmm(flat, flat.transpose(1, 2))
    return gram.reshape(nb_sources, nb_chunk, nb_terms, nb_terms)


def _energies_from_gram(
    gram: torch.Tensor, signal: torch.Tensor, error: torch.Tensor, nb_pairs: int
) -> _Energies:
    """Read the energies off the Gram matrices of :func:`_slice_gram`.

    ``gram`` is ``(nb_sources, nb_frames, terms, terms)``. Differences of nearly equal terms
    lose about ``10^(dB/10) · 1e-16`` in relative precision (negligible below ~100 dB);
    rounding that makes one negative is clamped to zero.
    """
    e = slice(1, 1 + nb_pairs)
    p_all = slice(1 + nb_pairs, 1 + 2 * nb_pairs)
    p_own = slice(1 + 2 * nb_pairs, 1 + 3 * nb_pairs)
    # the squared norm of s_j, broadcast over the paired estimates: (j, 1, frames)
    ref_power = gram[:, :, 0, 0][:, None]

    def inner(a: slice, b: slice) -> torch.Tensor:
        """⟨a_k, b_k⟩ for each pair k: (j, k, frames)."""
        return torch.diagonal(gram[:, :, a, b], dim1=-2, dim2=-1).transpose(1, 2)

    def distance(a: slice, b: slice) -> torch.Tensor:
        return (inner(a, a) + inner(b, b) - 2.0 * inner(a, b)).clamp(min=0.0)

    spatial = ref_power + inner(p_own, p_own) - 2.0 * gram[:, :, 0, p_own].transpose(1, 2)
    total = inner(p_all, p_all)
    artifacts = distance(e, p_all)
    # total and artifacts depend on the estimate only: index them by estimate
    if nb_pairs == 1:
        total, artifacts = total[:, 0], artifacts[:, 0]
    else:
        total, artifacts = total[0], artifacts[0]
    return _Energies(
        ref=signal,
        error=error,
        own=inner(p_own, p_own),
        spatial=spatial.clamp(min=0.0),
        interference=distance(p_all, p_own),
        residual=distance(e, p_own),
        total=total,
        artifacts=artifacts,
    )


def _db(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``10·log10(num / den)``; +inf where ``den`` is zero (museval's and mir_eval's rule)."""
    ratio = torch.where(den == 0, torch.full_like(num, math.inf), num / den)
    return 10.0 * torch.log10(ratio)


def _silent_frames(
    sounding: tuple[torch.Tensor, torch.Tensor], window: int, hop: int, nb_samples: int
) -> torch.Tensor:
    """``(nb_frames,)`` True where some reference or estimate has an all-zero channel sum.

    Args:
        sounding: the references' and the estimates' ``(nb_sources, nb_granules)`` flags from
            :func:`_sounding`, in granules of ``gcd(window, hop)`` samples.
        window: frame length, at most ``nb_samples``.
        hop: frame hop.
        nb_samples: signal length.
    """
    granule = math.gcd(window, hop)
    whole = nb_samples // granule  # a partial last granule is in no frame
    flags = [
        (~nonzero[:, :whole].unfold(-1, window // granule, hop // granule).any(dim=-1)).any(dim=0)
        for nonzero in sounding
    ]
    return flags[0] | flags[1]


def _next_fast_len(n: int) -> int:
    """Smallest ``2^a · 3^b · 5^c ≥ n``: FFT sizes that pocketFFT, MKL and cuFFT do fastest."""
    best = 1 << max(0, (n - 1).bit_length())
    five = 1
    while five < best:
        three = five
        while three < best:
            size = three
            while size < n:
                size *= 2
            best = min(best, size)
            three *= 3
        five *= 5
    return best
