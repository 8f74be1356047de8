"""Band-split RNN and variants: parameter counts, shapes, gradients, mask identity, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from stemkit.artifacts.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from stemkit.errors import StemkitError
from stemkit.models import available, build
from stemkit.models.blocks.mask import MaskEstimator
from stemkit.models.bsrnn import BSRNN
from stemkit.train.config import resolve_config
from stemkit.train.loop import train

RATE = 44100
TINY: dict[str, Any] = {"n_features": 8, "n_layers": 1, "fac_sep": 1, "fac_mask": 1}
LARGE: dict[str, Any] = {"n_features": 128, "n_layers": 12}
OPT: dict[str, Any] = {**LARGE, "attention_heads": 2, "stereo": "tac", "tac_activation": "prelu"}


def _nb_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _count(**kwargs: Any) -> int:
    # Full-size models on the meta device: shapes only, no memory, no initialisation cost.
    with torch.device("meta"):
        return _nb_params(BSRNN(**kwargs))


def _mixture(
    batch: int = 1, channels: int = 2, seconds: float = 1.0, seed: int = 0
) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, channels, int(seconds * RATE), generator=generator)


# spec-notes §4.9 / §8 item 7: per target, stereo as mono, from the replication's code
@pytest.mark.parametrize(
    ("source", "size", "expected"),
    [
        ("vocals", {}, 8_020_296),
        ("other", {}, 8_020_296),
        ("bass", {}, 7_111_432),
        ("drums", {}, 9_177_032),
        ("vocals", LARGE, 36_417_160),
        ("bass", LARGE, 32_797_192),
        ("drums", LARGE, 41_024_392),
    ],
)
def test_parameter_counts_match_the_replication(
    source: str, size: dict[str, Any], expected: int
) -> None:
    assert _count(sources=[source], **size) == expected


def test_joint_layout_counts() -> None:
    assert _count(layout="joint") == 9_342_280
    assert _count(layout="joint", **LARGE) == 41_682_568
    # SIMO with one source is the joint-layout network with a single masker
    assert _count(sources=["vocals"], simo=True) == 9_342_280


def test_opt_count_has_one_prelu_slope_per_tac() -> None:
    # spec-notes §4.9 gives 40,777,216 (vocals) and 37,072,768 (bass) for bsrnn-opt, counting
    # three PReLU slopes per TAC. The replication's TAC passes one PReLU instance to all three
    # layers and PyTorch counts a shared parameter once (its code, run, gives the numbers
    # below): 12 blocks × 2 slopes = 24 fewer. We follow the code.
    assert _count(**OPT) == 40_777_216 - 24 == 40_777_192
    assert _count(sources=["bass"], **OPT) == 37_072_768 - 24
    # attention alone ("bsrnn-opt-notac"): per block 67,520 weights + 7 PReLU slopes at K=41
    assert _count(**LARGE, attention_heads=2) == 36_417_160 + 12 * 67_527


def test_naive_stereo_count_matches_the_replication_docs() -> None:
    # docs/analysis.md: "9.2M vs. 8.0M parameters for the vocals track"
    assert _count(stereo="naive") == 9_209_296


def test_cheaper_variants_have_fewer_parameters() -> None:
    base = _count()
    assert _count(seq_model="gru") < base
    assert _count(n_heads_seq=2) < base
    assert _count(seq_model="conv") < base
    simo = _count(sources=["vocals", "bass", "drums", "other"], simo=True)
    independent = _count(sources=["vocals", "bass", "drums", "other"])
    assert simo < independent == 2 * 8_020_296 + 7_111_432 + 9_177_032


VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "gru": {"seq_model": "gru"},
    "conv": {"seq_model": "conv"},
    "gru-time-conv-band": {"seq_model": "gru", "band_seq_model": "conv"},
    "bscnn": {"seq_model": "dilated", "n_dilated": 3, "layout": "joint"},
    "bscnn-time-only": {"seq_model": "dilated", "n_dilated": 2, "band_seq_model": "none"},
    "tac-tanh": {"stereo": "tac"},
    "tac-prelu": {"stereo": "tac", "tac_activation": "prelu"},
    "attention": {"attention_heads": 2, "attention_dim": 4},
    "naive": {"stereo": "naive"},
    "multi-head": {"n_heads_seq": 2},
    "edges": {"band_conversion": "edges"},
    "opt": {"stereo": "tac", "tac_activation": "prelu", "attention_heads": 2, "attention_dim": 4},
    "two-sources": {"sources": ["vocals", "bass"]},
    "simo": {"sources": ["vocals", "bass", "drums", "other"], "simo": True},
    "simo-residual": {
        "sources": ["vocals", "bass", "drums", "other"],
        "simo": True,
        "simo_other_residual": True,
    },
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_shapes_and_gradients(name: str) -> None:
    torch.manual_seed(0)
    model = build("bsrnn", **TINY, **VARIANTS[name])
    mixture = _mixture(batch=2, seconds=0.5)
    waveforms, specs = model.forward_with_spec(mixture)
    nb_sources = len(model.sources)
    assert waveforms.shape == (2, nb_sources, 2, mixture.shape[-1])
    nb_frames = 1 + mixture.shape[-1] // 512
    assert specs.shape == (2, nb_sources, 2, 1025, nb_frames) and specs.is_complex()
    assert torch.isfinite(waveforms).all()
    # the waveforms are the iSTFT of the returned spectrograms
    torch.testing.assert_close(model.istft(specs, length=mixture.shape[-1]), waveforms)
    waveforms.square().mean().backward()
    for key, parameter in model.named_parameters():
        assert parameter.grad is not None, key
        assert torch.isfinite(parameter.grad).all(), key
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert sum(int(g.count_nonzero()) for g in grads) > 0.9 * _nb_params(model)


def test_forward_equals_forward_with_spec_and_sources_order() -> None:
    torch.manual_seed(0)
    model = build("bsrnn", sources=["drums", "vocals"], **TINY).eval()
    mixture = _mixture(seconds=0.5)
    with torch.no_grad():
        stems = model(mixture)
        torch.testing.assert_close(stems, model.forward_with_spec(mixture)[0])
        # one independent network per source, in the order given
        alone = build("bsrnn", sources=["vocals"], **TINY).eval()
        alone.networks["vocals"].load_state_dict(model.networks["vocals"].state_dict())
        torch.testing.assert_close(alone(mixture)[:, 0], stems[:, 1])
    assert model.sources == ("drums", "vocals")
    assert len(model.networks["drums"].band_split.band_widths) == 55
    assert len(model.networks["vocals"].band_split.band_widths) == 41


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"stereo": "naive"},
        {"sources": ["vocals", "bass"], "simo": True},
        {"stereo": "tac", "attention_heads": 2, "attention_dim": 4},
    ],
)
def test_unit_mask_gives_the_mixture_back(
    variant: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unit_mask(self: MaskEstimator, features: torch.Tensor) -> torch.Tensor:
        batch, _, _, nb_frames = features.shape
        shape = (batch, self.out_channels, sum(self.band_widths), nb_frames)
        return torch.ones(shape, dtype=torch.complex64)

    monkeypatch.setattr(MaskEstimator, "forward", unit_mask)
    model = build("bsrnn", **TINY, **variant)
    mixture = _mixture(seconds=1.0, seed=3) * 5  # peaks around 2
    with torch.no_grad():
        stems = model(mixture)
    for index in range(len(model.sources)):
        torch.testing.assert_close(stems[:, index], mixture, rtol=0, atol=1e-5)


def test_simo_residual_source_is_the_mixture_minus_the_others() -> None:
    torch.manual_seed(0)
    sources = ["vocals", "bass", "drums", "other"]
    model = build("bsrnn", sources=sources, simo=True, simo_other_residual=True, **TINY)
    assert len(model.networks["joint"].maskers) == 3
    assert len(model.networks["joint"].band_split.band_widths) == 57
    mixture = _mixture(seconds=0.5)
    with torch.no_grad():
        stems = model(mixture)
    torch.testing.assert_close(stems.sum(dim=1), mixture, rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", [{}, {"stereo": "tac", "tac_activation": "prelu"}])
def test_swapping_channels_swaps_the_outputs(variant: dict[str, Any]) -> None:
    # Independent mono channels and TAC (channel mean) are both blind to channel order.
    torch.manual_seed(0)
    model = build("bsrnn", **TINY, **variant).eval()
    mixture = _mixture(seconds=0.5)
    with torch.no_grad():
        direct = model(mixture)
        swapped = model(mixture.flip(1))
    torch.testing.assert_close(swapped, direct.flip(2), rtol=1e-4, atol=1e-6)


def test_mono_channels_are_separated_independently() -> None:
    torch.manual_seed(0)
    model = build("bsrnn", **TINY).eval()
    mixture = _mixture(seconds=0.5)
    changed = mixture.clone()
    changed[:, 1] = _mixture(batch=1, channels=1, seconds=0.5, seed=9)[:, 0]
    with torch.no_grad():
        a, b = model(mixture), model(changed)
    torch.testing.assert_close(a[:, :, 0], b[:, :, 0])
    assert not torch.allclose(a[:, :, 1], b[:, :, 1])


@pytest.mark.parametrize(
    "variant", [{}, {"stereo": "tac", "attention_heads": 2, "attention_dim": 4}]
)
def test_batch_items_do_not_interact(variant: dict[str, Any]) -> None:
    torch.manual_seed(0)
    model = build("bsrnn", **TINY, **variant).eval()
    mixture = _mixture(batch=3, seconds=0.5)
    with torch.no_grad():
        together = model(mixture)
        alone = model(mixture[1:2])
    torch.testing.assert_close(together[1:2], alone, rtol=1e-4, atol=1e-6)


def test_registry_and_checkpoint_round_trip(tmp_path: Path) -> None:
    assert "bsrnn" in available()
    torch.manual_seed(0)
    kwargs = {**TINY, "sources": ["vocals", "drums"], "attention_heads": 1, "attention_dim": 2}
    model = build("bsrnn", **kwargs).eval()
    path = save_checkpoint(tmp_path / "bsrnn.pt", model)
    rebuilt = model_from_checkpoint(load_checkpoint(path))
    mixture = _mixture(seconds=0.5)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(mixture), model(mixture))
    assert rebuilt.sources == ("vocals", "drums") and rebuilt.sample_rate == RATE


def test_naive_stereo_needs_the_declared_channel_count() -> None:
    model = build("bsrnn", **TINY, stereo="naive")
    with pytest.raises(ValueError, match="built for 2 channels, got 1"):
        model(_mixture(channels=1, seconds=0.5))
    mono = build("bsrnn", **TINY)
    assert mono(_mixture(channels=1, seconds=0.5)).shape[2] == 1


def test_bad_input_shape() -> None:
    with pytest.raises(ValueError, match=r"\(batch, channels, time\)"):
        build("bsrnn", **TINY)(torch.zeros(2, RATE))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sources": []}, "sources=\\[\\].*non-empty"),
        ({"sources": ["vocals", "vocals"]}, "unique"),
        ({"n_features": 0}, "n_features=0.*> 0"),
        ({"n_layers": 2.5}, "n_layers=2.5"),
        ({"seq_model": "transformer"}, "seq_model='transformer'.*lstm, gru, conv, dilated"),
        ({"band_seq_model": "rnn"}, "band_seq_model='rnn'"),
        ({"stereo": "joint"}, "stereo='joint'.*mono, naive, tac"),
        ({"tac_activation": "relu"}, "tac_activation='relu'"),
        ({"band_conversion": "round"}, "band_conversion='round'.*floor, edges"),
        ({"layout": "v9"}, "unknown band layout 'v9'"),
        ({"n_features": 12, "n_heads_seq": 5}, "n_heads_seq=5.*divide n_features=12"),
        ({"n_features": 12, "attention_heads": 5}, "attention_heads=5.*divide"),
        ({"attention_heads": -1}, "attention_heads=-1"),
        ({"conv_kernel": 4}, "conv_kernel=4.*odd"),
        ({"simo_other_residual": True}, "simo_other_residual=True.*needs simo"),
        ({"simo": True, "simo_other_residual": True}, "at least two sources"),
        ({"n_fft": 512, "sources": ["drums"]}, "no frequency bin.*raise n_fft"),
        ({"sample_rate": 16000}, "Nyquist"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(StemkitError, match=message):
        build("bsrnn", **{**TINY, **kwargs})


CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("bsrnn_small_musdb18hq", 2 * 8_020_296 + 7_111_432 + 9_177_032),
        ("bsrnn_large_musdb18hq", 2 * 36_417_160 + 32_797_192 + 41_024_392),
        ("bsrnn_opt_musdb18hq", 164_119_072),
        ("bsrnn_synth_tiny", 603_856),
    ],
)
def test_presets_build_the_intended_models(preset: str, expected: int) -> None:
    config = resolve_config(CONFIGS / f"{preset}.yaml")
    assert config.model.name == "bsrnn" and config.optim.loss == "tf_l1"
    with torch.device("meta"):
        model = build("bsrnn", sources=list(config.data.sources), **config.model.kwargs)
    assert _nb_params(model) == expected


def test_the_trainer_runs_a_tiny_bsrnn(hq_tree: Path, tmp_path: Path) -> None:
    overrides = [
        f"data.root={hq_tree}",
        f"run_dir={tmp_path / 'run'}",
        "optim.epochs=2",
        "optim.batch_size=4",
        "data.segment=1.0",
        "data.samples_per_track=2",
        "model.kwargs.n_features=8",
        "model.kwargs.n_layers=1",
    ]
    best = train(resolve_config(CONFIGS / "bsrnn_synth_tiny.yaml", overrides), progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 2
    assert all(math.isfinite(row["train_loss"]) for row in history)
    model = model_from_checkpoint(load_checkpoint(best))
    assert isinstance(model, BSRNN)
    assert model.sources == ("vocals", "drums", "bass", "other")
    assert model(torch.zeros(1, 2, 4096)).shape == (1, 4, 2, 4096)


def test_loss_domains_time_stft_and_both() -> None:
    """The replication's three loss domains: ``tf_l1`` is ``l1`` (time) plus ``stft_l1``."""
    from stemkit.losses import complex_l1_loss, l1_loss

    torch.manual_seed(0)
    model = build("bsrnn", sources=["vocals", "bass"], **TINY)
    mixture = _mixture(batch=2, seconds=0.5)
    stems = 0.5 * torch.stack([mixture, mixture.flip(-1)], dim=1)
    waveforms, spectrograms = model.forward_with_spec(mixture)
    stft = model.training_loss(mixture, stems, "stft_l1")
    time = model.training_loss(mixture, stems, "l1")
    both = model.training_loss(mixture, stems, "tf_l1")
    torch.testing.assert_close(stft, complex_l1_loss(spectrograms, model.stft(stems)))
    torch.testing.assert_close(time, l1_loss(waveforms, stems))
    torch.testing.assert_close(both, time + stft)
    stft.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with pytest.raises(StemkitError, match="band-split model"):
        build("umx", sources=["vocals"]).training_loss(mixture, stems[:, :1], "stft_l1")
