"""Demucs v1 (Défossez, Usunier, Bottou & Bach, 2019): a waveform U-Net with a BLSTM bottleneck.

Architecture and recipe: reference/spec-notes.md §5. The stereo mixture goes through ``depth``
encoder layers, each a strided convolution (kernel 8, stride 4) and ReLU followed by a 1×1
convolution to twice the channels and a GLU; the channel count starts at ``channels`` and grows
by ``growth`` per layer. A 2-layer bidirectional LSTM (hidden size = last channel count) and a
linear projection back to that count form the bottleneck. The decoder mirrors the encoder: add
the centre-trimmed skip of the matching encoder layer, a ``context``-wide convolution to twice the
channels and a GLU, then a transposed convolution back to the previous channel count and a ReLU
(none on the last layer, which gives ``sources × audio_channels`` signals).

No convolution pads: the input is padded (centred) to :meth:`Demucs.valid_length`, for which
every convolution is full, and the output is centre-trimmed back to the input length, so any
length works.

Example:
    >>> from stemkit.models import build
    >>> model = build("demucs", channels=64)
    >>> stems = model(mixture)  # (batch, 4, 2, time)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stemkit import MUSDB_SOURCES
from stemkit.models.base import SeparationModel
from stemkit.models.registry import register

__all__ = ["BLSTM", "Demucs", "center_trim", "rescale_conv_weights", "standardize"]

# Added to the mixture's standard deviation so that a silent input does not divide by zero.
_NORM_EPS = 1e-5


def center_trim(signal: Tensor, length: int) -> Tensor:
    """The middle ``length`` samples of ``signal`` ``(..., time)``; one more is cut at the end
    than at the start when the excess is odd."""
    excess = signal.shape[-1] - length
    if excess < 0:
        raise ValueError(f"cannot trim {signal.shape[-1]} samples to {length}")
    start = excess // 2
    return signal[..., start : start + length]


def standardize(mixture: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(mixture - mean) / scale`` with the mean and standard deviation of the mono downmix.

    Args:
        mixture: ``(batch, channels, time)``.

    Returns:
        The standardised mixture, and ``mean`` and ``scale`` (the standard deviation plus a
        small constant, so that silence does not divide by zero), each ``(batch, 1, 1)``: the
        outputs go back with ``estimate * scale + mean``.
    """
    mono = mixture.mean(dim=1, keepdim=True)
    mean = mono.mean(dim=-1, keepdim=True)
    std = mono.std(dim=-1, keepdim=True) if mixture.shape[-1] > 1 else torch.zeros_like(mean)
    scale = std + _NORM_EPS
    return (mixture - mean) / scale, mean, scale


def rescale_conv_weights(module: nn.Module, reference: float) -> None:
    """Divide the weight and bias of every (transposed) 1-D convolution by ``sqrt(std / ref)``.

    ``std`` is the standard deviation of the convolution's weight after PyTorch's default
    initialisation; the new standard deviation is ``sqrt(std × reference)``, the geometric mean
    of the two, which halves the log-distance to ``reference``. Works on any device, ``meta``
    included (nothing is read back to the host).
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv1d, nn.ConvTranspose1d)):
            with torch.no_grad():
                scale = (layer.weight.std() / reference).sqrt()
                layer.weight.div_(scale)
                if layer.bias is not None:
                    layer.bias.div_(scale)


class BLSTM(nn.Module):
    """Bidirectional LSTM over frames followed by a linear map from ``2 × dim`` back to ``dim``.

    Shapes:
        forward: ``(batch, dim, nb_frames)`` → ``(batch, dim, nb_frames)``.
    """

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers=layers, bidirectional=True, batch_first=True)
        self.linear = nn.Linear(2 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Model the frame sequence; see the class docstring for shapes."""
        y, _ = self.lstm(x.transpose(1, 2))
        return self.linear(y).transpose(1, 2)


