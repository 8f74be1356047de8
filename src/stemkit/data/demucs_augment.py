"""The batch augmentations of Demucs v1, applied to the stacked stems before mixing.

All act on a batch of stems ``(batch, nb_sources, nb_channels, time)`` and draw one decision
per ``(batch item, source)``, never per sample, so that each source stays one coherent signal.
They return new tensors, take their randomness from the ``generator`` passed in (``None``:
torch's global generator) and run on whatever device the stems are on; the draws are made on
the generator's device and moved. The recipe applies, in this order: :func:`flip_sign`,
:func:`swap_channels`, :func:`random_shift` (44100 samples at 44.1 kHz) and :func:`remix`
(groups of 4); :class:`DemucsAugment` chains them. The mixture is summed afterwards.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stemkit.data.augment import random_channel_swap


def _check_batch(stems: Tensor, what: str) -> None:
    if stems.dim() != 4:
        raise ValueError(
            f"{what} expects a batch of stems (batch, nb_sources, nb_channels, time); "
            f"got shape {tuple(stems.shape)}"
        )


def _device(generator: torch.Generator | None, stems: Tensor) -> torch.device:
    return generator.device if generator is not None else stems.device


def flip_sign(stems: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Multiply each source of each batch item by +1 or −1, with equal probability.

    Args:
        stems: ``(batch, nb_sources, nb_channels, time)``.
        generator: source of randomness.

    Returns:
        The same shape and dtype; ``|out| == |stems|`` everywhere.
    """
    _check_batch(stems, "flip_sign")
    batch, nb_sources = stems.shape[:2]
    draws = torch.randint(
        2, (batch, nb_sources, 1, 1), generator=generator, device=_device(generator, stems)
    )
    signs = (2 * draws - 1).to(device=stems.device, dtype=stems.dtype)
    return stems * signs


def swap_channels(stems: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Reverse the channel order (left ↔ right) of each source of each item with p = 0.5.

    Args:
        stems: ``(batch, nb_sources, nb_channels, time)``; mono comes back unchanged.
        generator: source of randomness.

    Returns:
        The same shape and dtype.
    """
    _check_batch(stems, "swap_channels")
    return random_channel_swap(stems, generator=generator, p=0.5)


def random_shift(stems: Tensor, shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Crop each source of each item at its own offset, uniform in ``[0, shift)``.

    The output is ``shift`` samples shorter than the input: the training windows are read that
    much longer than the model's input so that every offset gives a full crop.

    Args:
        stems: ``(batch, nb_sources, nb_channels, time)`` with ``time > shift``.
        shift: number of possible offsets; 0 returns the stems unchanged.
        generator: source of randomness.

    Returns:
        ``(batch, nb_sources, nb_channels, time - shift)``: ``out[b, s]`` is
        ``stems[b, s, :, o : o + time - shift]`` for the drawn offset ``o``.
    """
    _check_batch(stems, "random_shift")
    if shift < 0:
        raise ValueError(f"random_shift needs shift >= 0; got {shift}")
    if shift == 0:
        return stems.clone()
    batch, nb_sources, _, time = stems.shape
    length = time - shift
    if length < 1:
        raise ValueError(
            f"random_shift: stems of {time} samples leave nothing after a shift of {shift}; "
            "read longer excerpts or lower the shift"
        )
    offsets = torch.randint(
        shift, (batch, nb_sources), generator=generator, device=_device(generator, stems)
    ).tolist()
    # Slicing per (item, source) rather than one gather: a gather index would be as large as
    # the batch itself (int64), which at 64 × 4 × 2 × 450k samples is about 2 GB.
    crops = [
        torch.stack([stems[b, s, :, o : o + length] for s, o in enumerate(row)])
        for b, row in enumerate(offsets)
    ]
    return torch.stack(crops)


def remix(stems: Tensor, group_size: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """Shuffle each source across the items of consecutive groups of ``group_size`` items.

    Within each group, every source gets its own random permutation of the items, so item
    ``i`` of a group ends up with, say, the drums of item 2 and the bass of item 0: new
    mixtures out of the same stems.

    Args:
        stems: ``(batch, nb_sources, nb_channels, time)``, ``batch`` a multiple of
            ``group_size``.
        group_size: items per group; 1 leaves the batch unchanged.
        generator: source of randomness.

    Returns:
        The same shape; for each group and source, the same multiset of signals as the input.

    Raises:
        ValueError: the batch is not a multiple of ``group_size`` (drop the last, partial
            batch of the DataLoader, or change the batch size).
    """
    _check_batch(stems, "remix")
    batch, nb_sources = stems.shape[:2]
    if group_size < 1 or batch % group_size:
        raise ValueError(
            f"remix: a batch of {batch} items does not split into groups of {group_size}; use a "
            "batch size that is a multiple of the group size (and drop_last=True)"
        )
    groups = batch // group_size
    draws = torch.rand(
        groups, group_size, nb_sources, generator=generator, device=_device(generator, stems)
    )
    order = draws.argsort(dim=1).to(stems.device)  # (groups, group_size, nb_sources)
    item = order + group_size * torch.arange(groups, device=stems.device)[:, None, None]
    source = torch.arange(nb_sources, device=stems.device)
    return stems[item.reshape(batch, nb_sources), source]


class DemucsAugment(nn.Module):
    """The Demucs v1 augmentation chain: sign flip, channel swap, shift, remix.

    Args:
        shift: offsets of :func:`random_shift` in samples (44100 in the recipe); 0 disables it.
        group_size: groups of :func:`remix` (4 in the recipe); 1 disables it.
        flip: apply :func:`flip_sign`.
        swap: apply :func:`swap_channels`.

    Shapes:
        ``(batch, nb_sources, nb_channels, time)`` → ``(batch, nb_sources, nb_channels,
        time - shift)``.
    """

    def __init__(
        self, shift: int = 44100, group_size: int = 4, flip: bool = True, swap: bool = True
    ) -> None:
        super().__init__()
        if shift < 0 or group_size < 1:
            raise ValueError(
                f"DemucsAugment needs shift >= 0 and group_size >= 1; got shift={shift}, "
                f"group_size={group_size}"
            )
        self.shift = shift
        self.group_size = group_size
        self.flip = flip
        self.swap = swap

    def forward(self, stems: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch of stems (see the class docstring for shapes)."""
        out = stems
        if self.flip:
            out = flip_sign(out, generator)
        if self.swap:
            out = swap_channels(out, generator)
        if self.shift:
            out = random_shift(out, self.shift, generator)
        if self.group_size > 1:
            out = remix(out, self.group_size, generator)
        return out

    def extra_repr(self) -> str:
        return (
            f"shift={self.shift}, group_size={self.group_size}, flip={self.flip}, swap={self.swap}"
        )
