"""Multichannel Wiener filtering with the simplified EM of Open-Unmix / norbert.

Layout: source spectrograms ``(..., nb_sources, nb_channels, nb_bins, nb_frames)`` (real,
non-negative; ``nb_channels`` may be 1 for mono models) and the mixture STFT
``(..., nb_channels, nb_bins, nb_frames)`` (complex). Leading dimensions (a batch) are
independent: every statistic is computed per item.

The EM refines initial complex estimates ``y_j`` by alternating

* the local Gaussian model: power spectral density ``v_j = mean_c |y_j|²`` and spatial
  covariance ``R_j(f) = Σ_t y_j yᴴ_j / (eps + Σ_t v_j)``;
* the posterior mean ``y_j = v_j R_j C_x⁻¹ x`` with ``C_x = Σ_j v_j R_j + √eps·I``.

Matrices are at most 2×2 and inverted in closed form: no batched LU solve (see
reference/pitfalls.md), and exact for the stereo case music uses. The spatial statistics and
the inverse are formed in double precision whatever the input precision, because the mixture
covariance is nearly singular wherever the sources' images are nearly parallel (near-mono
mixes, one-frame blocks); see tests/unit/test_wiener_conditioning.py.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["expectation_maximization", "initial_estimates", "wiener", "wiener_block"]


def initial_estimates(
    spectrograms: Tensor,
    mix_stft: Tensor,
    softmask: bool = False,
    residual: bool = False,
    eps: float = 1e-10,
) -> Tensor:
    """Complex source estimates from magnitude estimates and the mixture.

    Args:
        spectrograms: ``(..., nb_sources, nb_channels|1, nb_bins, nb_frames)`` non-negative.
        mix_stft: complex ``(..., nb_channels, nb_bins, nb_frames)``.
        softmask: if False, each magnitude takes the mixture phase (right for magnitude
            estimates such as Open-Unmix outputs); if True, the mixture is multiplied by the
            ratio mask ``v_j / (eps + Σ_k v_k)``.
        residual: append ``mix - Σ_j y_j`` as one more source.
        eps: floor of the ratio-mask denominator.

    Returns:
        Complex ``(..., nb_sources (+1), nb_channels, nb_bins, nb_frames)``.
    """
    mix = mix_stft.unsqueeze(-4)
    if softmask:
        total = spectrograms.sum(dim=-4, keepdim=True)
        y = mix * (spectrograms / (eps + total))
    else:
        # The mixture phase as x / |x| rather than polar(|y|, angle(x)): the same numbers up
        # to rounding, without the many times slower trigonometry. Silent bins get the phase
        # factor 1 (upstream's, as torch.angle(0) is 0). Mono estimates broadcast over the
        # mixture channels. Real arithmetic on (re, im) pairs: a real × complex product
        # would first widen the magnitudes to complex.
        y = torch.view_as_complex(spectrograms.unsqueeze(-1) * _unit_phase(mix))
    if residual:
        y = torch.cat([y, mix - y.sum(dim=-4, keepdim=True)], dim=-4)
    return y


def _unit_phase(x: Tensor) -> Tensor:
    """``x / |x|`` as ``(..., 2)`` real pairs, ``(1, 0)`` where ``x`` is 0."""
    mag = x.abs()
    phase = torch.view_as_real(x) / mag.unsqueeze(-1)
    silent = mag == 0
    if bool(silent.any()):
        phase[silent] = torch.tensor([1.0, 0.0], dtype=phase.dtype, device=phase.device)
    return phase


def _sum_squares(z: Tensor) -> Tensor:
    """``Σ_t |z|²`` of a complex ``(..., T)`` in its own precision, as a real dot product."""
    pairs = torch.view_as_real(z).flatten(-2)
    return torch.linalg.vecdot(pairs, pairs)


def _em_step(y: Tensor, x: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """One EM step. ``y`` ``(..., S, C, F, T)``, ``x`` ``(..., C, F, T)``, C in {1, 2}.

    Spatial covariances are Hermitian, so the stereo case needs only two real diagonals and
    one complex off-diagonal term per source and bin; the 2×2 mixture covariance is inverted
    in closed form. Mathematically the same as building full matrices, at a fraction of the
    memory traffic, and free of batched LU solves (see reference/pitfalls.md).
    """
    nb_channels = x.shape[-3]
    power = y.real.square() + y.imag.square()
    v = power.mean(dim=-3)  # (..., S, F, T)
    weight = eps + v.sum(dim=-1)  # (..., S, F)
    reg = eps**0.5
    if nb_channels == 1:
        r = (power[..., 0, :, :].sum(dim=-1) / weight).unsqueeze(-1)  # (..., S, F, 1)
        vr = v * r
        z = x[..., 0, :, :] / (vr.sum(dim=-3) + reg)
        y = (vr * z.unsqueeze(-3)).unsqueeze(-3)
        return y, v, r.to(y.dtype).unsqueeze(-1)
    if nb_channels != 2:
        raise ValueError(
            f"the Wiener filter handles 1 or 2 channels, got {nb_channels}; downmix to stereo"
        )
    # Spatial covariances and the 2×2 mixture covariance [[a, b], [conj(b), d]] in double
    # precision. When the sources' spatial images are nearly parallel (a near-mono mix, or a
    # block of one frame, where every R_j has rank one) a·d and |b|² agree in most of their
    # digits, and single-precision rounding of R_j and of the sums moved the stems by up to
    # 1e-3 relative, differently on every CPU. The per-frame powers v_j and the estimates stay
    # in the input precision: the stems' sensitivity to them is small (about 20× in the
    # 1-frame case), and they are the bulk of the memory traffic.
    wide = torch.float64
    y0 = y[..., 0, :, :].to(torch.complex128)
    y1 = y[..., 1, :, :].to(torch.complex128)
    weight_w = weight.to(wide)
    # products of single-precision numbers are exact in double: R_j keeps its rank-one
    # structure exactly where the block has one frame. Σ_t |y_c|² as a dot product of the
    # (re, im) pairs: no squared temporaries.
    r00 = _sum_squares(y0) / weight_w  # (..., S, F), real
    r11 = _sum_squares(y1) / weight_w
    r01 = torch.linalg.vecdot(y1, y0) / weight_w  # Σ_t y0 conj(y1), complex
    del y0, y1
    # C_x = Σ_j v_j R_j + √eps·I, one source at a time into (..., F, T) accumulators: the
    # float32 v_j times the double R_j is formed in double, as v.to(float64) * R_j would be
    a = torch.full(v.shape[:-3] + v.shape[-2:], reg, dtype=wide, device=v.device)
    d = a.clone()
    b = torch.zeros(a.shape, dtype=torch.complex128, device=v.device)
    for j in range(v.shape[-3]):
        v_j = v[..., j, :, :]
        a.addcmul_(v_j, r00[..., j, :, None])
        d.addcmul_(v_j, r11[..., j, :, None])
        b.addcmul_(v_j, r01[..., j, :, None])
    inv_det = (a * d).sub_(b.real.square()).sub_(b.imag.square()).reciprocal_()
    x0, x1 = x[..., 0, :, :].to(torch.complex128), x[..., 1, :, :].to(torch.complex128)
    # z = C_x⁻¹ x once for the mixture, then y_j = v_j R_j z
    z0 = (d * x0).sub_(b * x1).mul_(inv_det).to(x.dtype).unsqueeze(-3)
    z1 = (a * x1).sub_(b.conj() * x0).mul_(inv_det).to(x.dtype).unsqueeze(-3)
    del a, b, d, inv_det, x0, x1
    r01 = r01.to(x.dtype).unsqueeze(-1)
    r00c, r11c = r00.to(x.dtype).unsqueeze(-1), r11.to(x.dtype).unsqueeze(-1)
    # y_j = v_j (R_j z), written channel by channel into one tensor (no stacked copy); the
    # real v_j scales the (re, im) pairs in place rather than being widened to complex
    if torch.is_grad_enabled() and (v.requires_grad or z0.requires_grad):
        # training through the filter: out= and in-place writes have no gradient
        y = torch.stack([v * (r01 * z1 + r00c * z0), v * (r01.conj() * z0 + r11c * z1)], dim=-3)
    else:
        y = torch.empty((*v.shape[:-2], 2, *v.shape[-2:]), dtype=x.dtype, device=x.device)
        torch.mul(r01, z1, out=y[..., 0, :, :]).addcmul_(r00c, z0)
        torch.mul(r01.conj(), z0, out=y[..., 1, :, :]).addcmul_(r11c, z1)
        torch.view_as_real(y).mul_(v[..., None, :, :, None])
    cov = torch.stack(
        [torch.stack([r00c, r01], dim=-1), torch.stack([r01.conj(), r11c], dim=-1)],
        dim=-2,
    ).squeeze(-3)
    return y, v, cov


def expectation_maximization(
    y: Tensor, mix_stft: Tensor, iterations: int = 1, eps: float = 1e-10
) -> tuple[Tensor, Tensor, Tensor]:
    """Refine complex source estimates with ``iterations`` EM steps.

    Statistics are pooled over all ``nb_frames`` given: call it on blocks of frames to model
    time-varying mixing (and to bound memory), as :func:`wiener` does.

    Args:
        y: complex initial estimates ``(..., nb_sources, nb_channels, nb_bins, nb_frames)``.
        mix_stft: complex ``(..., nb_channels, nb_bins, nb_frames)``, 1 or 2 channels.
        iterations: number of EM steps (≥ 1).
        eps: regularisation: added to the covariance weights and, as ``√eps·I``, to the
            mixture covariance.

    Returns:
        ``(y, v, R)``: refined estimates (shape of ``y``), and the PSDs
        ``(..., nb_sources, nb_bins, nb_frames)`` and spatial covariances
        ``(..., nb_sources, nb_bins, nb_channels, nb_channels)`` the last step used.
    """
    if iterations < 1:
        raise ValueError(f"EM needs at least one iteration, got {iterations}")
    v = R = y.real.new_zeros(())
    for _ in range(iterations):
        y, v, R = _em_step(y, mix_stft, eps)
    return y, v, R


def _block_scale(mix_stft: Tensor, scale_factor: float) -> Tensor:
    """``max(1, max|x| / scale_factor)`` per item of a block ``(..., C, F, T)``, kept as
    ``(..., 1, 1, 1)``: the EM runs on the block scaled down by it, for numerical range."""
    return torch.clamp(mix_stft.abs().amax(dim=(-3, -2, -1), keepdim=True) / scale_factor, min=1)


def wiener(
    spectrograms: Tensor,
    mix_stft: Tensor,
    iterations: int = 1,
    softmask: bool = False,
    residual: bool = False,
    scale_factor: float = 10.0,
    eps: float = 1e-10,
    win_len: int | None = 300,
) -> Tensor:
    """Separate a mixture STFT with magnitude estimates and multichannel Wiener/EM filtering.

    Initial estimates from :func:`initial_estimates`; if ``iterations > 0``, each block of
    ``win_len`` frames is scaled down by ``max(1, max|x| / scale_factor)`` (per batch item and
    block, for numerical range), refined by :func:`expectation_maximization` and scaled back.

    Args:
        spectrograms: ``(..., nb_sources, nb_channels|1, nb_bins, nb_frames)`` non-negative.
        mix_stft: complex ``(..., nb_channels, nb_bins, nb_frames)``.
        iterations: EM steps; 0 returns the initial estimates.
        softmask: initial estimates by ratio mask instead of mixture phase.
        residual: add ``mix - Σ estimates`` as a last source before EM.
        scale_factor: see above.
        eps: regularisation of masks and EM.
        win_len: frames per independently filtered block; ``None`` for the whole signal
            (memory grows with the length).

    Returns:
        Complex ``(..., nb_sources (+1), nb_channels, nb_bins, nb_frames)``.

    Raises:
        ValueError: EM requested with a single source.
    """
    y = initial_estimates(spectrograms, mix_stft, softmask=softmask, residual=residual, eps=eps)
    if iterations == 0:
        return y
    if y.shape[-4] < 2:
        raise ValueError(
            "Wiener EM needs at least two sources; estimate more targets or set residual=True"
        )
    nb_frames = mix_stft.shape[-1]
    block = nb_frames if not win_len else int(win_len)
    # Without autograd, blocks overwrite the initial estimates (a fresh tensor): the full-size
    # result exists once instead of three times (estimates, blocks, concatenation).
    in_place = not y.requires_grad
    blocks = []
    for start in range(0, nb_frames, block):
        x_b = mix_stft[..., start : start + block]
        max_abs = _block_scale(x_b, scale_factor)
        scale = max_abs.unsqueeze(-4)
        y_b = y[..., start : start + block] / scale
        y_b, _, _ = expectation_maximization(y_b, x_b / max_abs, iterations, eps)
        if in_place:
            y[..., start : start + block] = y_b * scale
        else:
            blocks.append(y_b * scale)
    return y if in_place else torch.cat(blocks, dim=-1)


def wiener_block(
    spectrograms: Tensor,
    mix_stft: Tensor,
    iterations: int = 1,
    softmask: bool = False,
    residual: bool = False,
    scale_factor: float = 10.0,
    bins_per_step: int = 256,
) -> Tensor:
    """:func:`wiener` on one block of frames (``win_len=None``), a few bins at a time.

    Everything in the filter is per frequency bin (the EM statistics pool over the block's
    frames, never over bins) except the block's rescaling, ``max(1, max|x| / scale_factor)``:
    with the scale taken from the whole block, the bins are filtered ``bins_per_step`` at a
    time, which bounds the EM temporaries to a fraction of the block. The result equals
    ``wiener(..., win_len=None)`` on the block up to float rounding.

    Args:
        spectrograms: ``(..., nb_sources, nb_channels|1, nb_bins, nb_block_frames)``.
        mix_stft: complex ``(..., nb_channels, nb_bins, nb_block_frames)``.
        iterations: EM steps; 0 returns the initial estimates.
        softmask: initial estimates by ratio mask instead of mixture phase.
        residual: add ``mix - Σ estimates`` as a last source before EM.
        scale_factor: see :func:`wiener`.
        bins_per_step: frequency bins filtered at once; a memory knob only.

    Returns:
        Complex ``(..., nb_sources (+1), nb_channels, nb_bins, nb_block_frames)``.
    """
    nb_bins = mix_stft.shape[-2]
    if iterations == 0 or nb_bins <= bins_per_step:
        return wiener(
            spectrograms,
            mix_stft,
            iterations=iterations,
            softmask=softmask,
            residual=residual,
            scale_factor=scale_factor,
            win_len=None,
        )
    # wiener's per-block scaling, per batch item, shared by every group of bins
    max_abs = _block_scale(mix_stft, scale_factor)
    scale = max_abs.unsqueeze(-4)
    out: Tensor | None = None
    for low in range(0, nb_bins, bins_per_step):
        high = min(low + bins_per_step, nb_bins)
        x_bins = mix_stft[..., low:high, :]
        y = initial_estimates(
            spectrograms[..., low:high, :], x_bins, softmask=softmask, residual=residual
        )
        y, _, _ = expectation_maximization(y / scale, x_bins / max_abs, iterations)
        if out is None:
            out = y.new_empty(*y.shape[:-2], nb_bins, y.shape[-1])
        out[..., low:high, :] = y * scale
        del y
    assert out is not None
    return out