@register("demucs")
class Demucs(SeparationModel):
    """Demucs v1: waveform in, one waveform per source out.

    Args:
        sources: stem names, in the order of the output (our API uses the caller's order, e.g.
            MUSDB's vocals, drums, bass, other; Demucs' own checkpoints use drums, bass, other,
            vocals).
        audio_channels: 1 or 2.
        sample_rate: rate in Hz of the mixture (44100 for MUSDB18).
        channels: ``C1``, the channel count of the first encoder layer (100 in the paper, 64 in
            its ablation and in v2).
        depth: number of encoder (and decoder) layers.
        growth: channel multiplier from one layer to the next.
        kernel: kernel size of the strided (transposed) convolutions.
        stride: their stride.
        context: kernel size of the decoder convolution before each GLU.
        lstm_layers: layers of the bidirectional LSTM bottleneck (0: none).
        rescale: reference standard deviation of the rescaled initialisation (see
            :func:`rescale_conv_weights`); ``None`` or 0 keeps PyTorch's default.
        normalize: standardise the mixture by the mean and standard deviation of its mono
            downmix (one pair per batch item) before the network, and map every output back with
            the same pair. The recipe normalises each training track by these statistics; doing
            it inside the model lets training and separation take raw audio, and makes the model
            equivariant to the input gain (``model(k × x) ≈ k × model(x)``).

    Shapes:
        forward: ``(batch, audio_channels, time)`` → ``(batch, sources, audio_channels, time)``.
    """

    def __init__(
        self,
        sources: Sequence[str] = MUSDB_SOURCES,
        audio_channels: int = 2,
        sample_rate: int = 44100,
        channels: int = 100,
        depth: int = 6,
        growth: float = 2.0,
        kernel: int = 8,
        stride: int = 4,
        context: int = 3,
        lstm_layers: int = 2,
        rescale: float | None = 0.1,
        normalize: bool = True,
    ) -> None:
        super().__init__(tuple(sources), sample_rate, audio_channels)
        if not self.sources:
            raise ValueError("Demucs needs at least one source")
        for name, value in (("channels", channels), ("depth", depth), ("kernel", kernel)):
            if value < 1:
                raise ValueError(f"Demucs {name}={value}: must be at least 1")
        if not 1 <= stride <= kernel:
            raise ValueError(f"Demucs stride={stride}: must be between 1 and kernel={kernel}")
        if context < 1:
            raise ValueError(f"Demucs context={context}: must be at least 1")
        self.depth = depth
        self.kernel = kernel
        self.stride = stride
        self.context = context
        self.normalize = normalize

        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        in_channels = audio_channels
        width = channels
        for index in range(depth):
            self.encoder.append(
                nn.Sequential(
                    nn.Conv1d(in_channels, width, kernel, stride),
                    nn.ReLU(),
                    nn.Conv1d(width, 2 * width, 1),
                    nn.GLU(dim=1),
                )
            )
            # The outermost decoder layer emits every source's channels, and no ReLU: waveforms
            # are signed.
            out_channels = in_channels if index > 0 else len(self.sources) * audio_channels
            decode: list[nn.Module] = [
                nn.Conv1d(width, 2 * width, context),
                nn.GLU(dim=1),
                nn.ConvTranspose1d(width, out_channels, kernel, stride),
            ]
            if index > 0:
                decode.append(nn.ReLU())
            # Built outermost first, applied innermost first.
            self.decoder.insert(0, nn.Sequential(*decode))
            in_channels = width
            width = int(growth * width)
        self.lstm = BLSTM(in_channels, lstm_layers) if lstm_layers > 0 else None
        if rescale:
            rescale_conv_weights(self, rescale)

    @property
    def default_batch_size(self) -> int:
        """4: the bottleneck BLSTM runs one long sequence per chunk, each step a matrix-vector
        product that reads the whole recurrent weight (164 MB per direction and layer at
        C1=100) from memory; four chunks per call share every read. Measured at C1=100, 15 s
        chunks, one thread: 1.29× faster than one chunk per call (real-time factor 0.57 →
        0.44), 0.8 GB more peak memory (3.4 → 4.2 GB), the same stems up to float rounding.
        """
        return 4

    def valid_length(self, length: int) -> int:
        """The smallest input length, at least ``length``, whose convolutions are all full and
        whose output has at least ``length`` samples.

        Walks the decoder backwards from ``length`` output samples to the bottleneck length it
        needs (with ``context - 1`` extra frames per layer for the decoder's context convolution),
        then the encoder backwards from that length to the input. For the paper's 10 s targets at
        44.1 kHz (441000 samples) this is 451924.
        """
        if length < 1:
            raise ValueError(f"length={length}: must be at least 1")
        frames = length
        for _ in range(self.depth):
            frames = max(1, math.ceil((frames - self.kernel) / self.stride) + 1)
            frames += self.context - 1
        for _ in range(self.depth):
            frames = (frames - 1) * self.stride + self.kernel
        return int(frames)

    def forward(self, mixture: Tensor) -> Tensor:
        """Separate ``(batch, audio_channels, time)`` into ``(batch, sources, channels, time)``."""
        if mixture.dim() != 3 or mixture.shape[1] != self.audio_channels:
            raise ValueError(
                f"Demucs expects (batch, {self.audio_channels}, time), got {tuple(mixture.shape)}"
            )
        batch, _, length = mixture.shape
        x = mixture
        if self.normalize:
            x, mean, scale = standardize(mixture)
        padding = self.valid_length(length) - length
        x = F.pad(x, (padding // 2, padding - padding // 2))

        skips = []
        for encode in self.encoder:
            x = encode(x)
            skips.append(x)
        if self.lstm is not None:
            x = self.lstm(x)
        for decode in self.decoder:
            x = x + center_trim(skips.pop(), x.shape[-1])
            x = decode(x)

        x = center_trim(x, length)
        stems = x.reshape(batch, len(self.sources), self.audio_channels, length)
        if self.normalize:
            stems = stems * scale.unsqueeze(1) + mean.unsqueeze(1)
        return stems
