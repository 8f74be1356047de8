"""Per-band complex mask estimation (band-split RNN, reference/spec-notes.md §4.3).

Each band has its own small MLP on its ``N`` features per frame: ``GroupNorm(1, N)`` → ``N →
hN`` → tanh → ``hN → hN`` → tanh → ``hN → 4·C·BW``, with kernel-1 convolutions as per-frame
linear layers. The ``4·C·BW`` outputs are, per channel, two halves of a gated linear unit, each
holding a real and an imaginary part per bin: the mask is ``first half × sigmoid(second
half)``, a complex number per bin and frame, applied to the mixture by complex multiplication.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stemkit.models.blocks.bandsplit import band_runs, grouped_linear

__all__ = ["MaskEstimator"]


class MaskEstimator(nn.Module):
    """Complex masks for every band, from band features.

    Args:
        band_widths: bins per band, low to high.
        n_features: feature size ``N`` of the band embeddings.
        hidden_factor: width multiplier ``h`` of the two hidden layers (``fac_mask``).
        out_channels: audio channels estimated per item: 1 for independent mono channels, 2
            for the "naive" stereo model.
        eps: GroupNorm epsilon.

    Shapes:
        forward: ``(batch, nb_bands, n_features, nb_frames)`` →
        complex ``(batch, out_channels, nb_bins, nb_frames)``.
    """

    def __init__(
        self,
        band_widths: Sequence[int],
        n_features: int,
        hidden_factor: int = 4,
        out_channels: int = 1,
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        self.band_widths = tuple(int(width) for width in band_widths)
        self.out_channels = out_channels
        hidden = hidden_factor * n_features
        self.bands = nn.ModuleList(
            nn.Sequential(
                nn.GroupNorm(1, n_features, eps=eps),
                nn.Conv1d(n_features, hidden, 1),
                nn.Tanh(),
                nn.Conv1d(hidden, hidden, 1),
                nn.Tanh(),
                nn.Conv1d(hidden, 4 * out_channels * width, 1),
            )
            for width in self.band_widths
        )

    def forward(self, features: Tensor) -> Tensor:
        """Masks for ``features`` ``(batch, nb_bands, n_features, nb_frames)``."""
        if features.shape[1] != len(self.band_widths):
            raise ValueError(
                f"mask estimator has {len(self.band_widths)} bands, features have "
                f"{features.shape[1]}"
            )
        batch, nb_bands, n_features, nb_frames = features.shape
        # The per-band MLPs run batched over bands: the norm as one group norm with a group per
        # band, the two hidden layers (the same size in every band) as batched products, the
        # output layer per run of equal-width bands (bench/results/speed.md).
        layers = [cast(nn.Sequential, mlp) for mlp in self.bands]
        norms = [cast(nn.GroupNorm, mlp[0]) for mlp in layers]
        hidden = F.group_norm(
            features.reshape(batch, nb_bands * n_features, nb_frames),
            nb_bands,
            torch.cat([norm.weight for norm in norms]),
            torch.cat([norm.bias for norm in norms]),
            norms[0].eps,
        ).view(batch, nb_bands, n_features, nb_frames)
        hidden = torch.tanh(grouped_linear(hidden, [mlp[1] for mlp in layers]))
        hidden = torch.tanh(grouped_linear(hidden, [mlp[3] for mlp in layers]))
        masks = []
        for first, count, width in band_runs(self.band_widths):
            out = grouped_linear(
                hidden[:, first : first + count], [mlp[5] for mlp in layers[first : first + count]]
            )
            # (batch, bands, channels, GLU half, real/imag, bins, frames)
            out = out.view(batch, count, self.out_channels, 2, 2, width, nb_frames)
            # float32 before torch.complex, which has no bfloat16/half form (mixed precision).
            gated = (out[:, :, :, 0] * torch.sigmoid(out[:, :, :, 1])).float()
            # (batch, channels, real/imag, bands · bins, frames): bins in band order
            gated = gated.permute(0, 2, 3, 1, 4, 5).reshape(
                batch, self.out_channels, 2, count * width, nb_frames
            )
            masks.append(torch.complex(gated[:, :, 0], gated[:, :, 1]))
        return torch.cat(masks, dim=-2)
