"""Demucs v1: published parameter counts, valid lengths, rescaled init, normalisation, training."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stemkit import MUSDB_SOURCES
from stemkit.artifacts.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from stemkit.models import build
from stemkit.models.demucs import Demucs, center_trim
from stemkit.train.config import resolve_config
from stemkit.train.objectives import compute_loss

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny(**kwargs: object) -> Demucs:
    options: dict[str, object] = {"channels": 4, "depth": 3, "lstm_layers": 1}
    options.update(kwargs)
    model = build("demucs", **options)
    assert isinstance(model, Demucs)
    return model


@pytest.mark.parametrize(("channels", "expected"), [(100, 648_548_208), (64, 265_679_496)])
def test_parameter_count_matches_the_published_model(channels: int, expected: int) -> None:
    # spec-notes §8 item 9; the meta device allocates nothing (C1=100 would take 2.6 GB).
    with torch.device("meta"):
        model = build("demucs", channels=channels)
    assert sum(p.numel() for p in model.parameters()) == expected


def _output_length(model: Demucs, length: int) -> int | None:
    """Output length of the unpadded network for ``length`` input samples, or None when some
    convolution is not full or a length drops below one (an independent length calculus)."""
    k, s, c = model.kernel, model.stride, model.context
    encoded = [length]
    for _ in range(model.depth):
        if (encoded[-1] - k) % s or encoded[-1] < k:
            return None
        encoded.append((encoded[-1] - k) // s + 1)
    x = encoded[-1]
    for level in range(model.depth, 0, -1):
        if encoded[level] < x:
            return None
        x = x - c + 1
        if x < 1:
            return None
        x = (x - 1) * s + k
    return x


def test_valid_length_is_the_smallest_full_length() -> None:
    paper = Demucs(depth=6, channels=1, lstm_layers=0)
    assert paper.valid_length(441_000) == 451_924  # the recipe's 10 s training input
    model = tiny()
    for length in [1, 2, 7, 100, 333, 1000, 1501]:
        valid = model.valid_length(length)
        out = _output_length(model, valid)
        assert out is not None and out >= length
        # No shorter input works: brute force over every length below it.
        assert all((o := _output_length(model, n)) is None or o < length for n in range(1, valid))


def test_every_convolution_is_full_in_forward() -> None:
    model = tiny()
    seen: list[tuple[int, int]] = []

    def record(module: nn.Module, args: tuple[torch.Tensor, ...], _: torch.Tensor) -> None:
        assert isinstance(module, nn.Conv1d)
        seen.append((args[0].shape[-1], module.kernel_size[0]))

    for encode in model.encoder:
        encode[0].register_forward_hook(record)
    model(torch.randn(1, 2, 1234))
    assert len(seen) == model.depth
    assert all((n - k) % model.stride == 0 for n, k in seen)


@pytest.mark.parametrize("length", [1, 99, 1001, 4097])
def test_any_length_gives_stems_of_that_length(length: int) -> None:
    model = tiny()
    out = model(torch.randn(2, 2, length))
    assert out.shape == (2, 4, 2, length)
    assert torch.isfinite(out).all()


def test_mono_and_sources_follow_the_caller() -> None:
    order = ("drums", "bass", "other", "vocals")
    model = tiny(sources=list(order))
    assert model.sources == order
    pair = tiny(sources=["vocals", "accompaniment"], audio_channels=1)
    assert pair.sources == ("vocals", "accompaniment")
    out = pair(torch.randn(3, 1, 500))
    assert out.shape == (3, 2, 1, 500)
    # The default is MUSDB's order, not Demucs' own.
    assert Demucs(channels=2, depth=2, lstm_layers=0).sources == MUSDB_SOURCES
    with pytest.raises(ValueError, match=r"\(batch, 1, time\)"):
        pair(torch.randn(1, 2, 500))


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = tiny()
    mixture = torch.randn(2, 2, 800)
    model(mixture).square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_rescale_moves_weight_std_to_the_geometric_mean_with_the_reference() -> None:
    torch.manual_seed(3)
    plain = tiny(rescale=None)
    torch.manual_seed(3)
    rescaled = tiny(rescale=0.1)
    convs = 0
    for (name, a), b in zip(plain.named_modules(), rescaled.modules(), strict=True):
        if isinstance(a, (nn.Conv1d, nn.ConvTranspose1d)):
            assert isinstance(b, type(a))
            std, new = float(a.weight.detach().std()), float(b.weight.detach().std())
            assert new == pytest.approx(math.sqrt(std * 0.1), rel=1e-4), name
            assert abs(math.log(new / 0.1)) == pytest.approx(abs(math.log(std / 0.1)) / 2, abs=1e-4)
            # the bias shares the weight's factor
            assert b.bias is not None and a.bias is not None
            torch.testing.assert_close(b.bias * (std / new), a.bias, rtol=1e-4, atol=1e-7)
            convs += 1
        elif isinstance(a, (nn.LSTM, nn.Linear)):
            for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
                torch.testing.assert_close(pa, pb)  # untouched
    assert convs == 4 * 3


def test_normalisation_makes_the_model_gain_equivariant() -> None:
    torch.manual_seed(1)
    mixture = 0.1 * torch.randn(2, 2, 900) + 0.01
    model = tiny().eval()
    with torch.no_grad():
        out = model(mixture)
        torch.testing.assert_close(model(7.0 * mixture), 7.0 * out, rtol=1e-4, atol=1e-5)
        # Each batch item has its own statistics.
        both = model(torch.stack([mixture[0], 0.2 * mixture[1]]))
        torch.testing.assert_close(both[1], 0.2 * out[1], rtol=1e-4, atol=1e-5)
        # Silence stays finite.
        assert torch.isfinite(model(torch.zeros(1, 2, 300))).all()
    raw = tiny(normalize=False).eval()
    with torch.no_grad():
        assert not torch.allclose(raw(7.0 * mixture), 7.0 * raw(mixture), rtol=1e-2, atol=1e-4)


def test_center_trim() -> None:
    x = torch.arange(10)
    assert center_trim(x, 10).tolist() == list(range(10))
    assert center_trim(x, 7).tolist() == [1, 2, 3, 4, 5, 6, 7]
    with pytest.raises(ValueError):
        center_trim(x, 11)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="stride"):
        Demucs(kernel=4, stride=5)
    with pytest.raises(ValueError, match="depth"):
        Demucs(depth=0)
    with pytest.raises(ValueError, match="length"):
        tiny().valid_length(0)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = tiny(sources=["vocals", "other"]).eval()
    path = save_checkpoint(tmp_path / "demucs.pt", model)
    again = model_from_checkpoint(load_checkpoint(path))
    mixture = torch.randn(1, 2, 700)
    with torch.no_grad():
        torch.testing.assert_close(again(mixture), model(mixture))


def test_tiny_model_learns(make_stems: Callable[..., np.ndarray]) -> None:
    torch.manual_seed(0)
    stems = torch.from_numpy(np.stack([make_stems(0.2, seed) for seed in range(2)]))
    mixture = stems.sum(dim=1)
    model = tiny(channels=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = compute_loss(model, mixture, stems, "l1")
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert max(losses[-3:]) < 0.85 * losses[0], losses


@pytest.mark.parametrize("name", ["demucs_musdb18hq.yaml", "demucs_synth_tiny.yaml"])
def test_presets_resolve_and_build(name: str) -> None:
    config = resolve_config(CONFIGS / name)
    assert config.model.name == "demucs"
    assert config.optim.loss == "l1"
    with torch.device("meta"):
        model = build(config.model.name, sources=config.data.sources, **config.model.kwargs)
    assert model.sources == tuple(config.data.sources)


def test_separation_batches_four_chunks_by_default_with_the_same_stems() -> None:
    from stemkit.api import Separator

    torch.manual_seed(0)
    model = tiny().eval()
    assert model.default_batch_size == 4
    assert Separator(model).batch_size == 4
    assert Separator(model, batch_size=1).batch_size == 1  # an explicit value wins
    assert Separator(build("identity", sources=MUSDB_SOURCES)).batch_size == 1  # the base's default
    calls: list[int] = []
    model.register_forward_hook(lambda _m, inputs, _o: calls.append(inputs[0].shape[0]))
    mixture = 0.1 * torch.randn(2, 44100 * 2)
    batched = Separator(model, segment=0.3, device="cpu").separate(mixture, 44100)
    assert max(calls) == 4
    calls.clear()
    one = Separator(model, segment=0.3, device="cpu", batch_size=1).separate(mixture, 44100)
    assert max(calls) == 1
    # chunks are independent items of the batch: equal up to float32 rounding in the products
    for name in model.sources:
        peak = float(one[name].abs().max())
        torch.testing.assert_close(batched[name], one[name], rtol=0, atol=1e-5 * peak)
