"""Conv-TasNet for music: published parameter counts, decoder overlap-add, norms, training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stemkit import MUSDB_SOURCES
from stemkit.models import build
from stemkit.models.tasnet import (
    ConvTasNet,
    TemporalBlock,
    _gln_affine,
    _normalized_depthwise_conv,
    channelwise_layer_norm,
    global_layer_norm,
)
from stemkit.train.config import resolve_config
from stemkit.train.objectives import compute_loss

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny(**kwargs: object) -> ConvTasNet:
    options: dict[str, object] = {"N": 8, "L": 6, "B": 8, "H": 16, "P": 3, "X": 2, "R": 1}
    options.update(kwargs)
    model = build("convtasnet", **options)
    assert isinstance(model, ConvTasNet)
    return model


@pytest.mark.parametrize(("blocks", "expected"), [(10, 10_977_872), (8, 8_852_032)])
def test_parameter_count_matches_the_published_model(blocks: int, expected: int) -> None:
    # spec-notes §8 item 9: N256 L20 B256 H512 P3 R4, stereo, four sources.
    with torch.device("meta"):
        model = build("convtasnet", X=blocks)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_default_is_the_music_papers_x10() -> None:
    with torch.device("meta"):
        model = ConvTasNet()
    assert sum(p.numel() for p in model.parameters()) == 10_977_872
    assert model.sources == MUSDB_SOURCES


def _reference_forward(model: ConvTasNet, mixture: Tensor) -> Tensor:
    """The model's computation written out independently: explicit padding, F.fold for the
    overlap-add."""
    batch, channels, length = mixture.shape
    big, hop = model.filter_length, model.hop
    frames_needed = max(1, -(-(length - big) // hop) + 1)
    padded_length = (frames_needed - 1) * hop + big
    x = F.pad(mixture, (0, padded_length - length))
    frames = F.relu(F.conv1d(x, model.encoder.weight, stride=hop))
    nb_frames = frames.shape[-1]
    masks = F.relu(model.separator(frames)).view(batch, -1, model.nb_filters, nb_frames)
    masked = frames.unsqueeze(1) * masks
    samples = torch.einsum("bsnk,cn->bsck", masked, model.decoder.weight)
    samples = samples.view(batch, len(model.sources), channels, big, nb_frames)
    samples = samples.reshape(-1, big, nb_frames)
    out = F.fold(samples, (1, padded_length), kernel_size=(1, big), stride=(1, hop))
    return out.view(batch, len(model.sources), channels, padded_length)[..., :length]


@pytest.mark.parametrize("length", [1, 5, 6, 7, 333])
def test_forward_matches_an_independent_overlap_add(length: int) -> None:
    torch.manual_seed(0)
    model = tiny().eval()
    mixture = torch.randn(2, 2, length)
    with torch.no_grad():
        out = model(mixture)
        assert out.shape == (2, 4, 2, length)
        torch.testing.assert_close(out, _reference_forward(model, mixture))


def test_valid_length() -> None:
    model = tiny()  # L = 6, hop 3
    assert [model.valid_length(n) for n in (1, 6, 7, 9, 10)] == [6, 6, 9, 9, 12]
    for n in range(1, 40):
        valid = model.valid_length(n)
        assert valid >= max(n, 6) and (valid - 6) % 3 == 0 and valid - 3 < max(n, 6)
    with pytest.raises(ValueError, match="length"):
        model.valid_length(0)


def test_norms_match_their_definitions() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, 11)
    gln = global_layer_norm(5)
    cln = channelwise_layer_norm(5)
    with torch.no_grad():
        for norm in (gln, cln):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
        gamma, beta = gln.weight.view(1, 5, 1), gln.bias.view(1, 5, 1)
        mean = x.mean(dim=(1, 2), keepdim=True)
        var = x.var(dim=(1, 2), keepdim=True, unbiased=False)
        torch.testing.assert_close(gln(x), gamma * (x - mean) / (var + 1e-8).sqrt() + beta)
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        expected = cln.weight.view(1, 5, 1) * (x - mean) / (var + 1e-8).sqrt()
        torch.testing.assert_close(cln(x), expected + cln.bias.view(1, 5, 1))


def test_blocks_dilate_and_nothing_has_a_bias() -> None:
    model = tiny(X=3, R=2)
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv1d) and m.groups > 1]
    assert [m.dilation[0] for m in depthwise] == [1, 2, 4, 1, 2, 4]
    assert all(m.bias is None for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Linear)))


def test_sources_follow_the_caller_and_mono_works() -> None:
    model = tiny(sources=["vocals", "accompaniment"], audio_channels=1)
    assert model.sources == ("vocals", "accompaniment")
    assert model(torch.randn(1, 1, 100)).shape == (1, 2, 1, 100)
    with pytest.raises(ValueError, match=r"\(batch, 1, time\)"):
        model(torch.randn(1, 2, 100))


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = tiny()
    model(torch.randn(2, 2, 200)).square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"L": 7}, "even"), ({"P": 2}, "odd"), ({"X": 0}, "X=0")]
)
def test_bad_arguments_raise(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ConvTasNet(**kwargs)


def test_tiny_model_learns(make_stems: Callable[..., np.ndarray]) -> None:
    torch.manual_seed(0)
    stems = torch.from_numpy(np.stack([make_stems(0.2, seed) for seed in range(2)]))
    mixture = stems.sum(dim=1)
    model = tiny(N=16, B=16, H=32, L=20)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = compute_loss(model, mixture, stems, "l1")
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert max(losses[-3:]) < 0.85 * losses[0], losses


@pytest.mark.parametrize("name", ["convtasnet_musdb18hq.yaml", "convtasnet_synth_tiny.yaml"])
def test_presets_resolve_and_build(name: str) -> None:
    config = resolve_config(CONFIGS / name)
    assert config.model.name == "convtasnet"
    assert config.optim.loss == "l1"
    with torch.device("meta"):
        model = build(config.model.name, sources=config.data.sources, **config.model.kwargs)
    assert model.sources == tuple(config.data.sources)
    if name == "convtasnet_musdb18hq.yaml":
        assert sum(p.numel() for p in model.parameters()) == 10_977_872
        assert round(config.data.segment * 44100) == 80_000


# --- inference path: in-place blocks, folded norms, tap-wise depthwise convolution ---------


def _perturbed(model: ConvTasNet, seed: int = 0) -> ConvTasNet:
    """Give the norms and PReLUs non-default values, so that folding them is really tested."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() <= 1:
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=gen))
    return model.eval()


