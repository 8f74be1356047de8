"""X-UMX: size, bridging semantics, equivalence with Open-Unmix, asteroid keys, training views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from stemkit.artifacts.asteroid import convert_asteroid_state_dict
from stemkit.artifacts.checkpoint import load_checkpoint, model_from_checkpoint
from stemkit.models import build
from stemkit.models.spectral import Separator, SpectralOptions
from stemkit.models.umx import OpenUnmix
from stemkit.models.xumx import XUMX
from stemkit.train.config import resolve_config
from stemkit.train.loop import train
from stemkit.train.objectives import compute_loss

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SOURCES = ("bass", "drums", "vocals", "other")


def _nb_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _small(**kwargs: object) -> XUMX:
    options: dict[str, object] = {
        "sources": list(SOURCES),
        "hidden_size": 16,
        "nb_layers": 2,
        "n_fft": 128,
        "n_hop": 32,
        "sample_rate": 8000,
        "bandwidth": 3000,
    }
    options.update(kwargs)
    torch.manual_seed(0)
    model = build("xumx", **options)
    assert isinstance(model, XUMX)
    # non-trivial scalers and batch-norm statistics, so that every term of the forward matters
    with torch.no_grad():
        for core in model.target_models.values():
            for name, param in core.named_parameters():
                if "mean" in name or "scale" in name or name.startswith("bn"):
                    param.add_(0.3 * torch.randn_like(param))
            for name, buffer in core.named_buffers():
                if name.endswith("running_var"):
                    buffer.uniform_(0.5, 2.0)
                elif name.endswith("running_mean"):
                    buffer.normal_(0.0, 0.3)
    return model


def test_parameter_count_equals_four_umx_targets() -> None:
    model = build("xumx")
    assert _nb_params(model) == 35_573_392 == 4 * 8_893_348
    assert model.sources == ("vocals", "drums", "bass", "other")
    for core in model.target_models.values():
        assert core.nb_bins == 1487 and core.nb_output_bins == 2049 and core.hidden_size == 512
    # the same keys as the Open-Unmix separator, so UMX targets can seed the branches
    assert list(model.state_dict()) == list(build("umx").state_dict())


@pytest.mark.parametrize("nb_channels", [1, 2])
@pytest.mark.parametrize("niter", [0, 1])
def test_shapes(nb_channels: int, niter: int) -> None:
    model = _small(nb_channels=nb_channels, niter=niter).eval()
    mixture = torch.randn(2, nb_channels, 900)
    with torch.no_grad():
        stems = model(mixture)
        mags = model.magnitudes(mixture)
        estimates = model.forward_magnitudes(mags)
    assert stems.shape == (2, 4, nb_channels, 900)
    assert mags.shape == (2, nb_channels, 65, 1 + 900 // 32)
    assert estimates.shape == (2, 4, nb_channels, 65, mags.shape[-1])
    assert (estimates >= 0).all()
    with pytest.raises(ValueError, match="X-UMX expects"):
        model.forward_magnitudes(torch.rand(2, nb_channels, 64, 5))


def test_without_bridging_each_branch_is_its_open_unmix_core() -> None:
    model = _small(bridging=False).eval()
    mix_mag = torch.rand(2, 2, 65, 9)
    with torch.no_grad():
        joint = model.forward_magnitudes(mix_mag)
        separate = torch.stack([core(mix_mag) for core in model.target_models.values()], dim=1)
    torch.testing.assert_close(joint, separate, rtol=1e-6, atol=1e-7)


def test_single_branch_bridging_is_open_unmix() -> None:
    # the average over one branch is the branch itself
    model = _small(sources=["vocals"]).eval()
    mix_mag = torch.rand(1, 2, 65, 6)
    core = model.target_models["vocals"]
    assert isinstance(core, OpenUnmix)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_magnitudes(mix_mag)[:, 0], core(mix_mag))


def _reference_bridged(model: XUMX, mix_mag: Tensor) -> Tensor:
    """X-UMX written out directly from the description (spec-notes §3), one frame layout."""
    cores = list(model.target_models.values())
    x = mix_mag.permute(3, 0, 1, 2)  # (frames, batch, channels, bins)
    frames, batch, channels, _ = x.shape
    encoded = []
    for core in cores:
        h = (x[..., : core.nb_bins] + core.input_mean) * core.input_scale
        h = torch.tanh(core.bn1(core.fc1(h.reshape(frames * batch, -1))))
        encoded.append(h.reshape(frames, batch, -1))
    bridge1 = sum(encoded) / len(cores)
    concatenated = [
        torch.cat([enc, core.lstm(bridge1)[0]], dim=-1)
        for core, enc in zip(cores, encoded, strict=True)
    ]
    bridge2 = sum(concatenated) / len(cores)
    outputs = []
    for core in cores:
        h = torch.relu(core.bn2(core.fc2(bridge2.reshape(frames * batch, -1))))
        h = core.bn3(core.fc3(h)).reshape(frames, batch, channels, -1)
        mask = torch.relu(h * core.output_scale + core.output_mean)
        outputs.append((mask * x).permute(1, 2, 3, 0))
    return torch.stack(outputs, dim=1)


def test_bridged_forward_matches_direct_computation() -> None:
    model = _small().eval()
    mix_mag = torch.rand(2, 2, 65, 7)
    with torch.no_grad():
        torch.testing.assert_close(
            model.forward_magnitudes(mix_mag), _reference_bridged(model, mix_mag)
        )


@pytest.mark.parametrize("bridging", [True, False])
def test_bridging_couples_the_sources(bridging: bool) -> None:
    model = _small(bridging=bridging).eval()
    mix_mag = torch.rand(1, 2, 65, 8)
    with torch.no_grad():
        before = model.forward_magnitudes(mix_mag)
        # change only the input statistics of the bass branch
        model.target_models["bass"].input_mean.add_(0.5)
        model.target_models["bass"].input_scale.mul_(1.5)
        after = model.forward_magnitudes(mix_mag)
    bass = SOURCES.index("bass")
    assert not torch.allclose(before[:, bass], after[:, bass])
    for index, name in enumerate(SOURCES):
        if name == "bass":
            continue
        changed = not torch.allclose(before[:, index], after[:, index])
        assert changed is bridging, name


def test_gradient_reaches_every_parameter() -> None:
    model = _small().train()
    mixture, stems = torch.randn(2, 2, 1500), torch.randn(2, 4, 2, 1500)
    loss = compute_loss(model, mixture, stems, "spectral_mse")
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    # bridge 1: a source's loss alone reaches the encoders of all the other branches
    model.zero_grad()
    estimates = model.forward_magnitudes(model.magnitudes(mixture))
    estimates[:, SOURCES.index("vocals")].sum().backward()
    for name, core in model.target_models.items():
        assert core.fc1.weight.grad is not None and core.fc1.weight.grad.abs().sum() > 0, name
        if name != "vocals":
            assert core.fc3.weight.grad is None or core.fc3.weight.grad.abs().sum() == 0


def test_is_a_separator_for_the_trainer() -> None:
    model = _small()
    assert isinstance(model, Separator) and model.targets == SOURCES
    assert "bridging=True" in repr(model)
    assert not model.causal
    assert _small(unidirectional=True).causal


def test_branches_must_agree() -> None:
    cores = {
        "a": OpenUnmix(65, 2, 16, max_bin=40),
        "b": OpenUnmix(65, 2, 8, max_bin=40),
    }
    with pytest.raises(ValueError, match="same"):
        XUMX(cores, SpectralOptions(sample_rate=8000, audio_channels=2, n_fft=128, n_hop=32))
    with pytest.raises(ValueError, match="n_fft"):
        XUMX(
            {"a": OpenUnmix(65, 2, 16)},
            SpectralOptions(sample_rate=8000, audio_channels=2, n_fft=256, n_hop=64),
        )
    with pytest.raises(TypeError, match="OpenUnmix"):
        XUMX(
            {"a": nn.Linear(2, 2)},  # type: ignore[dict-item]
            SpectralOptions(sample_rate=8000, audio_channels=2, n_fft=128, n_hop=32),
        )


class _AsteroidLayout(nn.Module):
    """The module tree of asteroid's XUMX (key names only; spec-notes §3 and its source)."""

    def __init__(self, sources: tuple[str, ...], bins: int, max_bin: int, hidden: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Module())
        self.encoder[0].window = nn.Parameter(torch.hann_window(128), requires_grad=False)
        self.layer_enc = nn.ModuleDict({s: nn.Module() for s in sources})
        self.layer_lstm = nn.ModuleDict(
            {s: nn.LSTM(hidden, hidden // 2, 2, bidirectional=True) for s in sources}
        )
        self.layer_dec = nn.ModuleDict({s: nn.Module() for s in sources})
        for s in sources:
            self.layer_enc[s].enc = nn.Sequential(
                nn.Linear(2 * max_bin, hidden, bias=False), nn.BatchNorm1d(hidden)
            )
            self.layer_dec[s].dec = nn.Sequential(
                nn.Linear(2 * hidden, hidden, bias=False),
                nn.BatchNorm1d(hidden),
                nn.ReLU(),
                nn.Linear(hidden, 2 * bins, bias=False),
                nn.BatchNorm1d(2 * bins),
            )
        scalers = {}
        for s in sources:
            scalers[f"input_mean_{s}"] = nn.Parameter(torch.randn(max_bin))
            scalers[f"input_scale_{s}"] = nn.Parameter(torch.rand(max_bin) + 0.5)
            scalers[f"output_mean_{s}"] = nn.Parameter(torch.rand(bins) + 0.5)
            scalers[f"output_scale_{s}"] = nn.Parameter(torch.rand(bins) + 0.5)
        self.mean_scale = nn.ParameterDict(scalers)
        self.decoder = nn.Module()
        self.decoder.window = self.encoder[0].window


def _asteroid_model(kind: str, core: OpenUnmix) -> nn.Module:
    """asteroid's XUMX at ``core``'s sizes: the real class, or the key-name stand-in (always
    run, since asteroid is an optional reference). asteroid 0.7.0's ``XUMX`` refuses to build
    under torch 2; its network is ``BrokenXUMX`` (see tests/parity/test_xumx_asteroid.py)."""
    torch.manual_seed(1)
    if kind == "stand-in":
        return _AsteroidLayout(SOURCES, core.nb_output_bins, core.nb_bins, core.hidden_size)
    x_umx = pytest.importorskip("asteroid.models.x_umx")
    model = x_umx.BrokenXUMX(
        list(SOURCES),
        window_length=128,
        in_chan=128,
        n_hop=32,
        hidden_size=core.hidden_size,
        nb_channels=2,
        sample_rate=8000,
        nb_layers=2,
        max_bin=core.nb_bins,
    )
    with torch.no_grad():
        for name, param in model.mean_scale.items():
            param.copy_(
                torch.rand(param.shape) + 0.5 if "scale" in name else torch.randn(param.shape)
            )
    assert isinstance(model, nn.Module)
    return model


@pytest.mark.filterwarnings("ignore:dropout option adds dropout:UserWarning")
@pytest.mark.parametrize("kind", ["stand-in", "asteroid"])
def test_asteroid_state_dict_loads_after_conversion(kind: str) -> None:
    model = _small()
    core = model.target_models["bass"]
    assert isinstance(core, OpenUnmix)
    asteroid: Any = _asteroid_model(kind, core)
    state = asteroid.state_dict()
    assert "encoder.0.window" in state and "mean_scale.input_mean_bass" in state
    converted = convert_asteroid_state_dict(state)
    model.load_state_dict(converted, strict=True)
    torch.testing.assert_close(
        model.target_models["drums"].fc3.weight, asteroid.layer_dec["drums"].dec[3].weight
    )
    torch.testing.assert_close(
        model.target_models["other"].input_scale, asteroid.mean_scale["input_scale_other"]
    )
    torch.testing.assert_close(
        model.target_models["vocals"].lstm.weight_hh_l1_reverse,
        asteroid.layer_lstm["vocals"].weight_hh_l1_reverse,
    )
    with pytest.raises(ValueError, match="unknown keys"):
        convert_asteroid_state_dict({**state, "layer_enc.bass.enc.2.weight": torch.zeros(1)})


def test_preset_builds_the_recipe_model() -> None:
    config = resolve_config(CONFIGS / "xumx_musdb18hq.yaml")
    assert config.model.name == "xumx"
    assert config.data.sources == list(SOURCES)
    assert config.optim.batch_size == 14
    model = build(config.model.name, sources=config.data.sources, **config.model.kwargs)
    assert _nb_params(model) == 35_573_392


def test_trains_and_reloads_through_the_standard_loop(hq_tree: Path, tmp_path: Path) -> None:
    overrides = [
        f"data.root={hq_tree}",
        f"run_dir={tmp_path / 'run'}",
        "model.name=xumx",
        "model.kwargs.hidden_size=8",
        "model.kwargs.nb_layers=1",
        "model.kwargs.n_fft=256",
        "model.kwargs.n_hop=64",
        "data.segment=0.5",
        "data.samples_per_track=2",
        "optim.batch_size=2",
        "optim.epochs=2",
    ]
    best = train(resolve_config(None, overrides), progress=False)
    payload = load_checkpoint(best)
    assert payload["model_name"] == "xumx"
    model = model_from_checkpoint(payload)
    assert isinstance(model, XUMX) and model.bridging
    # the input statistics were fitted on the training mixtures (then trained per branch)
    for core in model.target_models.values():
        assert core.input_mean.detach().abs().sum() > 0
    assert model(torch.zeros(1, 2, 1000)).shape == (1, 4, 2, 1000)
