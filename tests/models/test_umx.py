"""Open-Unmix core and Separator: sizes, upstream state_dict keys, shapes, causality, gradients."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import import_openunmix
from stemkit.models import build
from stemkit.models.spectral import Separator
from stemkit.models.umx import OpenUnmix

UMXHQ_PER_TARGET = 8_893_348
UMXL_PER_TARGET = 28_257_188
UMXSE_PER_TARGET = 1_583_622


def _nb_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_published_configurations() -> None:
    assert _nb_params(OpenUnmix(2049, 2, 512, max_bin=1487)) == UMXHQ_PER_TARGET
    assert _nb_params(OpenUnmix(2049, 2, 1024, max_bin=1487)) == UMXL_PER_TARGET
    assert _nb_params(OpenUnmix(513, 1, 256, max_bin=513)) == UMXSE_PER_TARGET
    separator = build("umx")
    assert _nb_params(separator) == 4 * UMXHQ_PER_TARGET == 35_573_392
    for core in separator.target_models.values():
        assert core.nb_bins == 1487 and core.nb_output_bins == 2049


def test_state_dict_keys_equal_upstream() -> None:
    upstream = import_openunmix()
    ours = OpenUnmix(2049, 2, 512, max_bin=1487)
    theirs = upstream.OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=512, max_bin=1487)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert ours.state_dict()[key].shape == value.shape, key
    # upstream weights load unchanged, strictly
    ours.load_state_dict(theirs.state_dict(), strict=True)

    separator = build("umx")
    upstream_sep = upstream.Separator(
        {name: upstream.OpenUnmix(2049, 2, 512, max_bin=1487) for name in separator.targets}
    )
    # upstream's Separator also saves its sample rate and STFT windows; ours keeps only cores
    expected = [
        k
        for k in upstream_sep.state_dict()
        if k not in {"sample_rate", "stft.window", "istft.window"}
    ]
    assert list(separator.state_dict()) == expected
    assert all(k.startswith("target_models.vocals.") for k in list(separator.state_dict())[:20])


def test_unidirectional_keys_and_lstm_size() -> None:
    core = OpenUnmix(2049, 2, 512, unidirectional=True, max_bin=1487)
    keys = list(core.state_dict())
    assert "lstm.weight_ih_l0" in keys and not any(k.endswith("_reverse") for k in keys)
    assert core.lstm.hidden_size == 512


def test_set_statistics_stores_negated_mean_and_floored_inverse_std() -> None:
    core = OpenUnmix(nb_bins=9, nb_channels=1, hidden_size=8, max_bin=5)
    mean = np.arange(9, dtype=np.float64)
    std = np.array([2.0, 0.5, 0.0, 1e-9, 4.0, 100.0, 100.0, 100.0, 100.0])
    core.set_statistics(mean, std)
    torch.testing.assert_close(core.input_mean.detach(), -torch.arange(5.0))
    # max over the kept bins is 4.0 → floor 4e-4
    expected = torch.tensor([0.5, 2.0, 1 / 4e-4, 1 / 4e-4, 0.25])
    torch.testing.assert_close(core.input_scale.detach(), expected)
    built = OpenUnmix(9, 1, 8, max_bin=5, input_mean=mean, input_scale=std)
    torch.testing.assert_close(built.input_scale, core.input_scale)
    with pytest.raises(ValueError, match="bins"):
        core.set_statistics(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="non-finite"):
        core.set_statistics(np.full(9, np.nan), np.ones(9))


@pytest.mark.parametrize("nb_channels", [1, 2])
def test_core_shapes(nb_channels: int) -> None:
    core = OpenUnmix(nb_bins=65, nb_channels=nb_channels, hidden_size=16, max_bin=40).eval()
    x = torch.rand(3, nb_channels, 65, 11)
    y = core(x)
    assert y.shape == x.shape
    assert (y >= 0).all()
    with pytest.raises(ValueError, match="expects"):
        core(torch.rand(3, 3 - nb_channels, 65, 11))


def test_core_output_is_a_mask_of_its_input() -> None:
    core = OpenUnmix(nb_bins=65, nb_channels=2, hidden_size=16).eval()
    x = torch.rand(2, 2, 65, 7)
    x[..., 3] = 0.0
    assert torch.equal(core(x)[..., 3], torch.zeros(2, 2, 65))


def test_unidirectional_core_is_causal() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 2, 65, 20)
    future = x.clone()
    future[..., 12:] = torch.rand(1, 2, 65, 8)
    causal = OpenUnmix(65, 2, 16, unidirectional=True).eval()
    with torch.no_grad():
        a, b = causal(x), causal(future)
    torch.testing.assert_close(a[..., :12], b[..., :12], rtol=0, atol=0)
    assert not torch.allclose(a[..., 12:], b[..., 12:])
    acausal = OpenUnmix(65, 2, 16, unidirectional=False).eval()
    with torch.no_grad():
        assert not torch.allclose(acausal(x)[..., :12], acausal(future)[..., :12])


def _small_separator(**kwargs: object) -> torch.nn.Module:
    options: dict[str, object] = {
        "hidden_size": 16,
        "n_fft": 256,
        "n_hop": 64,
        "sample_rate": 8000,
        "bandwidth": 3000,
    }
    options.update(kwargs)
    return build("umx", **options)


@pytest.mark.parametrize("nb_channels", [1, 2])
@pytest.mark.parametrize("niter", [0, 1])
def test_separator_shapes(nb_channels: int, niter: int) -> None:
    model = _small_separator(nb_channels=nb_channels, niter=niter).eval()
    mixture = torch.randn(2, nb_channels, 1234)
    with torch.no_grad():
        stems = model(mixture)
    assert stems.shape == (2, 4, nb_channels, 1234)
    assert model.sources == ("vocals", "drums", "bass", "other")
    assert model.audio_channels == nb_channels and model.sample_rate == 8000


def test_separator_training_views() -> None:
    model = _small_separator()
    mixture = torch.randn(2, 2, 1000)
    spec = model.mixture_spectrogram(mixture)
    assert spec.is_complex() and spec.shape == (2, 2, 129, 1 + 1000 // 64)
    mags = model.magnitudes(mixture, center=False)
    assert mags.shape == (2, 2, 129, 1 + (1000 - 256) // 64)
    targets = torch.randn(2, 4, 2, 1000)
    assert model.magnitudes(targets, center=False).shape == (2, 4, 2, 129, mags.shape[-1])
    assert model.forward_magnitudes(mags).shape == (2, 4, 2, 129, mags.shape[-1])
    mono = _small_separator(nb_channels=1)
    assert mono.magnitudes(mixture).shape == (2, 1, 129, 1 + 1000 // 64)


def test_niter0_estimate_is_magnitude_times_mixture_phase() -> None:
    model = _small_separator().eval()
    mixture = torch.randn(1, 2, 2000)
    with torch.no_grad():
        stems = model(mixture)
        mix_stft = model.mixture_spectrogram(mixture)
        est_mag = model.forward_magnitudes(mix_stft.abs())
        expected = model.istft(est_mag * torch.exp(1j * mix_stft.angle()).unsqueeze(1), 2000)
    torch.testing.assert_close(stems, expected, rtol=1e-5, atol=1e-6)


def test_gradient_flows_through_training_views_and_waveform_path() -> None:
    model = _small_separator(niter=1, nb_layers=2)
    model.train()
    mixture, targets = torch.randn(2, 2, 2000), torch.randn(2, 4, 2, 2000)
    estimate = model.forward_magnitudes(model.magnitudes(mixture, center=False))
    loss = torch.nn.functional.mse_loss(estimate, model.magnitudes(targets, center=False))
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    model.zero_grad()
    model(mixture).pow(2).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_registry_kwargs_are_json_and_lists_work() -> None:
    kwargs = {"sources": ["vocals", "accompaniment"], "hidden_size": 16, "residual": True}
    model = build("umx", **kwargs)
    assert json.loads(json.dumps(model.init_kwargs)) == kwargs
    assert model.model_name == "umx"
    assert model.sources == ("vocals", "accompaniment", "residual")
    assert model.targets == ("vocals", "accompaniment")
    assert isinstance(model, Separator)


def test_causal_flag() -> None:
    assert _small_separator(unidirectional=True).causal
    assert not _small_separator(unidirectional=True, niter=1).causal
    assert not _small_separator().causal


def test_separator_errors() -> None:
    model = _small_separator()
    with pytest.raises(ValueError, match="stereo"):
        model(torch.randn(1, 1, 2000))
    with pytest.raises(ValueError, match="batch, channels, time"):
        model(torch.randn(2, 2000))
    single = _small_separator(sources=["vocals"], niter=1)
    with pytest.raises(ValueError, match="residual=True"):
        single(torch.randn(1, 2, 2000))
    with_residual = _small_separator(sources=["vocals"], niter=1, residual=True).eval()
    assert with_residual(torch.randn(1, 2, 2000)).shape == (1, 2, 2, 2000)
    with pytest.raises(ValueError, match="unique"):
        build("umx", sources=["a", "a"])