@pytest.mark.parametrize(("length", "batch"), [(1, 1), (7, 2), (50, 1), (1000, 3)])
def test_inference_path_matches_the_autograd_path(length: int, batch: int) -> None:
    # X=4 gives dilations 1..8: at the short lengths some taps see only padding.
    torch.manual_seed(1)
    model = _perturbed(tiny(X=4, R=2, H=24))
    mixture = torch.randn(batch, 2, length)
    reference = model(mixture)  # autograd on: the plain nn.Sequential arithmetic
    assert reference.requires_grad
    kept = mixture.clone()
    with torch.inference_mode():
        fast = model(mixture)
    torch.testing.assert_close(mixture, kept, rtol=0, atol=0)  # the input is left alone
    torch.testing.assert_close(
        fast, reference.detach(), rtol=1e-5, atol=1e-5 * reference.abs().max().item()
    )


def test_block_update_is_in_place_and_matches_forward() -> None:
    torch.manual_seed(2)
    model = _perturbed(tiny(X=3, H=20))
    block = model.separator[3]
    assert isinstance(block, TemporalBlock)
    x = torch.randn(2, 8, 40)
    expected = block(x).detach()
    with torch.no_grad():
        target = x.clone()
        hidden, work = torch.empty(2, 20, 40), torch.empty(2, 20, 40)
        out = block.update_(target, hidden, work)
        assert out.data_ptr() == target.data_ptr()
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="no_grad"):
        block.update_(x.clone())


@pytest.mark.parametrize("dilation", [1, 3, 16, 40, 100])
@pytest.mark.parametrize("kernel", [3, 5])
def test_normalized_depthwise_conv_matches_group_norm_then_conv(dilation: int, kernel: int) -> None:
    gen = torch.Generator().manual_seed(dilation * kernel)
    channels, nb_frames = 6, 41
    norm = global_layer_norm(channels)
    conv = nn.Conv1d(
        channels,
        channels,
        kernel,
        padding=(kernel - 1) * dilation // 2,
        dilation=dilation,
        groups=channels,
        bias=False,
    )
    with torch.no_grad():
        norm.weight.copy_(torch.randn(channels, generator=gen))
        norm.bias.copy_(torch.randn(channels, generator=gen))
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        x = 3.0 + torch.randn(2, channels, nb_frames, generator=gen)
        scale, shift = _gln_affine(x, norm)
        torch.testing.assert_close(x * scale[..., None] + shift[..., None], norm(x))
        out = _normalized_depthwise_conv(x, scale, shift, conv, out=torch.empty_like(x))
        torch.testing.assert_close(out, conv(norm(x)), rtol=1e-5, atol=1e-5)
