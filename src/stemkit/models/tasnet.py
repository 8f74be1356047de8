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
to the input length, so any length works. (The Demucs v1 release instead drops the last partial
frame and leaves its samples silent: ``pad_end=False``, for its published weights.)

Example:
    >>> from stemkit.models import build
    >>> model = build("convtasnet", X=10)
    >>> stems = model(mixture)  # (batch, 4, 2, time)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stemkit import MUSDB_SOURCES
from stemkit.models.base import SeparationModel
from stemkit.models.demucs import standardize
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
        if torch.is_grad_enabled():
            return x + self.net(x)
        return self.update_(x.clone())

    def update_(
        self, x: Tensor, hidden: Tensor | None = None, work: Tensor | None = None
    ) -> Tensor:
        """Add the block's output to ``x`` in place; inference only (autograd must be off).

        The same arithmetic as :meth:`forward` (equal within float32 rounding), arranged so that
        no full-size temporary is allocated: at music lengths each ``(batch, H, nb_frames)``
        tensor is hundreds of MB, and fresh pages cost more than the arithmetic on them.

        Args:
            x: ``(batch, B, nb_frames)``, overwritten with the result.
            hidden, work: optional ``(batch, H, nb_frames)`` scratch buffers, so that a stack of
                blocks can share two of them.

        Returns:
            ``x``.
        """
        if torch.is_grad_enabled():
            raise RuntimeError("TemporalBlock.update_ is for inference: wrap it in torch.no_grad()")
        layers = list(self.net)
        expand, depthwise, shrink = (cast(nn.Conv1d, layers[i]) for i in (0, 3, 6))
        act1, act2 = (cast(nn.PReLU, layers[i]) for i in (1, 4))
        norm1, norm2 = (cast(nn.GroupNorm, layers[i]) for i in (2, 5))
        batch, _, nb_frames = x.shape
        shape = (batch, expand.out_channels, nb_frames)
        if hidden is None or hidden.shape != shape:
            hidden = _frame_buffer(x, shape)
        if work is None or work.shape != shape:
            work = _frame_buffer(x, shape)
        torch.bmm(_batched(expand.weight, batch), x, out=hidden)
        _prelu_(hidden, act1)
        scale, shift = _gln_affine(hidden, norm1)
        _normalized_depthwise_conv(hidden, scale, shift, depthwise, out=work)
        _prelu_(work, act2)
        # The second norm folds into the last 1×1 convolution: W (s ⊙ h + t) = (W s) h + W t.
        scale, shift = _gln_affine(work, norm2)
        weight = shrink.weight.squeeze(-1)  # (B, H)
        x.add_(torch.matmul(shift, weight.t()).unsqueeze(-1))
        return x.baddbmm_(weight * scale.unsqueeze(1), work)


