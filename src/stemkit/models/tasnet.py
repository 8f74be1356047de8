"""Conv-TasNet (Luo & Mesgarani, 2019) adapted to stereo music, as in the Demucs v1 study.

Architecture: reference/spec-notes.md §5. A learned encoder (a bias-free convolution with ``N``
filters of ``L`` samples, hop ``L / 2``, over both stereo channels, then ReLU) turns the mixture
into ``nb_frames`` non-negative frames. The separator — channel-wise layer norm, a 1×1
bottleneck to ``B`` channels, ``R`` repeats of ``X`` dilated convolution blocks, and a 1×1
convolution to ``sources × N`` channels followed by ReLU — estimates one mask per source over
the encoder frames. The decoder maps each masked frame to ``audio_channels × L`` samples with a
bias-free linear layer and overlap-adds the frames (hop ``L / 2``).

Each block is 1×1 conv (``B → H``), PReLU, global layer norm, depthwise conv (kernel ``P``,
dilation ``2^x``, "same" padding), PReLU, global layer norm, 1×1 conv (``H → B``), plus the
residual: the music version has no separate skip-connection path (that is what gives the
published parameter counts, spec-notes §8). No layer has a bias except the norms and PReLUs.

The mixture is padded at the end so that the frames cover it exactly and the output is cut back
to the input length, so any length works.

Example:
    >>> from stemkit.models import build
    >>> model = build("convtasnet", X=10)
    >>> stems = model(mixture)  # (batch, 4, 2, time)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from stemkit import MUSDB_SOURCES
from stemkit.models.base import SeparationModel
from stemkit.models.registry import register

__all__ = ["ConvTasNet", "TemporalBlock", "channelwise_layer_norm", "global_layer_norm"]

# The reference's norm epsilon: small, since encoder frames can be tiny in quiet passages.
_EPS = 1e-8


def global_layer_norm(channels: int) -> nn.GroupNorm:
    """gLN: normalise each example over channels and time together, then a per-channel affine.

    One group spanning every channel is exactly that definition.
    """
    return nn.GroupNorm(1, channels, eps=_EPS)


class _ChannelwiseLayerNorm(nn.LayerNorm):
    """cLN: layer norm over the channels of each frame of ``(batch, channels, nb_frames)``."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def channelwise_layer_norm(channels: int) -> nn.LayerNorm:
    """cLN over the ``channels`` of ``(batch, channels, nb_frames)``, frame by frame."""
    return _ChannelwiseLayerNorm(channels, eps=_EPS)


