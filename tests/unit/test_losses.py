"""Training losses: values worked out by hand or with independent numpy formulas, gradients,
the combination terms of X-UMX, and shape errors."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from stemkit.losses import (
    combination_magnitude_mse,
    combination_weighted_sdr_loss,
    complex_l1_loss,
    l1_loss,
    magnitude_mse_loss,
    mse_loss,
    multi_domain_loss,
    sisdr_loss,
    source_combinations,
    tf_l1_loss,
    usdr_loss,
    weighted_sdr,
    weighted_sdr_loss,
)
from stemkit.metrics.sdr import usdr


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------- values by hand


def test_waveform_and_magnitude_losses_by_hand() -> None:
    est = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    ref = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    # differences 1, 0, 2, 3
    assert l1_loss(est, ref).item() == pytest.approx(6 / 4)
    assert mse_loss(est, ref).item() == pytest.approx(14 / 4)
    assert magnitude_mse_loss(est, ref).item() == pytest.approx(14 / 4)


def test_tf_l1_loss_by_hand() -> None:
    est_spec = torch.tensor([1 + 2j, -1 + 0j], dtype=torch.complex64)
    ref_spec = torch.tensor([0 + 0j, 1 + 1j], dtype=torch.complex64)
    # difference 1+2j, -2-1j: mean |real| = 1.5, mean |imag| = 1.5
    assert complex_l1_loss(est_spec, ref_spec).item() == pytest.approx(3.0)
    est_wave = torch.tensor([1.0, -1.0])
    ref_wave = torch.zeros(2)
    assert tf_l1_loss(est_wave, ref_wave, est_spec, ref_spec).item() == pytest.approx(4.0)


def test_usdr_loss_by_hand_and_against_the_metric() -> None:
    ref = torch.ones(1, 1, 1, 4)
    est = ref.clone()
    est[..., 2] += 0.5
    # 10·log10((4 + 1e-7) / (0.25 + 1e-7)) = 10·log10(16)
    assert usdr_loss(est, ref).item() == pytest.approx(-10 * math.log10(16), abs=1e-5)
    ref = _randn(3, 4, 2, 500)
    est = ref + 0.3 * _randn(3, 4, 2, 500, seed=1)
    expected = np.mean([usdr(r.numpy(), e.numpy()) for r, e in zip(ref, est, strict=True)])
    assert usdr_loss(est, ref).item() == pytest.approx(-expected, rel=1e-9)


def test_sisdr_loss_by_hand_and_scale_invariance() -> None:
    ref = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    est = torch.tensor([[[2.0, 1.0]]], dtype=torch.float64)
    # α = 2, target (2, 0), noise (0, 1): 10·log10(4 / 1)
    value = sisdr_loss(est, ref, zero_mean=False).item()
    assert value == pytest.approx(-10 * math.log10(4), abs=1e-6)
    ref = _randn(2, 3, 2, 400)
    est = ref + 0.5 * _randn(2, 3, 2, 400, seed=2)
    # independent formula, per (batch, source) over channels and samples, zero-mean channels
    r = ref - ref.mean(-1, keepdim=True)
    e = est - est.mean(-1, keepdim=True)
    r2, e2 = r.flatten(-2).numpy(), e.flatten(-2).numpy()
    alpha = (r2 * e2).sum(-1, keepdims=True) / (r2**2).sum(-1, keepdims=True)
    target = alpha * r2
    scores = 10 * np.log10((target**2).sum(-1) / ((e2 - target) ** 2).sum(-1))
    assert sisdr_loss(est, ref).item() == pytest.approx(-scores.mean(), rel=1e-7)
    assert sisdr_loss(3.0 * est, ref).item() == pytest.approx(sisdr_loss(est, ref).item())


def test_weighted_sdr_by_hand() -> None:
    ref = torch.tensor([1.0, 0.0], dtype=torch.float64)
    est = torch.tensor([1.0, 1.0], dtype=torch.float64)
    mix = torch.tensor([1.0, 1.0], dtype=torch.float64)
    # n = (0, 1), n̂ = (0, 0), α = 1/2, cos(y, ŷ) = 1/√2, cos(n, n̂) = 0
    value = weighted_sdr(est, ref, mix).item()
    assert value == pytest.approx(-0.5 / math.sqrt(2), abs=1e-9)
    assert weighted_sdr_loss(est, ref, mix).item() == pytest.approx(1 - 0.5 / math.sqrt(2))


def _np_wsdr(est: np.ndarray, ref: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """The weighted SDR of each row, eps-free: valid for signals far from zero."""
    noise, noise_est = mix - ref, mix - est

    def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))

    alpha = (ref**2).sum(-1) / ((ref**2).sum(-1) + (noise**2).sum(-1))
    return -alpha * cos(ref, est) - (1 - alpha) * cos(noise, noise_est)


def test_weighted_sdr_rows_are_channels_and_the_mixture_broadcasts_over_sources() -> None:
    ref = _randn(2, 3, 2, 300)
    est = ref + 0.7 * _randn(2, 3, 2, 300, seed=3)
    mix = ref.sum(1)
    scores = weighted_sdr(est, ref, mix)
    assert scores.shape == (2, 3, 2)
    expected = _np_wsdr(est.numpy(), ref.numpy(), mix.numpy()[:, None])
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-9)
    loss = weighted_sdr_loss(est, ref, mix).item()
    assert loss == pytest.approx(1 + expected.mean(), rel=1e-9)


def test_perfect_estimates_give_zero_time_loss() -> None:
    ref = _randn(2, 4, 2, 256).float()
    mix = ref.sum(1)
    torch.testing.assert_close(weighted_sdr(ref, ref, mix), torch.full((2, 4, 2), -1.0))
    assert abs(weighted_sdr_loss(ref, ref, mix).item()) < 1e-6
    assert abs(combination_weighted_sdr_loss(ref, ref, mix).item()) < 1e-6
    mag = ref.abs()[..., None, :]  # any non-negative 5-D tensor stands in for magnitudes
    assert abs(multi_domain_loss(mag, mag, ref, ref, mix).item()) < 1e-5


# ---------------------------------------------------------------- combinations


@pytest.mark.parametrize("nb_sources", [1, 2, 3, 4, 5, 6])
def test_source_combinations_are_every_proper_nonempty_subset(nb_sources: int) -> None:
    terms = source_combinations(nb_sources)
    assert len(terms) == 2**nb_sources - 2
    assert len(set(terms)) == len(terms), "no duplicates"
    assert all(list(t) == sorted(set(t)) for t in terms), "sorted indices, no repeats"
    assert all(1 <= len(t) <= nb_sources - 1 for t in terms), "neither empty nor full"
    assert all(0 <= i < nb_sources for t in terms for i in t)
    assert [len(t) for t in terms] == sorted(len(t) for t in terms)
    if nb_sources > 1:
        assert terms[:nb_sources] == [(i,) for i in range(nb_sources)]


def test_four_sources_give_the_fourteen_xumx_terms() -> None:
    terms = source_combinations(4)
    assert len(terms) == 14
    assert sum(len(t) == 2 for t in terms) == 6 and sum(len(t) == 3 for t in terms) == 4
    with pytest.raises(ValueError, match="at least one source"):
        source_combinations(0)


def _reference_multi_domain(
    est_mag: np.ndarray,
    ref_mag: np.ndarray,
    est_wave: np.ndarray,
    ref_wave: np.ndarray,
    mix: np.ndarray,
    mix_coef: float,
) -> tuple[float, float]:
    """Frequency and time terms by an independent enumeration (bit masks 1 … 2^N − 2)."""
    nb_sources = est_mag.shape[1]
    freq, time = [], []
    for mask in range(1, 2**nb_sources - 1):
        chosen = [s for s in range(nb_sources) if mask >> s & 1]
        freq.append(np.mean((est_mag[:, chosen].sum(1) - ref_mag[:, chosen].sum(1)) ** 2))
        wsdr = _np_wsdr(est_wave[:, chosen].sum(1), ref_wave[:, chosen].sum(1), mix)
        time.append(1 + wsdr.mean())
    return float(np.mean(freq)), mix_coef * float(np.mean(time))


def test_multi_domain_loss_matches_an_independent_enumeration() -> None:
    est_mag, ref_mag = _randn(2, 4, 2, 9, 7).abs(), _randn(2, 4, 2, 9, 7, seed=1).abs()
    ref_wave = _randn(2, 4, 2, 200, seed=2)
    est_wave = ref_wave + 0.8 * _randn(2, 4, 2, 200, seed=3)
    mix = ref_wave.sum(1)
    freq, time = _reference_multi_domain(
        est_mag.numpy(), ref_mag.numpy(), est_wave.numpy(), ref_wave.numpy(), mix.numpy(), 10.0
    )
    assert combination_magnitude_mse(est_mag, ref_mag).item() == pytest.approx(freq, rel=1e-9)
    value = combination_weighted_sdr_loss(est_wave, ref_wave, mix).item()
    assert value == pytest.approx(time / 10.0, rel=1e-9)
    total = multi_domain_loss(est_mag, ref_mag, est_wave, ref_wave, mix, mix_coef=10.0)
    assert total.item() == pytest.approx(freq + time, rel=1e-9)
    # no mixture given: the sum of the references, as in the recipe
    same = multi_domain_loss(est_mag, ref_mag, est_wave, ref_wave, None, mix_coef=10.0)
    assert same.item() == pytest.approx(total.item(), rel=1e-12)


def test_without_combination_only_single_sources_count() -> None:
    est_mag, ref_mag = _randn(2, 3, 1, 5, 4).abs(), _randn(2, 3, 1, 5, 4, seed=1).abs()
    ref_wave = _randn(2, 3, 1, 100, seed=2)
    est_wave = _randn(2, 3, 1, 100, seed=3)
    mix = ref_wave.sum(1)
    assert combination_magnitude_mse(est_mag, ref_mag, combination=False).item() == (
        pytest.approx(magnitude_mse_loss(est_mag, ref_mag).item())
    )
    assert combination_weighted_sdr_loss(est_wave, ref_wave, mix, combination=False).item() == (
        pytest.approx(weighted_sdr_loss(est_wave, ref_wave, mix).item())
    )
    # with a pair of terms (0,1) absent from the singles, the values differ
    assert combination_magnitude_mse(est_mag, ref_mag).item() != pytest.approx(
        combination_magnitude_mse(est_mag, ref_mag, combination=False).item()
    )


def test_a_single_source_is_its_own_term() -> None:
    mag = _randn(1, 1, 1, 3, 2).abs()
    assert combination_magnitude_mse(mag, 2 * mag).item() == pytest.approx(
        magnitude_mse_loss(mag, 2 * mag).item()
    )


# ---------------------------------------------------------------- gradients and errors

LossCall = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

WAVEFORM_LOSSES: dict[str, LossCall] = {
    "l1": l1_loss,
    "mse": mse_loss,
    "usdr": usdr_loss,
    "sisdr": sisdr_loss,
    "wsdr": lambda est, ref: weighted_sdr_loss(est, ref, ref.sum(1)),
    "combination_wsdr": lambda est, ref: combination_weighted_sdr_loss(est, ref),
}


@pytest.mark.parametrize("name", sorted(WAVEFORM_LOSSES))
@pytest.mark.parametrize("case", ["noisy", "perfect", "silent_source"])
def test_gradients_are_finite(name: str, case: str) -> None:
    ref = _randn(2, 4, 2, 128).float()
    if case == "silent_source":
        ref[:, 1] = 0.0
    est = ref.clone() if case == "perfect" else ref + 0.1 * _randn(2, 4, 2, 128, seed=5).float()
    if case == "silent_source":
        est[:, 1] = 0.0
    est.requires_grad_(True)
    loss = WAVEFORM_LOSSES[name](est, ref)
    loss.backward()
    assert torch.isfinite(loss)
    assert est.grad is not None and torch.isfinite(est.grad).all()


def test_spectral_and_multi_domain_gradients_are_finite() -> None:
    ref_mag = _randn(2, 4, 2, 6, 5).abs().float()
    est_mag = (ref_mag + 0.1).requires_grad_(True)
    ref_wave = _randn(2, 4, 2, 64).float()
    est_wave = (ref_wave * 0.9).requires_grad_(True)
    multi_domain_loss(est_mag, ref_mag, est_wave, ref_wave, ref_wave.sum(1)).backward()
    assert est_mag.grad is not None and torch.isfinite(est_mag.grad).all()
    assert est_wave.grad is not None and torch.isfinite(est_wave.grad).all()
    spec = torch.complex(_randn(1, 2, 3).float(), _randn(1, 2, 3, seed=1).float())
    est_spec = spec.clone().requires_grad_(True)
    tf_l1_loss(ref_wave, ref_wave * 0.5, est_spec, spec * 0.5).backward()
    assert est_spec.grad is not None and torch.isfinite(torch.view_as_real(est_spec.grad)).all()


def test_shape_errors() -> None:
    a, b = torch.zeros(2, 4, 2, 10), torch.zeros(2, 4, 2, 11)
    for loss in (l1_loss, mse_loss, usdr_loss, sisdr_loss, magnitude_mse_loss):
        with pytest.raises(ValueError, match="shape"):
            loss(a, b)
    with pytest.raises(ValueError, match="shape"):
        weighted_sdr_loss(a, b, a.sum(1))
    with pytest.raises(ValueError, match="does not broadcast"):
        weighted_sdr_loss(a, a, torch.zeros(2, 2, 9))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        usdr_loss(torch.zeros(5), torch.zeros(5))
    with pytest.raises(ValueError, match="complex"):
        complex_l1_loss(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="magnitudes"):
        magnitude_mse_loss(torch.zeros(3, dtype=torch.complex64), torch.zeros(3))
    with pytest.raises(ValueError, match="expects magnitudes"):
        combination_magnitude_mse(a, a)
    with pytest.raises(ValueError, match="expects waveforms"):
        combination_weighted_sdr_loss(a[0], a[0])
    with pytest.raises(ValueError, match="mixture"):
        combination_weighted_sdr_loss(a, a, torch.zeros(2, 2, 9))
    mag = torch.zeros(2, 4, 2, 5, 3)
    with pytest.raises(ValueError, match="shape"):
        multi_domain_loss(mag, mag[..., :2], a, a)


def test_combination_enumeration_does_not_mix_up_batch_items() -> None:
    # Two batch items whose errors sit in different sources: each term sums within an item.
    ref_mag = torch.zeros(2, 2, 1, 1, 1, dtype=torch.float64)
    est_mag = ref_mag.clone()
    est_mag[0, 0] = 1.0
    est_mag[1, 1] = 2.0
    # terms (0,) and (1,): item 0 errs by 1 in term (0,), item 1 by 2 in term (1,)
    expected = np.mean([1.0, 0.0, 0.0, 4.0])
    assert combination_magnitude_mse(est_mag, ref_mag).item() == pytest.approx(expected)
    assert list(itertools.chain.from_iterable(source_combinations(2))) == [0, 1]