def _frame_buffer(like: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """An uninitialised ``(batch, channels, nb_frames)`` tensor whose rows start 64-byte aligned.

    A view into a buffer with ``nb_frames`` rounded up to a multiple of 16: with an odd row
    stride (640,000 samples make 63,999 frames) the matrix products run about 1.6× slower.
    """
    batch, channels, nb_frames = shape
    padded = -(-nb_frames // 16) * 16
    return like.new_empty(batch, channels, padded)[..., :nb_frames]


def _batched(weight: Tensor, batch: int) -> Tensor:
    """A 1×1 convolution's ``(out, in, 1)`` weight as ``(batch, out, in)`` for ``bmm``.

    ``matmul`` of a matrix with a batch of matrices copies the batch into a transposed layout;
    ``bmm`` on an expanded (stride 0) weight reads both in place.
    """
    return weight.squeeze(-1).expand(batch, -1, -1)


def _prelu_(x: Tensor, act: nn.PReLU) -> None:
    """PReLU of ``x`` in place (one shared slope is a leaky ReLU)."""
    if act.weight.numel() == 1:
        F.leaky_relu_(x, float(act.weight))
    else:
        x.copy_(act(x))


def _gln_affine(x: Tensor, norm: nn.GroupNorm) -> tuple[Tensor, Tensor]:
    """gLN of ``(batch, channels, nb_frames)`` as ``x * scale + shift``, both ``(batch, channels)``.

    Sums per channel row (short float32 accumulations; the row dot products run in BLAS)
    combined in float64 give the statistics at a small fraction of ``var_mean``'s cost. The
    caller folds the affine map into the next linear layer instead of rewriting ``x``.
    """
    if norm.num_groups != 1:
        raise ValueError(f"gLN has one group, got num_groups={norm.num_groups}")
    batch, channels, nb_frames = x.shape
    rows = x.reshape(batch * channels, 1, nb_frames)
    count = channels * nb_frames
    total = rows.sum(-1).view(batch, channels).double().sum(1)
    squares = torch.bmm(rows, rows.transpose(1, 2)).view(batch, channels).double().sum(1)
    mean = total / count
    variance = (squares / count - mean * mean).clamp_(min=0)
    scale = (variance + norm.eps).rsqrt()[:, None].expand(batch, channels)
    if norm.weight is not None:
        scale = norm.weight.double() * scale
    shift = -mean[:, None] * scale
    if norm.bias is not None:
        shift = norm.bias.double() + shift
    return scale.float(), shift.float()


def _normalized_depthwise_conv(
    x: Tensor, scale: Tensor, shift: Tensor, conv: nn.Conv1d, out: Tensor
) -> Tensor:
    """``conv(x * scale + shift)`` into ``out``, for a "same"-padded dilated depthwise ``conv``.

    One fused multiply-add per tap over shifted views (on one CPU thread several times faster
    than the general convolution kernel for depthwise filters), with the norm's scale folded
    into the taps and its shift into a bias. The padding is zeros *after* the norm, so near
    the edges a tap that falls into it must not contribute its share of the shift.

    Args:
        x: ``(batch, channels, nb_frames)``.
        scale, shift: ``(batch, channels)``.
        conv: depthwise, odd kernel, no bias.
        out: ``(batch, channels, nb_frames)``, not overlapping ``x``.
    """
    kernel = conv.kernel_size[0]
    dilation = conv.dilation[0]
    nb_frames = x.shape[-1]
    taps = conv.weight[:, 0, :]  # (channels, kernel)
    scaled = (taps * scale.unsqueeze(-1)).unsqueeze(-1)  # (batch, channels, kernel, 1)
    offsets = taps * shift.unsqueeze(-1)  # (batch, channels, kernel): each tap's shift share
    centre = kernel // 2
    inside = [k for k in range(kernel) if abs(k - centre) * dilation < nb_frames]
    bias = offsets[..., inside].sum(-1, keepdim=True)
    torch.addcmul(bias, x, scaled[:, :, centre], out=out)
    for k in inside:
        lag = (k - centre) * dilation  # output frame t reads input frame t + lag
        if lag < 0:
            out[..., -lag:].addcmul_(x[..., :lag], scaled[:, :, k])
            out[..., :-lag].sub_(offsets[:, :, k : k + 1])
        elif lag > 0:
            out[..., :-lag].addcmul_(x[..., lag:], scaled[:, :, k])
            out[..., -lag:].sub_(offsets[:, :, k : k + 1])
    return out


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
        normalize: standardise the mixture by the mean and standard deviation of its mono
            downmix (one pair per batch item) and map every output back with the same pair, as
            :class:`~stemkit.models.demucs.Demucs` does. Off by default; on for the Demucs v1
            release's Conv-TasNet weights, which were trained on and applied to standardised
            tracks (its ``separate.py``).
        pad_end: pad the end of the mixture to a whole frame (default), or, as the Demucs v1
            release does, drop the last partial frame and output silence for its ``< L / 2``
            samples (then a mixture shorter than ``L`` is still padded). The frames differ by
            one, and every global layer norm sees them all, so the release's weights are run
            with ``False`` to give the release's output.

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
        normalize: bool = False,
        pad_end: bool = True,
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
        self.normalize = normalize
        self.pad_end = pad_end

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
        if self.normalize:
            mixture, mean, std = standardize(mixture)
        if self.pad_end or length < self.filter_length:
            x = F.pad(mixture, (0, self.valid_length(length) - length))
        else:  # whole frames only, as the Demucs v1 release
            whole = (length - self.filter_length) // self.hop * self.hop
            x = mixture[..., : self.filter_length + whole]
        frames = F.relu(self.encoder(x))  # (batch, N, nb_frames)
        nb_frames = frames.shape[-1]
        if torch.is_grad_enabled():
            masks = F.relu(self.separator(frames))
            masks = masks.view(batch, len(self.sources), self.nb_filters, nb_frames)
            masked = frames.unsqueeze(1) * masks
        else:
            # Inference: the same arithmetic in place, so that no mask-sized temporary is made.
            masked = F.relu_(self._masks_inplace(frames))
            masked = masked.view(batch, len(self.sources), self.nb_filters, nb_frames)
            masked.mul_(frames.unsqueeze(1))
        # (batch, sources, channels × L, nb_frames): weight on the left keeps frames contiguous.
        flat = masked.reshape(batch * len(self.sources), self.nb_filters, nb_frames)
        samples = torch.bmm(self.decoder.weight.expand(flat.shape[0], -1, -1), flat)
        samples = samples.view(batch, len(self.sources), channels, 2, self.hop, nb_frames)
        # Hop = L / 2: frame k's first half lands on hop slot k, its second half on slot k + 1.
        stems = samples.new_zeros(batch, len(self.sources), channels, nb_frames + 1, self.hop)
        stems[..., :-1, :] += samples[:, :, :, 0].transpose(-1, -2)
        stems[..., 1:, :] += samples[:, :, :, 1].transpose(-1, -2)
        out = stems.flatten(-2)[..., :length]
        if out.shape[-1] < length:  # pad_end=False: the partial frame's samples are silent
            out = F.pad(out, (0, length - out.shape[-1]))
        if self.normalize:
            out = out * std.unsqueeze(1) + mean.unsqueeze(1)
        return out

    def _masks_inplace(self, frames: Tensor) -> Tensor:
        """The separator's output (before its ReLU) without autograd, updating blocks in place.

        ``(batch, N, nb_frames)`` → ``(batch, sources × N, nb_frames)``. The residual stream is
        updated in place and the blocks share two hidden-size scratch buffers.
        """
        layers = list(self.separator)
        norm, bottleneck, head = layers[0], cast(nn.Conv1d, layers[1]), cast(nn.Conv1d, layers[-1])
        blocks = [cast(TemporalBlock, block) for block in layers[2:-1]]
        # A 1×1 convolution is a matrix product; as one, it skips the slow generic conv kernel.
        normed = norm(frames)
        batch, _, nb_frames = normed.shape
        stream = _frame_buffer(normed, (batch, bottleneck.out_channels, nb_frames))
        torch.bmm(_batched(bottleneck.weight, batch), normed, out=stream)
        hidden: Tensor | None = None
        work: Tensor | None = None
        for block in blocks:
            if hidden is None:
                hidden_channels = cast(nn.Conv1d, block.net[0]).out_channels
                shape = (batch, hidden_channels, nb_frames)
                hidden, work = _frame_buffer(stream, shape), _frame_buffer(stream, shape)
            block.update_(stream, hidden, work)
        del hidden, work
        masks = _frame_buffer(stream, (batch, head.out_channels, nb_frames))
        return torch.bmm(_batched(head.weight, batch), stream, out=masks)
