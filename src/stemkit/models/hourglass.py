"""Stacked hourglass network (SH-Net; Park, Kim, Lee, Kwak, ISMIR 2018) for spectrogram masking.

The layout follows the authors' released code (reference/spec-notes.md §6): 8 kHz mono, STFT
1024/256, the top bin dropped so that the network sees 512 bins × 64-frame patches normalised
by the mixture's largest magnitude; a convolutional stem; 4 stacked recursive hourglasses of
256 channels; after each one a mask per source, fed back into the next stack. Every
convolution has a bias and "same" padding and is followed by ReLU unless it is one of the
linear 1×1 projections (masks and re-injection). 34,176,776 parameters with 2 masks,
34,180,368 with 4.

The replication study's switches (published-tables.md §3) are arguments of :func:`shnet`:
``growth_step`` (its channel growth: 64 channels at full resolution, +64 per pooling),
``residual_source`` (predict n−1 sources, the last is the mixture minus the rest) and
``output="spectrogram"`` (magnitudes instead of masks).

:class:`StackedHourglass` maps patches to per-stack masks (the training view: the loss sums an
L1 term over the stacks); :class:`HourglassSeparator` is the waveform model: STFT, sliding-window
masking with the last stack, mixture phase, iSTFT.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stemkit.dsp.stft import ISTFT, STFT, magnitude
from stemkit.dsp.wiener import initial_estimates
from stemkit.losses.masking import stacked_mask_l1
from stemkit.models.base import SeparationModel
from stemkit.models.registry import register

__all__ = [
    "OUTPUTS",
    "HourglassSeparator",
    "StackedHourglass",
    "growth_channels",
    "shnet",
    "stacked_mask_loss",
    "study_growth_channels",
    "window_plan",
]

#: Channels of the stem convolutions before the last one, which outputs the hourglass width.
STEM_CHANNELS = (64, 128, 128, 128)
#: What the last convolution of each stack predicts: a mask per source (the reference), or the
#: (normalised) magnitude of each source directly (the study's "spectrogram" switch).
OUTPUTS = ("mask", "spectrogram")
#: Floor of the normalising maximum, so that digital silence stays silence instead of NaN.
_TINY = 1e-8


def _conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    # The authors' initialisation: normal weights with variance 1 / fan_in, zero biases.
    nn.init.normal_(conv.weight, std=(1.0 / (in_channels * kernel_size**2)) ** 0.5)
    assert conv.bias is not None
    nn.init.zeros_(conv.bias)
    return conv


class Hourglass(nn.Module):
    """One recursive hourglass level.

    ``out = relu(up(x)) + upsample(relu(low3(inner(relu(low1(maxpool(x)))))))``, where
    ``inner`` is the next level or, at the bottom, one more 3×3 conv + ReLU. The pooling is
    2×2/2 with the last partial window kept (TensorFlow "SAME"), the upsampling nearest-neighbour
    back to the size of ``x``, so odd sizes work.

    Args:
        channels: input and output channels of this level.
        level_channels: channels of the lower branch at each deeper level, outermost first;
            its length is the number of levels below this one.

    Shapes:
        forward: ``(batch, channels, nb_bins, nb_frames)`` → same.
    """

    def __init__(self, channels: int, level_channels: Sequence[int]) -> None:
        super().__init__()
        if not level_channels:
            raise ValueError("an hourglass needs at least one level")
        inner_channels = int(level_channels[0])
        self.up1 = _conv(channels, channels, 3)
        self.low1 = _conv(channels, inner_channels, 3)
        self.low2: nn.Module
        if len(level_channels) > 1:
            self.low2 = Hourglass(inner_channels, level_channels[1:])
        else:
            self.low2 = nn.Sequential(_conv(inner_channels, inner_channels, 3), nn.ReLU())
        self.low3 = _conv(inner_channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        # without autograd, nothing keeps the intermediate results: update them in place
        inplace = not torch.is_grad_enabled()
        upper = F.relu(self.up1(x), inplace=inplace)
        lower = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
        lower = F.relu(self.low1(lower), inplace=inplace)
        lower = F.relu(self.low3(self.low2(lower)), inplace=inplace)
        lower = F.interpolate(lower, size=x.shape[-2:], mode="nearest")
        return upper.add_(lower) if inplace else upper + lower


def growth_channels(channels: int, depth: int) -> list[int]:
    """Lower-branch widths of the channel-growth variant, outermost level first.

    Start at half the width and grow by a quarter of it per level: 128, 192, 256, 320 for
    ``channels=256, depth=4`` (27,392,008 parameters with 2 masks, 20 % below the constant
    256-channel hourglass).
    """
    if channels < 4:
        raise ValueError(f"channel growth needs channels >= 4, got {channels}")
    return [channels // 2 + level * (channels // 4) for level in range(depth)]


def study_growth_channels(start: int, step: int, depth: int) -> list[int]:
    """Lower-branch widths of the replication study's channel-growth variant.

    The hourglass starts at ``start`` channels at full resolution and gains ``step`` channels
    per pooling (losing them again per upsampling): ``start + step``, ``start + 2·step``, …,
    outermost level first, e.g. 128, 192, 256, 320 for ``start=step=64, depth=4``.
    """
    if start < 1 or step < 0 or depth < 1:
        raise ValueError(f"need start >= 1, step >= 0, depth >= 1; got {start}, {step}, {depth}")
    return [start + (level + 1) * step for level in range(depth)]


class StackedHourglass(nn.Module):
    """SH-Net core: normalised magnitude patches in, one set of masks per stack out.

    Stem: 7×7 conv 1→64, 3×3 64→128, 128→128, 128→128, 128→``channels`` (ReLU after each).
    Each stack: hourglass → 3×3 conv → 1×1 conv (ReLU after both) → linear 1×1 conv to
    ``nb_sources`` masks; before every stack but the last, the features are updated as
    ``features + 1×1(stack features) + 1×1(masks)`` (both linear).

    Args:
        nb_sources: masks per stack.
        channels: hourglass width (256).
        nb_stacks: hourglasses (4).
        depth: levels per hourglass, i.e. max-poolings (4).
        level_channels: lower-branch widths per level, outermost first (length ``depth``);
            ``None`` keeps ``channels`` everywhere, as the reference code does.
        stem_channels: widths of the stem convolutions before the last one (4 values;
            ``None``: the reference 64, 128, 128, 128). They run at full resolution, so they
            dominate the cost of a narrow network.

    Shapes:
        forward: ``(batch, 1, nb_bins, nb_frames)`` → list of ``nb_stacks`` tensors
        ``(batch, nb_sources, nb_bins, nb_frames)``.
    """

    def __init__(
        self,
        nb_sources: int = 2,
        channels: int = 256,
        nb_stacks: int = 4,
        depth: int = 4,
        level_channels: Sequence[int] | None = None,
        stem_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if nb_sources < 1 or channels < 1 or nb_stacks < 1 or depth < 1:
            raise ValueError(
                "nb_sources, channels, nb_stacks and depth must be positive, got "
                f"{nb_sources}, {channels}, {nb_stacks}, {depth}"
            )
        levels = [channels] * depth if level_channels is None else [int(c) for c in level_channels]
        if len(levels) != depth or min(levels) < 1:
            raise ValueError(f"level_channels needs {depth} positive widths, got {level_channels}")
        stem = STEM_CHANNELS if stem_channels is None else tuple(int(c) for c in stem_channels)
        if len(stem) != len(STEM_CHANNELS) or min(stem) < 1:
            raise ValueError(
                f"stem_channels needs {len(STEM_CHANNELS)} positive widths, got {stem_channels}"
            )
        self.nb_sources = nb_sources
        self.nb_stacks = nb_stacks
        widths = (1, *stem, channels)
        kernels = (7, 3, 3, 3, 3)
        self.stem = nn.Sequential(
            *(
                layer
                for c_in, c_out, k in zip(widths[:-1], widths[1:], kernels, strict=True)
                for layer in (_conv(c_in, c_out, k), nn.ReLU())
            )
        )
        self.hourglasses = nn.ModuleList(Hourglass(channels, levels) for _ in range(nb_stacks))
        self.features = nn.ModuleList(
            nn.Sequential(
                _conv(channels, channels, 3), nn.ReLU(), _conv(channels, channels, 1), nn.ReLU()
            )
            for _ in range(nb_stacks)
        )
        self.masks = nn.ModuleList(_conv(channels, nb_sources, 1) for _ in range(nb_stacks))
        self.merge_features = nn.ModuleList(
            _conv(channels, channels, 1) for _ in range(nb_stacks - 1)
        )
        self.merge_masks = nn.ModuleList(
            _conv(nb_sources, channels, 1) for _ in range(nb_stacks - 1)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """Masks of every stack for patches ``x`` ``(batch, 1, nb_bins, nb_frames)``."""
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(
                f"StackedHourglass expects patches (batch, 1, nb_bins, nb_frames), got "
                f"{tuple(x.shape)}"
            )
        h = self.stem[0](x)
        if not _channels_last_inference(h):
            h = self.stem[1:](h)
            outputs = []
            for stack in range(self.nb_stacks):
                features = self.features[stack](self.hourglasses[stack](h))
                masks = self.masks[stack](features)
                outputs.append(masks)
                if stack < self.nb_stacks - 1:
                    h = h + self.merge_features[stack](features) + self.merge_masks[stack](masks)
            return outputs
        # Inference: the same layers, arranged for speed (bench/results/speed.md). oneDNN's
        # convolutions run about 1.6x faster on channels-last activations on one CPU thread; the
        # first convolution's single input channel leaves the layout ambiguous, so the switch
        # comes after it, and every later layer keeps the layout. ReLUs and residual sums update
        # their input in place: without autograd nothing else holds it.
        h = F.relu_(h.contiguous(memory_format=torch.channels_last))
        for conv in list(self.stem)[2::2]:  # (conv, ReLU) pairs
            h = F.relu_(conv(h))
        outputs = []
        for stack in range(self.nb_stacks):
            layers = cast(nn.Sequential, self.features[stack])  # conv 3×3, ReLU, conv 1×1, ReLU
            features = F.relu_(layers[2](F.relu_(layers[0](self.hourglasses[stack](h)))))
            masks = self.masks[stack](features)
            outputs.append(masks)
            if stack < self.nb_stacks - 1:
                h.add_(self.merge_features[stack](features)).add_(self.merge_masks[stack](masks))
        return outputs


def _channels_last_inference(x: Tensor) -> bool:
    """Whether to run the convolutions on channels-last activations: inference, not exporting."""
    return not (torch.is_grad_enabled() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def window_plan(nb_frames: int, patch_frames: int) -> list[tuple[int, int, int]]:
    """Which frames each sliding window contributes, covering ``[0, nb_frames)`` exactly once.

    Windows of ``patch_frames`` start every ``patch_frames // 2`` frames while they end before
    the last frame; one more window is aligned with the end. Each window keeps its central half
    (frames 16–48 of 64), except that the first keeps everything from frame 0 and the last
    everything up to the end. The reference code keeps the same frames, but leaves the first
    16 frames empty when the input is exactly one window long; here every frame is covered.

    Args:
        nb_frames: frames of the spectrogram, at least ``patch_frames`` (pad shorter inputs).
        patch_frames: window length, a multiple of 4.

    Returns:
        ``(start, keep_from, keep_to)`` per window, in frames of the full spectrogram: the
        window spans ``[start, start + patch_frames)`` and contributes
        ``[keep_from, keep_to)``; the kept ranges are contiguous and disjoint.
    """
    if patch_frames < 4 or patch_frames % 4:
        raise ValueError(f"patch_frames must be a positive multiple of 4, got {patch_frames}")
    if nb_frames < patch_frames:
        raise ValueError(f"{nb_frames} frames are fewer than one window of {patch_frames}")
    hop, margin = patch_frames // 2, patch_frames // 4
    # regular windows: those that end before the last frame
    starts = range(0, nb_frames - patch_frames, hop)
    keep_from = [start + margin if start else 0 for start in starts]
    tail_from = len(starts) * hop + margin if starts else 0
    keep_to = [*keep_from[1:], tail_from][: len(starts)]
    plan = list(zip(starts, keep_from, keep_to, strict=True))
    plan.append((nb_frames - patch_frames, tail_from, nb_frames))
    return plan


class HourglassSeparator(SeparationModel):
    """Waveform model around :class:`StackedHourglass`: mono STFT masking at a fixed rate.

    ``forward``: STFT (centred) → magnitude → divide by the mixture's largest magnitude →
    sliding 64-frame windows (:func:`window_plan`), batched → masks of the last stack, clipped
    at 0 → × mixture magnitude → mixture phase → iSTFT. The network sees the first
    ``n_fft // 2`` bins; the top (Nyquist) bin takes the mask of the bin below it, where the
    reference code drops it. Normalisation uses the whole input, so chunked inference
    normalises each chunk by its own maximum.

    Args:
        net: the core; its ``nb_sources`` must equal ``len(sources)``.
        sources: stem names, in mask order.
        sample_rate: rate in Hz (8000).
        n_fft: FFT size (1024).
        n_hop: hop size (256).
        patch_frames: window length in frames (64), a multiple of 4.
        window_batch: windows per network call; bounds memory on long inputs.
        residual_source: the network predicts the first ``len(sources) − 1`` sources and the
            last one is the mixture minus the rest (mask ``1 − Σ`` the other masks, or the
            mixture magnitude minus the other spectrograms); the study's "n−1" switch.
        output: ``"mask"`` (the reference: masks applied to the mixture magnitude) or
            ``"spectrogram"`` (the network's outputs are the normalised source magnitudes).

    Shapes:
        forward: ``(batch, 1, time)`` → ``(batch, nb_sources, 1, time)``.
    """

    def __init__(
        self,
        net: StackedHourglass,
        *,
        sources: Sequence[str],
        sample_rate: int = 8000,
        n_fft: int = 1024,
        n_hop: int = 256,
        patch_frames: int = 64,
        window_batch: int = 4,
        residual_source: bool = False,
        output: str = "mask",
    ) -> None:
        sources = list(sources)
        if len(sources) - int(residual_source) != net.nb_sources:
            raise ValueError(
                f"{len(sources)} source names for a network with {net.nb_sources} outputs"
                + (" (one source is the residual)" if residual_source else "")
            )
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}; got {output!r}")
        if len(set(sources)) != len(sources):
            raise ValueError(f"source names must be unique, got {sources}")
        if patch_frames < 4 or patch_frames % 4:
            raise ValueError(f"patch_frames must be a positive multiple of 4, got {patch_frames}")
        if window_batch < 1:
            raise ValueError(f"window_batch must be positive, got {window_batch}")
        super().__init__(sources, sample_rate=sample_rate, audio_channels=1, causal=False)
        self.net = net
        self.n_fft = n_fft
        self.n_hop = n_hop
        self.patch_frames = patch_frames
        self.window_batch = window_batch
        self.residual_source = bool(residual_source)
        self.output = output
        self.stft = STFT(n_fft, n_hop, center=True)
        self.istft = ISTFT(n_fft, n_hop, center=True)

    @property
    def nb_bins(self) -> int:
        """Bins the network sees, ``n_fft // 2`` (the STFT has one more)."""
        return self.n_fft // 2

    def _check_waveform(self, waveform: Tensor) -> None:
        if waveform.dim() < 2 or waveform.shape[-2] != 1:
            raise ValueError(
                "SH-Net separates mono audio (..., 1, time); got shape "
                f"{tuple(waveform.shape)}: average the channels first"
            )

    def magnitudes(self, waveform: Tensor) -> Tensor:
        """Mixture (or target) magnitude spectrogram, all bins, not normalised.

        Args:
            waveform: ``(..., 1, time)``.

        Returns:
            ``(..., 1, n_fft // 2 + 1, nb_frames)``; the network uses the first
            :attr:`nb_bins`.
        """
        self._check_waveform(waveform)
        return magnitude(self.stft(waveform))

    @staticmethod
    def normaliser(mix_mag: Tensor) -> Tensor:
        """Largest magnitude per item, ``(batch, 1, 1, 1)`` for ``(batch, 1, bins, frames)``.

        The reference recipe divides the mixture and the target magnitudes by it.
        """
        return mix_mag.amax(dim=(-3, -2, -1), keepdim=True).clamp_min(_TINY)

    def complete(self, outputs: Tensor, mix_mag: Tensor) -> Tensor:
        """Add the residual source to the network's outputs when it predicts ``n − 1``.

        Args:
            outputs: masks or normalised magnitudes ``(batch, nb_outputs, bins, frames)``.
            mix_mag: the normalised mixture magnitude ``(batch, 1, bins, frames)``.

        Returns:
            ``(batch, nb_sources, bins, frames)``: ``outputs`` itself, or with the last source
            appended as ``1 − Σ masks`` (``output="mask"``) or ``mix_mag − Σ spectrograms``.
        """
        if not self.residual_source:
            return outputs
        whole = torch.ones_like(mix_mag) if self.output == "mask" else mix_mag
        return torch.cat([outputs, whole - outputs.sum(dim=1, keepdim=True)], dim=1)

    def stack_masks(self, mix_mag_patches: Tensor) -> list[Tensor]:
        """Outputs of every stack, for the training loss ``Σ_stacks mean|Y − X ⊙ M|``.

        Args:
            mix_mag_patches: normalised mixture magnitudes ``(batch, 1, nb_bins, patch_frames)``
                (see :meth:`normaliser`; ``nb_bins`` = ``n_fft // 2``).

        Returns:
            ``nb_stacks`` tensors ``(batch, nb_sources, nb_bins, patch_frames)``, unclipped:
            masks, or normalised magnitudes with ``output="spectrogram"``; with
            ``residual_source``, the last source completed by :meth:`complete`.
        """
        if mix_mag_patches.dim() != 4 or mix_mag_patches.shape[-2] != self.nb_bins:
            raise ValueError(
                f"expected patches (batch, 1, {self.nb_bins}, nb_frames), got "
                f"{tuple(mix_mag_patches.shape)}"
            )
        return [self.complete(out, mix_mag_patches) for out in self.net(mix_mag_patches)]

    def _last_stack(self, mix_mag: Tensor) -> tuple[Tensor, Tensor]:
        """Last-stack outputs over a whole spectrogram by sliding windows, and the normaliser.

        Args:
            mix_mag: ``(batch, 1, n_fft // 2 + 1, nb_frames)``, not normalised.

        Returns:
            Outputs ``(batch, nb_sources, n_fft // 2, nb_frames)`` (unclipped, completed) and
            the normaliser ``(batch, 1, 1, 1)``.
        """
        if mix_mag.dim() != 4 or mix_mag.shape[1:3] != (1, self.nb_bins + 1):
            raise ValueError(
                f"expected (batch, 1, {self.nb_bins + 1}, nb_frames), got {tuple(mix_mag.shape)}"
            )
        batch, _, _, nb_frames = mix_mag.shape
        scale = self.normaliser(mix_mag)
        x = (mix_mag / scale)[..., : self.nb_bins, :]
        if nb_frames < self.patch_frames:
            x = F.pad(x, (0, self.patch_frames - nb_frames))
        plan = window_plan(x.shape[-1], self.patch_frames)
        # (batch · nb_windows, 1, nb_bins, patch_frames), window-major within each item
        windows = torch.stack([x[..., s : s + self.patch_frames] for s, _, _ in plan], dim=1)
        windows = windows.flatten(0, 1)
        outputs = [self.net(chunk)[-1] for chunk in windows.split(self.window_batch)]
        raw = torch.cat(outputs).unflatten(0, (batch, len(plan)))
        pieces = [raw[:, k, ..., a - s : b - s] for k, (s, a, b) in enumerate(plan)]
        full = torch.cat(pieces, dim=-1)[..., :nb_frames]
        return self.complete(full, x[..., :nb_frames]), scale

    def masks(self, mix_mag: Tensor) -> Tensor:
        """Last-stack masks over a whole spectrogram by sliding windows.

        With ``output="spectrogram"`` these are the estimated magnitudes over the mixture's
        (0 where the mixture is 0), so that masks × mixture is the estimate either way.

        Args:
            mix_mag: ``(batch, 1, n_fft // 2 + 1, nb_frames)``, not normalised.

        Returns:
            ``(batch, nb_sources, 1, n_fft // 2 + 1, nb_frames)``, non-negative.
        """
        full, scale = self._last_stack(mix_mag)
        full = full.clamp_min(0)
        if self.output == "spectrogram":
            seen = mix_mag[..., : self.nb_bins, :]
            full = torch.where(seen > 0, full * scale / seen.clamp_min(_TINY), 0.0)
        # the Nyquist bin, which the network does not see, shares the mask of its neighbour
        full = torch.cat([full, full[..., -1:, :]], dim=-2)
        return full.unsqueeze(2)

    def forward_magnitudes(self, mix_mag: Tensor) -> Tensor:
        """Magnitude estimates: last-stack masks × ``mix_mag``.

        Args:
            mix_mag: ``(batch, 1, n_fft // 2 + 1, nb_frames)``.

        Returns:
            ``(batch, nb_sources, 1, n_fft // 2 + 1, nb_frames)``.
        """
        return self.masks(mix_mag) * mix_mag.unsqueeze(1)

    def training_loss(self, mixture: Tensor, stems: Tensor, loss_name: str) -> Tensor:
        """``stacked_l1`` (:func:`stacked_mask_loss`, the SH-Net recipe); other names as
        :meth:`SeparationModel.training_loss`."""
        if loss_name == "stacked_l1":
            return stacked_mask_loss(self, mixture, stems)
        return super().training_loss(mixture, stems, loss_name)

    def forward(self, mixture: Tensor) -> Tensor:
        """Separate ``mixture`` ``(batch, 1, time)`` into ``(batch, nb_sources, 1, time)``."""
        if mixture.dim() != 3:
            raise ValueError(
                f"expected a waveform (batch, 1, time), got shape {tuple(mixture.shape)}"
            )
        self._check_waveform(mixture)
        mix_stft = self.stft(mixture)
        estimates = self.forward_magnitudes(magnitude(mix_stft))
        return self.istft(initial_estimates(estimates, mix_stft), length=mixture.shape[-1])


def stacked_mask_loss(model: HourglassSeparator, mixture: Tensor, stems: Tensor) -> Tensor:
    """SH-Net training loss on one batch of excerpts: ``Σ_stacks mean|Y − X ⊙ M_stack|``.

    The reference recipe: mixture and target magnitudes (centred STFT) are both divided by the
    largest mixture magnitude of each excerpt, the top (Nyquist) bin is dropped, and every
    stack's masks are applied to the mixture (:func:`stemkit.losses.stacked_mask_l1`). The
    whole excerpt is one patch, so an excerpt of ``(patch_frames − 1) · n_hop + 1`` samples
    gives exactly the reference's 64-frame patches; other lengths work too.

    Args:
        model: the SH-Net separator being trained.
        mixture: ``(batch, 1, time)``, the sum of ``stems`` (mono).
        stems: ``(batch, nb_sources, 1, time)`` in ``model.sources`` order.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: shapes that are not mono batches of matching length and source count.
    """
    if mixture.dim() != 3 or stems.dim() != 4:
        raise ValueError(
            f"expected mixture (batch, 1, time) and stems (batch, nb_sources, 1, time), got "
            f"{tuple(mixture.shape)} and {tuple(stems.shape)}"
        )
    if stems.shape[1] != len(model.sources) or stems.shape[0] != mixture.shape[0]:
        raise ValueError(
            f"stems {tuple(stems.shape)} do not hold {len(model.sources)} sources "
            f"({', '.join(model.sources)}) for a batch of {mixture.shape[0]}"
        )
    if stems.shape[-1] != mixture.shape[-1]:
        raise ValueError(f"mixture has {mixture.shape[-1]} samples but the stems {stems.shape[-1]}")
    mix_mag = model.magnitudes(mixture)
    scale = model.normaliser(mix_mag)
    mix_mag = (mix_mag / scale)[..., : model.nb_bins, :]
    # (batch, nb_sources, 1, bins, frames) -> (batch, nb_sources, bins, frames)
    target_mag = (model.magnitudes(stems) / scale.unsqueeze(1))[..., 0, : model.nb_bins, :]
    outputs = model.stack_masks(mix_mag)
    if model.output == "spectrogram":
        # Σ_stacks mean|Y − S_stack|: the same L1 with the outputs as the estimates themselves
        return stacked_mask_l1(outputs, torch.ones_like(mix_mag), target_mag)
    return stacked_mask_l1(outputs, mix_mag, target_mag)


@register("shnet")
def shnet(
    sources: Sequence[str] = ("accompaniment", "vocals"),
    channels: int = 256,
    nb_stacks: int = 4,
    depth: int = 4,
    channel_growth: bool = False,
    stem_channels: Sequence[int] | None = None,
    sample_rate: int = 8000,
    n_fft: int = 1024,
    n_hop: int = 256,
    patch_frames: int = 64,
    window_batch: int = 4,
    growth_step: int | None = None,
    residual_source: bool = False,
    output: str = "mask",
) -> HourglassSeparator:
    """SH-Net separator; the defaults are the reference MIR-1K configuration.

    ``sources`` of length 2 (MIR-1K: accompaniment = left channel, vocals = right) or 4
    (DSD100: bass, drums, other, vocals) give 34,176,776 and 34,180,368 parameters.

    Args:
        sources: stem names, one mask each.
        channels: hourglass width.
        nb_stacks: stacked hourglasses.
        depth: levels per hourglass.
        channel_growth: lower-branch widths growing with depth (:func:`growth_channels`)
            instead of a constant ``channels``; about 20 % fewer parameters.
        stem_channels: widths of the first four stem convolutions (``None``: 64, 128, 128,
            128, the reference); narrow them for small, fast networks.
        sample_rate: rate in Hz.
        n_fft: FFT size; the network sees ``n_fft // 2`` bins.
        n_hop: hop size.
        patch_frames: frames per window.
        window_batch: windows per network call at separation time.
        growth_step: the replication study's channel growth (:func:`study_growth_channels`):
            the hourglass is ``channels`` wide at full resolution and gains ``growth_step``
            channels per pooling (the study: ``channels=64, growth_step=64``); excludes
            ``channel_growth``.
        residual_source: predict all sources but the last, which is the mixture minus the
            rest (:class:`HourglassSeparator`).
        output: ``"mask"`` or ``"spectrogram"`` (direct magnitude output).
    """
    sources = list(sources)
    if channel_growth and growth_step is not None:
        raise ValueError("channel_growth and growth_step are two growth rules: choose one")
    if residual_source and len(sources) < 2:
        raise ValueError("residual_source needs at least two sources")
    if not sources:
        raise ValueError("shnet needs at least one source name")
    if n_fft // 2 < 2**depth:
        raise ValueError(
            f"n_fft={n_fft} gives {n_fft // 2} bins, too few for {depth} poolings; "
            f"use n_fft >= {2 ** (depth + 1)}"
        )
    levels = None
    if channel_growth:
        levels = growth_channels(channels, depth)
    elif growth_step is not None:
        levels = study_growth_channels(channels, growth_step, depth)
    net = StackedHourglass(
        nb_sources=len(sources) - int(residual_source),
        channels=channels,
        nb_stacks=nb_stacks,
        depth=depth,
        level_channels=levels,
        stem_channels=stem_channels,
    )
    return HourglassSeparator(
        net,
        sources=sources,
        sample_rate=sample_rate,
        n_fft=n_fft,
        n_hop=n_hop,
        patch_frames=patch_frames,
        window_batch=window_batch,
        residual_source=residual_source,
        output=output,
    )
