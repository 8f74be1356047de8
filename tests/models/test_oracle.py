"""Oracle separators (IBM1/2, IRM1/2, MWF): mask invariants, sigsep parity, errors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.signal import istft, stft

from stemkit import MUSDB_SOURCES
from stemkit.errors import StemkitError
from stemkit.inference import separate
from stemkit.metrics.sdr import usdr
from stemkit.models import available, build
from stemkit.models.oracle import (
    KINDS,
    SPATIAL_FLOOR,
    OracleReferenceError,
    OracleSeparator,
    ideal_binary_mask,
    ideal_ratio_masks,
    oracle_wiener,
)

RATE = 44100


def _oracle(kind: str, **kwargs: object) -> OracleSeparator:
    model = build(kind, **kwargs)
    assert isinstance(model, OracleSeparator)
    return model


def _run(kind: str, stems: torch.Tensor, **kwargs: object) -> torch.Tensor:
    """Separate the sum of ``stems`` ``(sources, channels, time)`` with the oracle ``kind``."""
    model = _oracle(kind, **kwargs)
    with model.references(stems):
        return model(stems.sum(dim=0)[None])[0]


def test_registry_names_defaults_and_flag() -> None:
    assert set(KINDS) <= set(available())
    for kind in KINDS:
        model = _oracle(kind)
        assert model.kind == kind
        assert model.requires_references is True
        assert model.sources == MUSDB_SOURCES
        assert (model.sample_rate, model.audio_channels) == (44100, 2)
        assert (model.stft.n_fft, model.stft.n_hop) == (2048, 1024)
        assert model.model_name == kind
    assert [_oracle(k).alpha for k in ("ibm1", "ibm2", "irm1", "irm2")] == [1.0, 2.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="unknown oracle kind"):
        OracleSeparator("irm3")


def test_binary_mask_threshold_follows_alpha() -> None:
    mix = torch.ones(3, dtype=torch.complex128)
    source = torch.tensor([0.75, 0.6, 0.4], dtype=torch.complex128)
    # |Y|/|X| = 0.75, 0.6, 0.4 against θ = 0.5; squared: 0.5625, 0.36, 0.16
    assert ideal_binary_mask(source, mix, alpha=1.0).tolist() == [1.0, 1.0, 0.0]
    assert ideal_binary_mask(source, mix, alpha=2.0).tolist() == [1.0, 0.0, 0.0]
    silent = torch.zeros(3, dtype=torch.complex128)
    assert ideal_binary_mask(silent, silent).tolist() == [0.0, 0.0, 0.0]


def test_masks_are_bounded_and_ratio_masks_sum_to_one() -> None:
    gen = torch.Generator().manual_seed(0)
    specs = torch.randn(4, 2, 65, 30, dtype=torch.complex128, generator=gen)
    specs[:, :, :5] = 0  # bins where every source is silent
    specs[1:, :, 5:10] = 0  # bins where only one source sounds
    mix = specs.sum(dim=0)
    for alpha in (1.0, 2.0):
        masks = ideal_ratio_masks(specs, alpha)
        assert masks.min() >= 0 and masks.max() <= 1
        torch.testing.assert_close(
            masks[:, :, 5:].sum(dim=0), torch.ones(2, 60, 30, dtype=masks.dtype)
        )
        assert masks[:, :, :5].abs().max() == 0
        torch.testing.assert_close(masks[0, :, 5:10], torch.ones(2, 5, 30, dtype=masks.dtype))
        binary = torch.stack([ideal_binary_mask(s, mix, alpha) for s in specs])
        assert set(binary.unique().tolist()) <= {0.0, 1.0}
        assert binary[0, :, 5:10].min() == 1 and binary[1:, :, 5:10].max() == 0


def _sigsep_like(stems: np.ndarray, kind: str) -> np.ndarray:
    """Independent scipy formulation of the sigsep IBM/IRM definitions."""
    alpha = 1.0 if kind.endswith("1") else 2.0
    mix = stems.sum(axis=0)
    mix_spec = stft(mix, nperseg=2048)[-1]
    specs = np.stack([stft(s, nperseg=2048)[-1] for s in stems])
    eps = np.finfo(np.float64).eps
    if kind.startswith("ibm"):
        masks = (np.abs(specs) ** alpha / (eps + np.abs(mix_spec) ** alpha) >= 0.5).astype(float)
    else:
        powers = np.abs(specs) ** alpha
        masks = powers / (eps + powers.sum(axis=0))
    return np.stack([istft(mix_spec * m)[1][..., : mix.shape[-1]] for m in masks])


@pytest.mark.parametrize("kind", ["ibm1", "ibm2", "irm1", "irm2"])
def test_masks_match_a_scipy_formulation_away_from_the_edges(
    kind: str, make_stems: Callable[..., np.ndarray]
) -> None:
    stems = make_stems(1.0, seed=7).astype(np.float64)
    ours = _run(kind, torch.from_numpy(stems)).numpy()
    reference = _sigsep_like(stems, kind)
    # Same edges (zero padding); only the eps floors sit at another scale (no 1/Σw scaling).
    np.testing.assert_allclose(ours, reference, atol=1e-8, rtol=0)
    np.testing.assert_allclose(usdr(stems, ours), usdr(stems, reference), atol=1e-6)


def _sigsep_like_mwf(stems: np.ndarray, floor: float) -> np.ndarray:
    """Independent numpy formulation of sigsep's MWF oracle, with a spatial floor."""
    eps = np.finfo(np.float64).eps
    mix_spec = stft(stems.sum(axis=0), nperseg=2048)[-1]  # (C, F, T)
    nb_channels = mix_spec.shape[0]
    eye = np.eye(nb_channels)
    psds, covs = [], []
    for source in stems:
        # Undo scipy's 1/Σw scaling so that eps sits at the same level as in stemkit.
        spec = stft(source, nperseg=2048)[-1] * 1024
        outer = np.einsum("cft,dft->ftcd", spec, spec.conj())
        psd = np.mean(np.abs(spec) ** 2, axis=0)
        cov = np.mean(outer / (eps + psd[..., None, None]), axis=1)  # (F, C, C)
        cov = cov * nb_channels / np.trace(cov, axis1=-2, axis2=-1)[:, None, None] + floor * eye
        inv = np.linalg.inv(cov)
        psd = np.real(np.einsum("fcd,ftdc->ft", inv, outer)) / nb_channels
        psds.append(psd)
        covs.append(cov)
    mix_cov = sum(p[..., None, None] * r[:, None] for p, r in zip(psds, covs, strict=True))
    inv_mix = np.linalg.inv(mix_cov)
    out = []
    for psd, cov in zip(psds, covs, strict=True):
        gain = psd[..., None, None] * np.einsum("fcd,ftde->ftce", cov, inv_mix)
        out.append(istft(np.einsum("ftcd,dft->cft", gain, mix_spec))[1][..., : stems.shape[-1]])
    return np.stack(out)


