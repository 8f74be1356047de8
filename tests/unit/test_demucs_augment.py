"""The Demucs v1 batch augmentations: invariants, per-(item, source) draws, reproducibility."""

from __future__ import annotations

import pytest
import torch

from stemkit.data.demucs_augment import (
    DemucsAugment,
    flip_sign,
    random_shift,
    remix,
    swap_channels,
)


def _batch(batch: int = 8, sources: int = 4, channels: int = 2, time: int = 50) -> torch.Tensor:
    # every (item, source, channel) row is distinct and non-zero, so moves are traceable
    base = torch.randn(batch, sources, channels, time, generator=torch.Generator().manual_seed(0))
    return base + 10 * torch.arange(1, channels + 1, dtype=torch.float32)[:, None]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_flip_sign_keeps_magnitudes_and_flips_whole_sources() -> None:
    stems = _batch(64)
    out = flip_sign(stems, _gen())
    assert out.shape == stems.shape and out.dtype == stems.dtype
    assert torch.equal(out.abs(), stems.abs())
    kept = (out == stems).flatten(2).all(-1)
    flipped = (out == -stems).flatten(2).all(-1)
    assert torch.all(kept ^ flipped)
    assert 0.4 < flipped.float().mean().item() < 0.6


def test_swap_channels_permutes_the_channels_of_whole_sources() -> None:
    stems = _batch(64)
    out = swap_channels(stems, _gen(1))
    assert torch.equal(out.sort(dim=2).values, stems.sort(dim=2).values)
    kept = (out == stems).flatten(2).all(-1)
    swapped = (out == stems.flip(2)).flatten(2).all(-1)
    assert torch.all(kept ^ swapped)
    assert 0.4 < swapped.float().mean().item() < 0.6
    mono = _batch(4, channels=1)
    assert torch.equal(swap_channels(mono, _gen()), mono)


def test_random_shift_returns_slices_at_offsets_below_shift() -> None:
    stems = _batch(16, time=40)
    shift = 10
    out = random_shift(stems, shift, _gen(2))
    assert out.shape == (16, 4, 2, 30)
    offsets = set()
    for b in range(16):
        for s in range(4):
            matches = [
                o for o in range(shift) if torch.equal(out[b, s], stems[b, s, :, o : o + 30])
            ]
            assert len(matches) == 1, "each source is one slice of its own input"
            offsets.add(matches[0])
    assert len(offsets) > 5, "offsets are drawn per (item, source)"
    assert torch.equal(random_shift(stems, 0, _gen()), stems)
    with pytest.raises(ValueError, match="leave nothing"):
        random_shift(stems, 40, _gen())


def test_remix_permutes_each_source_within_groups() -> None:
    stems = _batch(8)
    out = remix(stems, group_size=4, generator=_gen(3))
    assert out.shape == stems.shape
    moved = False
    for group in range(2):
        items = slice(4 * group, 4 * group + 4)
        for s in range(4):
            before = {tuple(x.flatten().tolist()) for x in stems[items, s]}
            after = [tuple(x.flatten().tolist()) for x in out[items, s]]
            assert sorted(after) == sorted(before), "same multiset of this source's signals"
            moved |= after != [tuple(x.flatten().tolist()) for x in stems[items, s]]
    assert moved
    assert torch.equal(remix(stems, group_size=1, generator=_gen()), stems)
    with pytest.raises(ValueError, match="multiple of the group size"):
        remix(_batch(6), group_size=4)


def test_remix_permutes_sources_independently() -> None:
    stems = _batch(64, sources=4)
    out = remix(stems, group_size=64, generator=_gen(4))
    # find, for every output slot, which input item each source came from
    origin = torch.empty(64, 4, dtype=torch.long)
    for b in range(64):
        for s in range(4):
            origin[b, s] = int((stems[:, s] == out[b, s]).flatten(1).all(-1).nonzero())
    for s in range(4):
        assert sorted(origin[:, s].tolist()) == list(range(64))
    assert not torch.equal(origin[:, 0], origin[:, 1])


def test_augmentations_are_reproducible_with_a_seed() -> None:
    stems = _batch(8)
    augment = DemucsAugment(shift=10, group_size=4)
    first = augment(stems, _gen(7))
    assert first.shape == (8, 4, 2, 40)
    assert torch.equal(first, augment(stems, _gen(7)))
    assert not torch.equal(first, augment(stems, _gen(8)))
    for function in (flip_sign, swap_channels):
        assert torch.equal(function(stems, _gen(9)), function(stems, _gen(9)))
    assert torch.equal(random_shift(stems, 5, _gen(9)), random_shift(stems, 5, _gen(9)))
    assert torch.equal(remix(stems, 4, _gen(9)), remix(stems, 4, _gen(9)))


def test_inputs_are_checked_and_not_modified() -> None:
    stems = _batch(4)
    before = stems.clone()
    DemucsAugment(shift=5, group_size=2)(stems, _gen())
    assert torch.equal(stems, before)
    for function in (flip_sign, swap_channels):
        with pytest.raises(ValueError, match="batch of stems"):
            function(stems[0], _gen())
    with pytest.raises(ValueError, match="group_size"):
        DemucsAugment(group_size=0)
    assert "shift=5" in repr(DemucsAugment(shift=5))
