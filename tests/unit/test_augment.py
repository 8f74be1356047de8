"""The seeded stem augmentations: shapes, bounds, per-source draws, reproducibility."""

from __future__ import annotations

import pytest
import torch

from stemkit.data.augment import random_channel_swap, random_gain
from stemkit.data.sampling import derive_seed, item_generator


def _stems(*lead: int, channels: int = 2, time: int = 64) -> torch.Tensor:
    # channels differ from each other so that a swap is visible
    base = torch.randn(*lead, channels, time, generator=torch.Generator().manual_seed(0))
    return base + torch.arange(channels, dtype=torch.float32)[:, None]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("lead", [(4,), (3, 4)], ids=["item", "batch"])
def test_random_gain_scales_each_source_by_one_gain_within_bounds(lead: tuple[int, ...]) -> None:
    stems = _stems(*lead)
    before = stems.clone()
    out = random_gain(stems, 0.25, 1.25, generator=_gen())
    assert out.shape == stems.shape and out.dtype == stems.dtype
    assert torch.equal(stems, before), "the input must not be modified"
    ratio = out / stems
    per_source = ratio[..., :1, :1]
    # one gain for all channels and samples of a source
    torch.testing.assert_close(ratio, per_source.expand_as(ratio), rtol=1e-5, atol=1e-6)
    assert per_source.min() >= 0.25 and per_source.max() < 1.25
    # independent draws per source (and batch element)
    assert per_source.flatten().unique().numel() == per_source.numel()


def test_random_gain_is_reproducible_and_uniform() -> None:
    stems = torch.ones(2000, 4, 1, 1)
    first = random_gain(stems, 0.5, 1.5, generator=_gen(7))
    assert torch.equal(first, random_gain(stems, 0.5, 1.5, generator=_gen(7)))
    assert not torch.equal(first, random_gain(stems, 0.5, 1.5, generator=_gen(8)))
    # 8000 uniform draws on [0.5, 1.5): mean 1.0, std 1/sqrt(12) ≈ 0.289
    assert abs(first.mean().item() - 1.0) < 0.02
    assert abs(first.std().item() - 12**-0.5) < 0.02
    torch.testing.assert_close(random_gain(stems, 0.8, 0.8, generator=_gen()), 0.8 * stems)


@pytest.mark.parametrize("lead", [(4,), (3, 4)], ids=["item", "batch"])
def test_random_channel_swap_swaps_whole_sources(lead: tuple[int, ...]) -> None:
    stems = _stems(*lead)
    out = random_channel_swap(stems, generator=_gen(3), p=0.5)
    assert out.shape == stems.shape and out.dtype == stems.dtype
    kept = (out == stems).flatten(-2).all(-1)
    swapped = (out == stems.flip(-2)).flatten(-2).all(-1)
    assert torch.all(kept ^ swapped), "every source is either untouched or fully swapped"
    many = random_channel_swap(_stems(500, 4, time=4), generator=_gen(1), p=0.5)
    fraction = (many[..., 0, :] != _stems(500, 4, time=4)[..., 0, :]).any(-1).float().mean()
    assert 0.45 < fraction.item() < 0.55


def test_random_channel_swap_edge_probabilities_and_mono() -> None:
    stems = _stems(2, 4)
    assert torch.equal(random_channel_swap(stems, generator=_gen(), p=0.0), stems)
    assert torch.equal(random_channel_swap(stems, generator=_gen(), p=1.0), stems.flip(-2))
    mono = _stems(4, channels=1)
    assert torch.equal(random_channel_swap(mono, generator=_gen(), p=1.0), mono)
    first = random_channel_swap(stems, generator=_gen(5))
    assert torch.equal(first, random_channel_swap(stems, generator=_gen(5)))


def test_augment_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="nb_sources, nb_channels, nb_samples"):
        random_gain(torch.ones(2, 10), generator=_gen())
    with pytest.raises(ValueError, match="nb_sources, nb_channels, nb_samples"):
        random_channel_swap(torch.ones(10), generator=_gen())
    with pytest.raises(ValueError, match="low <= high"):
        random_gain(torch.ones(1, 1, 1), 1.5, 0.5)
    with pytest.raises(ValueError, match="0 <= p <= 1"):
        random_channel_swap(torch.ones(1, 1, 1), p=1.5)


def test_item_seeds_depend_on_every_key() -> None:
    assert derive_seed(42, 0, 1) == derive_seed(42, 0, 1)
    seeds = {derive_seed(s, e, i) for s in (0, 1) for e in (0, 1) for i in (0, 1, 10)}
    assert len(seeds) == 12
    assert all(0 <= seed < 2**63 for seed in seeds)
    draw = torch.rand(3, generator=item_generator(42, 1, 5))
    assert torch.equal(draw, torch.rand(3, generator=item_generator(42, 1, 5)))