def test_mwf_matches_a_numpy_formulation(make_stems: Callable[..., np.ndarray]) -> None:
    rng = np.random.default_rng(2)
    stems = make_stems(0.5, seed=2).astype(np.float64)
    # Channel-independent noise makes every spatial covariance full rank, as in real stems.
    stems += 1e-3 * rng.standard_normal(stems.shape)
    ours = _run("mwf", torch.from_numpy(stems)).numpy()
    reference = _sigsep_like_mwf(stems, floor=SPATIAL_FLOOR)
    np.testing.assert_allclose(ours, reference, atol=1e-8, rtol=0)


def test_ratio_oracles_add_up_to_the_mixture(make_stems: Callable[..., np.ndarray]) -> None:
    stems = torch.from_numpy(make_stems(1.0, seed=1))
    mix = stems.sum(dim=0)
    for kind in ("irm1", "irm2", "mwf"):
        estimates = _run(kind, stems)
        assert estimates.shape == stems.shape and estimates.dtype == torch.float32
        torch.testing.assert_close(estimates.sum(dim=0), mix, atol=2e-6, rtol=0)


def test_mwf_is_exact_where_one_source_sounds() -> None:
    gen = torch.Generator().manual_seed(3)
    n = RATE // 2
    third = n // 3
    stems = torch.zeros(4, 2, n, dtype=torch.float64)
    # vocals (panned, rank one) in the first third, bass (two independent channels) in the
    # last: more than two windows apart, so no frame holds both; drums and other are silent.
    pan = torch.tensor([[0.9], [0.4]], dtype=torch.float64)
    stems[0, :, :third] = torch.randn(1, third, generator=gen, dtype=torch.float64) * pan
    stems[2, :, -third:] = torch.randn(2, third, generator=gen, dtype=torch.float64) * 0.3
    estimates = _run("mwf", stems)
    assert (estimates - stems).abs().max() < 1e-9
    assert estimates[[1, 3]].abs().max() == 0


