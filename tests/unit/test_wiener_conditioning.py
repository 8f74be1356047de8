"""The Wiener/EM filter in single precision gives the double-precision stems on any CPU.

When the sources' spatial images are nearly parallel (a near-mono mix, centre-panned
sources, or EM blocks of one frame where every spatial covariance has rank one), the 2×2
mixture covariance is nearly singular: ``a·d`` and ``|b|²`` agree in most of their digits.
Single-precision rounding of the statistics then moved the stems by up to 0.6 % relative, and
differently on every CPU (MKL picks its kernels per microarchitecture). The statistics and
the 2×2 inverse are now formed in double precision.

The bound asserted is first-order error analysis: the float32 filter's relative error against
the float64 filter of the same (float32-representable) inputs is at most ``N · K · u``, with
``u = 2⁻²⁴`` the single-precision unit roundoff, ``K`` the problem's own sensitivity to
relative perturbations (asserted here too, from a float64 perturbation) and ``N = 1000`` a
generous count of the single-precision roundings that still reach the stems (initial
estimates, powers and outputs: a few dozen per EM iteration, two iterations). The
single-precision statistics this replaces exceeded that bound by 8 to 60 times.
"""

from __future__ import annotations

import pytest
import torch

from stemkit.dsp.wiener import wiener

#: single-precision unit roundoff
UNIT_ROUNDOFF = 2.0**-24
#: roundings in single precision that reach the stems (see the module docstring)
ROUNDINGS = 1000


def _near_mono(win_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(win_len)
    shape = (2, 129, 300)
    mix = torch.complex(
        torch.randn(2, *shape, generator=gen), torch.randn(2, *shape, generator=gen)
    )
    # the right channel is the left one within 0.1 %: every source image is nearly parallel
    mix[:, 1] = mix[:, 0] * (1 + 1e-3 * torch.randn(shape[0], *shape[2:], generator=gen)[:, None])
    estimates = torch.rand(2, 3, 2, *shape[1:], generator=gen) ** 2 * 3
    return estimates, mix


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("win_len", [1, 3, 300])
@pytest.mark.parametrize("residual", [True, False])
def test_single_precision_filter_matches_double(win_len: int, residual: bool) -> None:
    estimates, mix = _near_mono(win_len)
    wide = wiener(
        estimates.double(), mix.to(torch.complex128), 2, residual=residual, win_len=win_len
    )
    # the problem's own sensitivity to relative perturbations of the magnitudes
    delta = 1e-9
    gen = torch.Generator().manual_seed(7)
    noise = torch.randn(estimates.shape, generator=gen, dtype=torch.float64)
    moved = wiener(
        estimates.double() * (1 + delta * noise),
        mix.to(torch.complex128),
        2,
        residual=residual,
        win_len=win_len,
    )
    sensitivity = _rel(moved, wide) / delta
    assert sensitivity < 1000  # 6 to 560 on these signals: the filter itself is well-posed
    narrow = wiener(estimates, mix, 2, residual=residual, win_len=win_len)
    assert narrow.dtype == torch.complex64
    assert (
        _rel(narrow.to(torch.complex128), wide) < ROUNDINGS * max(sensitivity, 1.0) * UNIT_ROUNDOFF
    )
