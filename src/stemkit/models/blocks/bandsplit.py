"""Band split: cut a complex spectrogram into frequency bands and embed each band.

The band-split front end of band-split RNN (reference/spec-notes.md §4.3): for every band, the
real and imaginary parts of its bins become one feature vector per frame, normalised with a
one-group GroupNorm (statistics over the features and all frames of the excerpt) and projected
to ``n_features`` by a per-frame linear layer (a kernel-1 convolution).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["BandSplit", "split_bands"]


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
        batch, _, _, nb_frames = spec.shape
        # (batch, channels, real/imag, nb_bins, nb_frames)
        parts = torch.view_as_real(spec).permute(0, 1, 4, 2, 3)
        features = []
        for band, norm, projection in zip(
            split_bands(parts, self.band_widths), self.norms, self.projections, strict=True
        ):
            flat = band.reshape(batch, -1, nb_frames)
            features.append(projection(norm(flat)))
        return torch.stack(features, dim=1)
