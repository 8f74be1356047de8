"""Band split: cut a complex spectrogram into frequency bands and embed each band.

The band-split front end of band-split RNN (reference/spec-notes.md §4.3): for every band, the
real and imaginary parts of its bins become one feature vector per frame, normalised with a
one-group GroupNorm (statistics over the features and all frames of the excerpt) and projected
to ``n_features`` by a per-frame linear layer (a kernel-1 convolution).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BandSplit", "band_runs", "grouped_linear", "split_bands"]


def split_bands(spec: Tensor, band_widths: Sequence[int]) -> list[Tensor]:
    """Cut ``spec`` ``(..., nb_bins, nb_frames)`` into bands along the bin axis.

    Raises:
        ValueError: the widths do not add up to ``nb_bins``.
    """
    if sum(band_widths) != spec.shape[-2]:
        raise ValueError(
            f"bands of {sum(band_widths)} bins in all do not tile a spectrogram of "
            f"{spec.shape[-2]} bins; build the model with the same n_fft as the STFT"
        )
    return list(torch.split(spec, list(band_widths), dim=-2))


class BandSplit(nn.Module):
    """Per-band normalisation and projection of a complex spectrogram.

    Band ``k`` of width ``BW_k`` bins holds ``in_channels * 2 * BW_k`` real features per frame,
    ordered (channel, real/imaginary, bin); each band has its own ``GroupNorm(1, ·)`` and
    ``Conv1d(·, n_features, 1)``.

    Args:
        band_widths: bins per band, low to high; they must tile the spectrum.
        n_features: embedding size ``N`` of every band.
        in_channels: audio channels that enter one band together: 1 when stereo channels are
            separated as independent mono signals, 2 for the "naive" stereo model.
        eps: GroupNorm epsilon.

    Shapes:
        forward: complex ``(batch, in_channels, nb_bins, nb_frames)`` →
        real ``(batch, nb_bands, n_features, nb_frames)``.
    """

    def __init__(
        self,
        band_widths: Sequence[int],
        n_features: int,
        in_channels: int = 1,
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        self.band_widths = tuple(int(width) for width in band_widths)
        self.in_channels = in_channels
        self.norms = nn.ModuleList()
        self.projections = nn.ModuleList()
        for width in self.band_widths:
            size = 2 * in_channels * width
            self.norms.append(nn.GroupNorm(1, size, eps=eps))
            self.projections.append(nn.Conv1d(size, n_features, 1))

    def forward(self, spec: Tensor) -> Tensor:
        """Embed ``spec`` ``(batch, in_channels, nb_bins, nb_frames)``; see the class doc."""
        if spec.shape[1] != self.in_channels:
            raise ValueError(
                f"band split expects {self.in_channels} channel(s) per item, got {spec.shape[1]}"
            )
        if sum(self.band_widths) != spec.shape[-2]:
            split_bands(spec, self.band_widths)  # raises with the message
        batch, _, _, nb_frames = spec.shape
        # (batch, channels, real/imag, nb_bins, nb_frames)
        parts = torch.view_as_real(spec).permute(0, 1, 4, 2, 3)
        features = []
        # Consecutive bands of one width are normalised and projected together (one group norm
        # with a group per band, one batched product), instead of a Python loop over bands.
        for first, count, width in band_runs(self.band_widths):
            start = sum(self.band_widths[:first])
            run = parts[..., start : start + count * width, :]
            # (batch, count, channels · real/imag · width, nb_frames): each band's features in
            # the (channel, real/imag, bin) order of the per-band layers
            run = run.unflatten(3, (count, width)).permute(0, 3, 1, 2, 4, 5)
            run = run.reshape(batch, count * 2 * self.in_channels * width, nb_frames)
            norms = [cast(nn.GroupNorm, self.norms[i]) for i in range(first, first + count)]
            convs = [cast(nn.Conv1d, self.projections[i]) for i in range(first, first + count)]
            normed = F.group_norm(
                run,
                count,
                torch.cat([norm.weight for norm in norms]),
                torch.cat([norm.bias for norm in norms]),
                norms[0].eps,
            )
            features.append(grouped_linear(normed.unflatten(1, (count, -1)), convs))
        return torch.cat(features, dim=1)


def band_runs(band_widths: Sequence[int]) -> list[tuple[int, int, int]]:
    """Runs of consecutive bands of equal width: ``(first band, number of bands, width)``."""
    runs: list[tuple[int, int, int]] = []
    for index, width in enumerate(band_widths):
        if runs and runs[-1][2] == width:
            first, count, _ = runs[-1]
            runs[-1] = (first, count + 1, width)
        else:
            runs.append((index, 1, int(width)))
    return runs


def grouped_linear(x: Tensor, layers: Sequence[nn.Module]) -> Tensor:
    """Kernel-1 convolutions applied per group: ``layers[g](x[:, g])`` for every ``g`` at once.

    Args:
        x: ``(batch, groups, in_features, nb_frames)``.
        layers: one kernel-1 ``Conv1d`` per group, all of the same size.

    Returns:
        ``(batch, groups, out_features, nb_frames)``.
    """
    convs = [cast(nn.Conv1d, layer) for layer in layers]
    weight = torch.stack([conv.weight.squeeze(-1) for conv in convs])  # (groups, out, in)
    out = torch.matmul(weight, x)
    if convs[0].bias is not None:
        out = out + torch.stack([cast(Tensor, conv.bias) for conv in convs]).unsqueeze(-1)
    return out
