"""Losses on masks: the stacked-hourglass objective, one L1 term per stack.

A stacked network (SH-Net, spec-notes §6) predicts a full set of masks after every stack and is
supervised at each of them ("intermediate supervision"), so that early stacks already produce
useful masks and the later ones refine them. Magnitudes are real, ``(batch, nb_sources,
nb_bins, nb_frames)`` for targets and masks, ``(batch, 1, nb_bins, nb_frames)`` for the mixture.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def stacked_mask_l1(masks: Sequence[Tensor], mix_mag: Tensor, target_mag: Tensor) -> Tensor:
    """``Σ_stacks mean|Y − X ⊙ M_stack|``: the SH-Net training loss.

    Each stack's masks are applied to the mixture magnitude and compared with the target
    magnitudes by the mean absolute error over sources, bins and frames; the stacks' terms are
    summed, not averaged, as in the reference code. Masks are used unclipped (clipping at 0
    is an inference-time step).

    Args:
        masks: one tensor ``(batch, nb_sources, nb_bins, nb_frames)`` per stack.
        mix_mag: mixture magnitude ``(batch, 1, nb_bins, nb_frames)``.
        target_mag: target magnitudes ``(batch, nb_sources, nb_bins, nb_frames)``.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: no masks, complex inputs, or shapes that do not broadcast as above.
    """
    if not masks:
        raise ValueError("stacked_mask_l1 needs the masks of at least one stack")
    if mix_mag.is_complex() or target_mag.is_complex():
        raise ValueError("stacked_mask_l1 compares magnitudes: pass real tensors (spec.abs())")
    if mix_mag.dim() != 4 or mix_mag.shape[1] != 1:
        raise ValueError(
            f"mix_mag must be (batch, 1, nb_bins, nb_frames), got {tuple(mix_mag.shape)}"
        )
    expected = (mix_mag.shape[0], target_mag.shape[1], *mix_mag.shape[2:])
    if target_mag.dim() != 4 or tuple(target_mag.shape) != expected:
        raise ValueError(
            f"target_mag {tuple(target_mag.shape)} does not match the mixture "
            f"{tuple(mix_mag.shape)}; expected {expected}"
        )
    total = torch.zeros((), dtype=mix_mag.dtype, device=mix_mag.device)
    for stack, mask in enumerate(masks):
        if tuple(mask.shape) != expected:
            raise ValueError(
                f"masks[{stack}] is {tuple(mask.shape)}, expected {expected} "
                "(batch, nb_sources, nb_bins, nb_frames)"
            )
        total = total + (target_mag - mix_mag * mask).abs().mean()
    return total