def test_mwf_single_stereo_source_among_silent_ones_comes_back(
    make_stems: Callable[..., np.ndarray],
) -> None:
    stems = torch.from_numpy(make_stems(0.5, seed=4))
    stems[[0, 1, 3]] = 0
    estimates = _run("mwf", stems)
    torch.testing.assert_close(estimates[2], stems[2], atol=1e-6, rtol=0)
    assert estimates[[0, 1, 3]].abs().max() == 0


def test_mono_mwf_is_the_power_ratio_mask(make_stems: Callable[..., np.ndarray]) -> None:
    # With one channel R_j is a scalar: the Wiener gain reduces to v_j / Σ v_k = IRM2.
    stems = torch.from_numpy(make_stems(0.5, seed=5, channels=1)).double()
    mwf = _run("mwf", stems, audio_channels=1)
    irm2 = _run("irm2", stems, audio_channels=1)
    torch.testing.assert_close(mwf, irm2, atol=1e-7, rtol=0)


def test_mwf_functional_form_exploits_spatial_diversity() -> None:
    # Two sources panned to different directions, active in the same bins: the power ratio
    # mask cannot split them, the spatial filter can.
    gen = torch.Generator().manual_seed(6)
    sig = torch.randn(2, 1, 40, 20, dtype=torch.complex128, generator=gen)
    pans = torch.tensor([[1.0, 0.2], [0.3, 1.0]], dtype=torch.complex128)[:, :, None, None]
    sources = sig * pans
    estimates = oracle_wiener(sources, sources.sum(dim=0))
    torch.testing.assert_close(estimates, sources, atol=1e-4, rtol=0)
    masked = ideal_ratio_masks(sources) * sources.sum(dim=0)
    assert (masked - sources).abs().max() > 0.1


def test_batched_references() -> None:
    gen = torch.Generator().manual_seed(8)
    stems = torch.randn(2, 4, 2, 4096, generator=gen) * 0.1
    model = _oracle("irm2")
    model.set_references(stems)
    batched = model(stems.sum(dim=1))
    for i in range(2):
        with model.references(stems[i]):
            torch.testing.assert_close(batched[i : i + 1], model(stems[i].sum(0)[None]))


def test_missing_and_mismatched_references_raise() -> None:
    model = _oracle("ibm1")
    mix = torch.zeros(1, 2, 4096)
    with pytest.raises(OracleReferenceError, match="set_references") as info:
        model(mix)
    assert isinstance(info.value, StemkitError)
    with pytest.raises(OracleReferenceError, match="4 sources"):
        model.set_references(torch.zeros(3, 2, 4096))
    with pytest.raises(OracleReferenceError, match="2 channel"):
        model.set_references(torch.zeros(4, 1, 4096))
    with pytest.raises(OracleReferenceError, match="sources, channels, time"):
        model.set_references(torch.zeros(4, 4096))
    with pytest.raises(OracleReferenceError, match="float"):
        model.set_references(torch.zeros(4, 2, 4096, dtype=torch.int16))
    model.set_references(np.zeros((4, 2, 4096), dtype=np.float32))
    with pytest.raises(OracleReferenceError, match="same length"):
        model(torch.zeros(1, 2, 4000))
    with pytest.raises(OracleReferenceError, match="batch"):
        model(torch.zeros(2, 2, 4096))
    model.set_references(None)
    with pytest.raises(OracleReferenceError):
        model(mix)


def test_context_restores_previous_references() -> None:
    model = _oracle("irm1")
    first = torch.full((4, 2, 4096), 0.1)
    model.set_references(first)
    with model.references(torch.zeros(4, 2, 2048)) as inner:
        assert inner is model
        assert model(torch.zeros(1, 2, 2048)).shape == (1, 4, 2, 2048)
    assert model(first.sum(0)[None]).shape == (1, 4, 2, 4096)
    with pytest.raises(RuntimeError), model.references(torch.zeros(4, 2, 2048)):
        raise RuntimeError
    assert model(first.sum(0)[None]).shape == (1, 4, 2, 4096)


def test_chunked_inference_is_refused_whole_track_works(
    make_stems: Callable[..., np.ndarray],
) -> None:
    stems = torch.from_numpy(make_stems(1.0, seed=9))
    model = _oracle("irm2")
    with model.references(stems):
        whole = separate(model, stems.sum(dim=0), segment=None)
        torch.testing.assert_close(whole, model(stems.sum(0)[None])[0])
        with pytest.raises(OracleReferenceError, match="segment=None"):
            separate(model, stems.sum(dim=0), segment=0.25)
