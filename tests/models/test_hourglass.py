"""Stacked hourglass (SH-Net): sizes, patch shapes, sliding-window coverage, gradients."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from stemkit.models import build
from stemkit.models.hourglass import (
    HourglassSeparator,
    StackedHourglass,
    growth_channels,
    window_plan,
)
from stemkit.train.config import resolve_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _nb_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv_params(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + c_out


def _reference_count(nb_sources: int, levels: list[int], f: int = 256, stacks: int = 4) -> int:
    """Layer-by-layer size of the reference code (spec-notes §6), with per-level widths."""
    stem = (
        _conv_params(7, 1, 64)
        + _conv_params(3, 64, 128)
        + 2 * _conv_params(3, 128, 128)
        + _conv_params(3, 128, f)
    )

    def hourglass(c: int, rest: list[int]) -> int:
        inner = rest[0]
        size = _conv_params(3, c, c) + _conv_params(3, c, inner) + _conv_params(3, inner, c)
        return size + (
            hourglass(inner, rest[1:]) if len(rest) > 1 else _conv_params(3, inner, inner)
        )

    head = _conv_params(3, f, f) + _conv_params(1, f, f) + _conv_params(1, f, nb_sources)
    merge = _conv_params(1, f, f) + _conv_params(1, nb_sources, f)
    return stem + stacks * (hourglass(f, levels) + head) + (stacks - 1) * merge


def test_parameter_counts_of_the_reference_configuration() -> None:
    two = build("shnet")
    four = build("shnet", sources=["bass", "drums", "other", "vocals"])
    assert _nb_params(two) == 34_176_776 == _reference_count(2, [256] * 4)
    assert _nb_params(four) == 34_180_368 == _reference_count(4, [256] * 4)
    assert two.sources == ("accompaniment", "vocals")
    assert (two.sample_rate, two.audio_channels, two.causal) == (8000, 1, False)


def test_channel_growth_variant_is_about_a_fifth_smaller() -> None:
    assert growth_channels(256, 4) == [128, 192, 256, 320]
    grown = _nb_params(build("shnet", channel_growth=True))
    assert grown == _reference_count(2, [128, 192, 256, 320]) == 27_392_008
    assert 0.75 < grown / 34_176_776 < 0.85


def _tiny(**kwargs: object) -> HourglassSeparator:
    options: dict[str, object] = {
        "channels": 8,
        "nb_stacks": 2,
        "depth": 2,
        "n_fft": 32,
        "n_hop": 8,
        "patch_frames": 8,
    }
    options.update(kwargs)
    torch.manual_seed(0)
    model = build("shnet", **options)
    assert isinstance(model, HourglassSeparator)
    return model


@pytest.mark.parametrize("nb_sources", [2, 4])
def test_patch_shapes(nb_sources: int) -> None:
    sources = ["bass", "drums", "other", "vocals"][:nb_sources]
    model = _tiny(sources=sources, nb_stacks=3)
    patches = torch.rand(3, 1, 16, 8)
    masks = model.stack_masks(patches)
    assert len(masks) == 3
    assert all(m.shape == (3, nb_sources, 16, 8) for m in masks)
    with pytest.raises(ValueError, match="patches"):
        model.stack_masks(torch.rand(3, 1, 17, 8))


def test_odd_sizes_pool_and_upsample_back() -> None:
    net = StackedHourglass(nb_sources=2, channels=4, nb_stacks=1, depth=3)
    masks = net(torch.rand(1, 1, 13, 7))
    assert masks[0].shape == (1, 2, 13, 7)


@pytest.mark.parametrize("nb_frames", [8, 9, 11, 12, 13, 16, 17, 40, 101])
def test_window_plan_covers_every_frame_once(nb_frames: int) -> None:
    patch, margin = 8, 2
    plan = window_plan(nb_frames, patch)
    covered = [t for _, a, b in plan for t in range(a, b)]
    assert covered == list(range(nb_frames))
    for index, (start, a, b) in enumerate(plan):
        assert start <= a < b <= start + patch
        # interior windows keep their centre; only the edges reach the window borders
        if index > 0:
            assert a - start >= margin
        if index < len(plan) - 1:
            assert start + patch - b >= margin
    # the reference schedule: a hop of half a window, then one window aligned with the end
    assert [s for s, _, _ in plan[:-1]] == list(range(0, nb_frames - patch, patch // 2))
    assert plan[-1][0] == nb_frames - patch


def test_window_plan_of_the_reference_patch() -> None:
    plan = window_plan(200, 64)
    assert plan[:3] == [(0, 0, 48), (32, 48, 80), (64, 80, 112)]
    assert plan[-1] == (136, 176, 200)
    with pytest.raises(ValueError, match="multiple of 4"):
        window_plan(100, 30)
    with pytest.raises(ValueError, match="fewer"):
        window_plan(10, 64)


def _all_ones(model: HourglassSeparator) -> HourglassSeparator:
    last = model.net.masks[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(1.0)
    return model


@pytest.mark.parametrize("nb_samples", [40, 200, 1001])
def test_unit_masks_give_back_the_mixture(nb_samples: int) -> None:
    # 40 samples are fewer frames than one window; 1001 need many windows and a tail window
    model = _all_ones(_tiny()).eval()
    torch.manual_seed(1)
    mixture = torch.randn(2, 1, nb_samples)
    with torch.no_grad():
        stems = model(mixture)
    assert stems.shape == (2, 2, 1, nb_samples)
    for index in range(2):
        torch.testing.assert_close(stems[:, index], mixture, rtol=0, atol=1e-5)


def test_each_frame_comes_from_its_planned_window() -> None:
    """A network whose mask encodes the frame position inside its window."""

    class Position(nn.Module):
        nb_sources = 1

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            position = torch.arange(x.shape[-1], dtype=x.dtype).expand_as(x)
            # offset by the window's first normalised magnitude, which identifies the window
            return [position + 1000 * x[..., :1, :1].expand_as(x)]

    model = _tiny(window_batch=3)
    model.net = Position()  # type: ignore[assignment]
    nb_frames = 29
    # one frame-index ramp in every bin, normalised to a maximum of 1
    ramp = torch.arange(nb_frames, dtype=torch.float32).expand(1, 1, 17, nb_frames)
    masks = model.masks(ramp)[0, 0, 0, 0]
    scale = nb_frames - 1
    expected = torch.empty(nb_frames)
    for start, a, b in window_plan(nb_frames, 8):
        for t in range(a, b):
            expected[t] = (t - start) + 1000 * start / scale
    torch.testing.assert_close(masks, expected)


def test_forward_magnitudes_clips_masks_and_fills_the_top_bin() -> None:
    model = _tiny().eval()
    with torch.no_grad():
        model.net.masks[-1].weight.zero_()
        model.net.masks[-1].bias.copy_(torch.tensor([-1.0, 0.5]))
    mix_mag = torch.rand(1, 1, 17, 20)
    with torch.no_grad():
        estimates = model.forward_magnitudes(mix_mag)
    assert estimates.shape == (1, 2, 1, 17, 20)
    assert torch.equal(estimates[:, 0], torch.zeros(1, 1, 17, 20))
    torch.testing.assert_close(estimates[:, 1], 0.5 * mix_mag)
    with pytest.raises(ValueError, match="expected"):
        model.forward_magnitudes(torch.rand(1, 1, 16, 20))


def test_silence_stays_silent() -> None:
    model = _tiny().eval()
    with torch.no_grad():
        stems = model(torch.zeros(1, 1, 300))
    assert torch.equal(stems, torch.zeros(1, 2, 1, 300))


def test_gradient_flows_from_every_stack() -> None:
    model = _tiny(nb_stacks=3).train()
    patches = torch.rand(2, 1, 16, 8)
    targets = torch.rand(2, 2, 16, 8)
    loss = sum((targets - patches * m).abs().mean() for m in model.stack_masks(patches))
    assert isinstance(loss, torch.Tensor)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    model.zero_grad()
    model(torch.randn(1, 1, 300)).abs().mean().backward()
    assert model.net.stem[0].weight.grad is not None
    assert model.net.stem[0].weight.grad.abs().sum() > 0


def test_bad_inputs_are_refused() -> None:
    model = _tiny()
    with pytest.raises(ValueError, match="mono"):
        model(torch.randn(1, 2, 300))
    with pytest.raises(ValueError, match="source names"):
        HourglassSeparator(StackedHourglass(nb_sources=2, channels=4, depth=1), sources=["a"])
    with pytest.raises(ValueError, match="poolings"):
        build("shnet", n_fft=16, depth=4)


def test_preset_builds_the_recipe_model() -> None:
    config = resolve_config(CONFIGS / "shnet_mir1k.yaml")
    assert config.model.name == "shnet"
    assert config.data.sources == ["accompaniment", "vocals"]
    assert math.isclose(config.optim.lr, 1e-4) and config.optim.batch_size == 4
    model = build(config.model.name, sources=config.data.sources, **config.model.kwargs)
    assert _nb_params(model) == 34_176_776
