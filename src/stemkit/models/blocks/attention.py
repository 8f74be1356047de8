"""Full-band self-attention over frames, after TF-GridNet (Wang et al., 2023).

As added to band-split RNN by the replication (reference/spec-notes.md §4.4): each head
projects the ``N`` features of every (frame, band) to queries and keys of size ``E`` and to
values of size ``N / heads`` (kernel-1 convolutions, each followed by PReLU and a layer norm
over features × bands); one frame's query or key is then the flattened ``E × nb_bands``
vector, so a frame attends to other frames with all bands at once, logits scaled by
``1 / sqrt(E · nb_bands)``. The heads are concatenated, projected (convolution, PReLU, layer
norm) and added to the input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BandLayerNorm", "FullBandAttention"]


class BandLayerNorm(nn.Module):
    """Layer norm over features and bands, per frame, with a gain and bias per (feature, band).

    Args:
        n_features: feature (channel) axis size.
        n_bands: band axis size.
        eps: added to the variance.

    Shapes:
        forward: ``(batch, n_features, nb_frames, n_bands)`` → same shape.
    """

    def __init__(self, n_features: int, n_bands: int, eps: float = 1e-7) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, n_features, 1, n_bands))
        self.bias = nn.Parameter(torch.zeros(1, n_features, 1, n_bands))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` ``(batch, n_features, nb_frames, n_bands)``."""
        var, mean = torch.var_mean(x, dim=(1, 3), correction=0, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


def _project(in_channels: int, out_channels: int, n_bands: int, eps: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1),
        nn.PReLU(),
        BandLayerNorm(out_channels, n_bands, eps),
    )


class FullBandAttention(nn.Module):
    """Multi-head self-attention over frames with full-band queries and keys.

    Args:
        n_features: feature size ``N``; a multiple of ``n_heads``.
        n_bands: number of bands (the layer norms have per-band parameters).
        n_heads: attention heads.
        dim: ``E``, query/key size per band and head.
        eps: layer-norm epsilon.

    Shapes:
        forward: ``(batch, nb_bands, n_features, nb_frames)`` → same shape.
    """

    def __init__(
        self, n_features: int, n_bands: int, n_heads: int = 2, dim: int = 16, eps: float = 1e-7
    ) -> None:
        super().__init__()
        if n_heads <= 0 or n_features % n_heads:
            raise ValueError(
                f"attention needs a positive number of heads dividing n_features={n_features}, "
                f"got {n_heads}"
            )
        self.n_heads = n_heads
        value_dim = n_features // n_heads
        self.queries = nn.ModuleList(
            _project(n_features, dim, n_bands, eps) for _ in range(n_heads)
        )
        self.keys = nn.ModuleList(_project(n_features, dim, n_bands, eps) for _ in range(n_heads))
        self.values = nn.ModuleList(
            _project(n_features, value_dim, n_bands, eps) for _ in range(n_heads)
        )
        self.output = _project(n_features, n_features, n_bands, eps)

    def forward(self, x: Tensor) -> Tensor:
        """Attend over the frames of ``x`` ``(batch, nb_bands, n_features, nb_frames)``."""
        batch, nb_bands, n_features, nb_frames = x.shape
        grid = x.permute(0, 2, 3, 1)  # (batch, n_features, nb_frames, nb_bands)

        def frames(layers: nn.ModuleList) -> Tensor:
            # (batch, heads, nb_frames, size * nb_bands): one flat vector per frame
            per_head = [layer(grid).transpose(1, 2).flatten(2) for layer in layers]
            return torch.stack(per_head, dim=1)

        values = frames(self.values)
        # The default scale 1/sqrt(E · nb_bands) is the one of the reference.
        attended = F.scaled_dot_product_attention(frames(self.queries), frames(self.keys), values)
        attended = attended.unflatten(-1, (n_features // self.n_heads, nb_bands))
        # (batch, heads, nb_frames, value_dim, nb_bands) → (batch, n_features, nb_frames, bands)
        attended = attended.permute(0, 1, 3, 2, 4).reshape(batch, n_features, nb_frames, nb_bands)
        out = self.output(attended) + grid
        return out.permute(0, 3, 1, 2)