class TemporalBlock(nn.Module):
    """One dilated convolution block with a residual connection.

    Args:
        bottleneck: ``B``, the channels in and out.
        hidden: ``H``, the channels of the depthwise convolution.
        kernel: ``P``, its kernel size (odd, so that "same" padding is symmetric).
        dilation: its dilation.

    Shapes:
        forward: ``(batch, B, nb_frames)`` → ``(batch, B, nb_frames)``.
    """

    def __init__(self, bottleneck: int, hidden: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(bottleneck, hidden, 1, bias=False),
            nn.PReLU(),
            global_layer_norm(hidden),
            nn.Conv1d(
                hidden,
                hidden,
                kernel,
                padding=(kernel - 1) * dilation // 2,
                dilation=dilation,
                groups=hidden,
                bias=False,
            ),
            nn.PReLU(),
            global_layer_norm(hidden),
            nn.Conv1d(hidden, bottleneck, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Residual update of ``x``; see the class docstring for shapes."""
        return x + self.net(x)


@register("convtasnet")
class ConvTasNet(SeparationModel):
    """Conv-TasNet for music: learned encoder, masks from a temporal convolution network.

    The argument names are the paper's hyper-parameter symbols (the registry builds the model
    from them: ``build("convtasnet", N=256, L=20, X=10)``).

    Args:
        sources: stem names, in output order.
        audio_channels: 1 or 2 (the encoder sees all channels, the decoder emits all of them).
        sample_rate: rate in Hz of the mixture.
        N: encoder filters.
        L: filter length in samples (even; the hop is ``L / 2``).
        B: bottleneck channels of the separator.
        H: channels inside each convolution block.
        P: kernel size of the depthwise convolutions (odd).
        X: blocks per repeat (dilations ``1, 2, …, 2^(X-1)``); 10 in the music paper's runs.
        R: repeats.

    Shapes:
        forward: ``(batch, audio_channels, time)`` → ``(batch, sources, audio_channels, time)``.
    """

    def __init__(
        self,
        sources: Sequence[str] = MUSDB_SOURCES,
        audio_channels: int = 2,
        sample_rate: int = 44100,
        N: int = 256,
        L: int = 20,
        B: int = 256,
        H: int = 512,
        P: int = 3,
        X: int = 10,
        R: int = 4,
    ) -> None:
        super().__init__(tuple(sources), sample_rate, audio_channels)
        if not self.sources:
            raise ValueError("ConvTasNet needs at least one source")
        for name, value in (("N", N), ("B", B), ("H", H), ("X", X), ("R", R)):
            if value < 1:
                raise ValueError(f"ConvTasNet {name}={value}: must be at least 1")
        if L < 2 or L % 2:
            raise ValueError(f"ConvTasNet L={L}: must be even and at least 2 (the hop is L / 2)")
        if P < 1 or P % 2 == 0:
            raise ValueError(f"ConvTasNet P={P}: must be odd so that frames stay aligned")
        self.nb_filters = N
        self.filter_length = L
        self.hop = L // 2

        self.encoder = nn.Conv1d(audio_channels, N, L, stride=self.hop, bias=False)
        self.separator = nn.Sequential(
            channelwise_layer_norm(N),
            nn.Conv1d(N, B, 1, bias=False),
            *[TemporalBlock(B, H, P, 2**x) for _ in range(R) for x in range(X)],
            nn.Conv1d(B, len(self.sources) * N, 1, bias=False),
        )
        self.decoder = nn.Linear(N, audio_channels * L, bias=False)
        # The reference draws every weight matrix and kernel from a Xavier normal.
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_normal_(parameter)

    def valid_length(self, length: int) -> int:
        """The smallest length ``>= length`` (and ``>= L``) that a whole number of hops covers."""
        if length < 1:
            raise ValueError(f"length={length}: must be at least 1")
        hops = max(0, math.ceil((length - self.filter_length) / self.hop))
        return self.filter_length + hops * self.hop

    def forward(self, mixture: Tensor) -> Tensor:
        """Separate ``(batch, audio_channels, time)`` into ``(batch, sources, channels, time)``."""
        if mixture.dim() != 3 or mixture.shape[1] != self.audio_channels:
            raise ValueError(
                f"ConvTasNet expects (batch, {self.audio_channels}, time), "
                f"got {tuple(mixture.shape)}"
            )
        batch, channels, length = mixture.shape
        x = F.pad(mixture, (0, self.valid_length(length) - length))
        frames = F.relu(self.encoder(x))  # (batch, N, nb_frames)
        nb_frames = frames.shape[-1]
        masks = F.relu(self.separator(frames))
        masks = masks.view(batch, len(self.sources), self.nb_filters, nb_frames)
        masked = (frames.unsqueeze(1) * masks).transpose(2, 3)  # (batch, sources, nb_frames, N)
        pieces = self.decoder(masked).view(
            batch, len(self.sources), nb_frames, channels, 2, self.hop
        )
        # Hop = L / 2: frame k's first half lands on hop slot k, its second half on slot k + 1.
        pieces = pieces.permute(0, 1, 3, 2, 4, 5)  # (batch, sources, channels, nb_frames, 2, hop)
        first = F.pad(pieces[..., 0, :], (0, 0, 0, 1))
        second = F.pad(pieces[..., 1, :], (0, 0, 1, 0))
        stems = (first + second).flatten(-2)  # (batch, sources, channels, (nb_frames + 1) × hop)
        return stems[..., :length]
