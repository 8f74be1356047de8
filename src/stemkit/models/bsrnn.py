"""Band-split RNN (Luo & Yu, 2023) and the variants of its open replication (oBSRNN).

Architecture and variants: reference/spec-notes.md §4.2–4.4, §4.9. The mixture's complex STFT
(2048/512, Hann, centred) is cut into frequency bands (:mod:`stemkit.dsp.bands`); every band is
embedded into ``N`` features (:class:`~stemkit.models.blocks.bandsplit.BandSplit`); ``R``
blocks each model the sequence of frames within a band, then the sequence of bands within a
frame (residual BLSTMs by default), optionally followed by TAC across the stereo channels and
full-band attention over frames; one MLP per band estimates a complex mask
(:class:`~stemkit.models.blocks.mask.MaskEstimator`) that multiplies the mixture's sub-band;
the iSTFT gives the waveform back at the input length.

By default each source has its own network with the band layout made for it, and stereo
channels are separated as two independent mono signals (channels folded into the batch). With
``simo=True`` one network with the 57-band joint layout serves every source, with one masker
per source (or one fewer, the last source being the mixture minus the others).

Example:
    >>> from stemkit.models import build
    >>> model = build("bsrnn", sources=["vocals"], n_features=128, n_layers=12)
    >>> stems = model(mixture)  # (batch, 1, channels, time)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import torch
from torch import Tensor, nn

from stemkit.dsp.bands import CONVERSIONS, band_widths, layout_for_source, resolve_layout
from stemkit.dsp.stft import ISTFT, STFT
from stemkit.errors import StemkitError
from stemkit.losses import complex_l1_loss, tf_l1_loss
from stemkit.models.base import SeparationModel
from stemkit.models.blocks.attention import FullBandAttention
from stemkit.models.blocks.bandsplit import BandSplit
from stemkit.models.blocks.mask import MaskEstimator
from stemkit.models.blocks.sequence import SEQUENCE_KINDS, sequence_unit
from stemkit.models.blocks.tac import TAC, TAC_ACTIVATIONS
from stemkit.models.registry import register

__all__ = ["BSRNN", "BandSequenceBlock", "BandSplitNetwork"]

STEREO_MODES = ("mono", "naive", "tac")
_EPS = 1e-7


class BandSequenceBlock(nn.Module):
    """One separator block: time model, band model, then optional TAC and attention.

    With ``n_heads > 1`` the ``N`` features are split into that many groups of ``N / n_heads``
    that go through the same (smaller) time and band models, as separate batch items (the
    "multi-head" sequence module of the replication, after DTTNet); TAC and attention always see
    all ``N`` features.

    Args:
        time_model: residual unit over frames, on ``N / n_heads`` features.
        band_model: residual unit over bands, or ``None`` to skip it.
        n_heads: feature groups of the sequence models.
        tac: cross-channel module, or ``None``.
        attention: full-band attention module, or ``None``.

    Shapes:
        forward: ``(batch, nb_bands, n_features, nb_frames)`` → same shape, where ``batch``
        holds ``nb_channels`` consecutive items per example when ``tac`` is set.
    """

    def __init__(
        self,
        time_model: nn.Module,
        band_model: nn.Module | None,
        n_heads: int = 1,
        tac: TAC | None = None,
        attention: FullBandAttention | None = None,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.time_model = time_model
        self.band_model = band_model
        self.tac = tac
        self.attention = attention

    def forward(self, x: Tensor, nb_channels: int = 1) -> Tensor:
        """Process ``x``; ``nb_channels`` tells TAC how the batch axis groups channels."""
        batch, nb_bands, n_features, nb_frames = x.shape
        heads = self.n_heads
        size = n_features // heads
        # (batch * heads, nb_bands, size, nb_frames)
        out = x.view(batch, nb_bands, heads, size, nb_frames).transpose(1, 2)
        out = out.reshape(batch * heads * nb_bands, size, nb_frames)
        out = self.time_model(out)
        if self.band_model is not None:
            out = out.view(batch * heads, nb_bands, size, nb_frames).permute(0, 3, 2, 1)
            out = self.band_model(out.reshape(batch * heads * nb_frames, size, nb_bands))
            out = out.view(batch * heads, nb_frames, size, nb_bands).permute(0, 3, 2, 1)
        out = out.reshape(batch, heads, nb_bands, size, nb_frames).transpose(1, 2)
        out = out.reshape(batch, nb_bands, n_features, nb_frames)
        if self.tac is not None:
            grouped = out.view(batch // nb_channels, nb_channels, nb_bands, n_features, nb_frames)
            # TAC mixes channels per (band, frame): channels and features last.
            mixed = self.tac(grouped.permute(0, 2, 4, 1, 3))
            out = mixed.permute(0, 3, 1, 4, 2).reshape(batch, nb_bands, n_features, nb_frames)
        if self.attention is not None:
            out = self.attention(out)
        return out


class BandSplitNetwork(nn.Module):
    """A band-split network: band split, ``R`` separator blocks, and one or more maskers.

    Args:
        band_widths: bins per band (they tile ``n_fft // 2 + 1`` bins).
        n_maskers: number of mask estimators on the shared features (1 unless SIMO).
        n_features: ``N``.
        n_layers: ``R``, separator blocks.
        fac_sep: hidden factor of the sequence models.
        fac_mask: hidden factor of the maskers.
        seq_model: time model kind (``lstm``, ``gru``, ``conv``, ``dilated``).
        band_seq_model: band model kind, or ``"none"``.
        conv_kernel: kernel size of the convolutional sequence models.
        n_dilated: dilated convolutions per ``dilated`` unit.
        stereo: ``mono`` (channels are independent items), ``naive`` (channels enter and leave
            each band together) or ``tac``.
        audio_channels: channels per example (the band width multiplier of ``naive``).
        tac_activation: ``tanh`` or ``prelu``.
        tac_factor: hidden factor of TAC.
        attention_heads: full-band attention heads per block, 0 for none.
        attention_dim: query/key size per band and head.
        n_heads_seq: feature groups of the sequence models.

    Shapes:
        forward: complex ``(batch, nb_channels, nb_bins, nb_frames)`` → complex
        ``(batch, n_maskers, nb_channels, nb_bins, nb_frames)``, the masked mixtures.
    """

    def __init__(
        self,
        band_widths: Sequence[int],
        n_maskers: int = 1,
        n_features: int = 64,
        n_layers: int = 8,
        fac_sep: int = 2,
        fac_mask: int = 4,
        seq_model: str = "lstm",
        band_seq_model: str = "lstm",
        conv_kernel: int = 3,
        n_dilated: int = 3,
        stereo: str = "mono",
        audio_channels: int = 2,
        tac_activation: str = "tanh",
        tac_factor: int = 3,
        attention_heads: int = 0,
        attention_dim: int = 16,
        n_heads_seq: int = 1,
    ) -> None:
        super().__init__()
        self.band_widths = tuple(band_widths)
        self.stereo = stereo
        self.audio_channels = audio_channels
        per_item = audio_channels if stereo == "naive" else 1
        self.band_split = BandSplit(self.band_widths, n_features, per_item, eps=_EPS)
        size = n_features // n_heads_seq

        def unit(kind: str) -> nn.Module:
            return sequence_unit(kind, size, fac_sep, conv_kernel, n_dilated, eps=_EPS)

        self.blocks = nn.ModuleList(
            BandSequenceBlock(
                unit(seq_model),
                None if band_seq_model == "none" else unit(band_seq_model),
                n_heads=n_heads_seq,
                tac=TAC(n_features, tac_factor, tac_activation) if stereo == "tac" else None,
                attention=(
                    FullBandAttention(
                        n_features, len(self.band_widths), attention_heads, attention_dim, _EPS
                    )
                    if attention_heads > 0
                    else None
                ),
            )
            for _ in range(n_layers)
        )
        self.maskers = nn.ModuleList(
            MaskEstimator(self.band_widths, n_features, fac_mask, per_item, eps=_EPS)
            for _ in range(n_maskers)
        )

    def forward(self, spec: Tensor) -> Tensor:
        """Masked copies of ``spec`` ``(batch, nb_channels, nb_bins, nb_frames)``."""
        batch, nb_channels, nb_bins, nb_frames = spec.shape
        if self.stereo == "naive":
            if nb_channels != self.audio_channels:
                raise ValueError(
                    f"the naive stereo model was built for {self.audio_channels} channels, got "
                    f"{nb_channels}"
                )
            items = spec
        else:
            items = spec.reshape(batch * nb_channels, 1, nb_bins, nb_frames)
        features = self.band_split(items)
        for block in self.blocks:
            features = block(features, nb_channels)
        # (items, n_maskers, channels per item, nb_bins, nb_frames)
        estimates = torch.stack([masker(features) * items for masker in self.maskers], dim=1)
        if self.stereo == "naive":
            return estimates
        estimates = estimates.view(batch, nb_channels, len(self.maskers), nb_bins, nb_frames)
        return estimates.transpose(1, 2)


@register("bsrnn")
class BSRNN(SeparationModel):
    """Band-split RNN for one or more targets: waveform in, stems out.

    Sizes of the replication: ``n_features=64, n_layers=8`` ("bsrnn", 8.0 M parameters for
    vocals), ``n_features=128, n_layers=12`` ("bsrnn-large"); "bsrnn-opt" adds
    ``attention_heads=2, attention_dim=16, stereo="tac", tac_activation="prelu"``. BSCNN is
    ``seq_model="dilated"`` (with ``fac_sep=1`` and ``n_dilated=3`` as in the replication, each
    source with its own layout: 29.7 M parameters for the four, as published). All arguments
    are plain values, so that a checkpoint can rebuild the model from them.

    Args:
        sources: target names, in output order. One network per source unless ``simo``.
        n_features: ``N``, the band embedding size.
        n_layers: ``R``, the number of separator blocks.
        fac_sep: the sequence models have ``fac_sep · N`` units per direction.
        fac_mask: the maskers' hidden layers have ``fac_mask · N`` units.
        layout: band layout: ``"auto"`` (per source: ``v7`` for vocals and other, ``bass``,
            ``drums``, ``joint`` for any other name and for SIMO), a layout name, or
            ``[[width_hz, count], ...]`` segments (see :mod:`stemkit.dsp.bands`).
        band_conversion: ``"floor"`` (the replication) or ``"edges"``.
        n_fft: STFT size.
        n_hop: STFT hop.
        sample_rate: the rate in Hz the band layout is defined at.
        audio_channels: channels of the input mixture (the stereo modes mix them).
        seq_model: ``"lstm"``, ``"gru"``, ``"conv"`` or ``"dilated"`` (BSCNN).
        band_seq_model: kind of the band model; ``None`` takes ``seq_model``, ``"none"`` drops
            it.
        conv_kernel: kernel size of the ``conv`` and ``dilated`` sequence models.
        n_dilated: dilated convolutions per ``dilated`` unit.
        stereo: ``"mono"`` (each channel separated alone), ``"naive"`` (both channels in every
            band embedding and mask) or ``"tac"`` (TAC after every block).
        tac_activation: ``"tanh"`` or ``"prelu"``.
        tac_factor: TAC hidden factor.
        attention_heads: full-band attention heads after every block; 0 disables it.
        attention_dim: query/key size per band and head.
        n_heads_seq: split ``N`` into this many groups sharing the sequence models.
        simo: one shared network with one masker per source.
        simo_other_residual: with ``simo``, the last source is the mixture minus the others
            (one masker fewer).

    Shapes:
        forward: ``(batch, audio_channels, time)`` → ``(batch, len(sources), audio_channels,
        time)``.

    Raises:
        StemkitError: an argument out of range or of an unknown value (the message names it).
    """

    def __init__(
        self,
        sources: Sequence[str] | str = ("vocals",),
        n_features: int = 64,
        n_layers: int = 8,
        fac_sep: int = 2,
        fac_mask: int = 4,
        layout: str | Sequence[Sequence[float]] = "auto",
        band_conversion: str = "floor",
        n_fft: int = 2048,
        n_hop: int = 512,
        sample_rate: int = 44100,
        audio_channels: int = 2,
        seq_model: str = "lstm",
        band_seq_model: str | None = None,
        conv_kernel: int = 3,
        n_dilated: int = 3,
        stereo: str = "mono",
        tac_activation: str = "tanh",
        tac_factor: int = 3,
        attention_heads: int = 0,
        attention_dim: int = 16,
        n_heads_seq: int = 1,
        simo: bool = False,
        simo_other_residual: bool = False,
    ) -> None:
        sources = [sources] if isinstance(sources, str) else list(sources)
        band_seq_model = seq_model if band_seq_model is None else band_seq_model
        _check_arguments(locals())
        super().__init__(sources, sample_rate, audio_channels, causal=False)
        self.simo = simo
        self.simo_other_residual = simo_other_residual
        self.stft = STFT(n_fft, n_hop, center=True)
        self.istft = ISTFT(n_fft, n_hop, center=True)
        common: dict[str, Any] = dict(
            n_features=n_features,
            n_layers=n_layers,
            fac_sep=fac_sep,
            fac_mask=fac_mask,
            seq_model=seq_model,
            band_seq_model=band_seq_model,
            conv_kernel=conv_kernel,
            n_dilated=n_dilated,
            stereo=stereo,
            audio_channels=audio_channels,
            tac_activation=tac_activation,
            tac_factor=tac_factor,
            attention_heads=attention_heads,
            attention_dim=attention_dim,
            n_heads_seq=n_heads_seq,
        )

        def widths(source: str) -> tuple[int, ...]:
            name = layout_for_source(source) if layout == "auto" else layout
            return band_widths(name, n_fft, sample_rate, band_conversion)

        # Keyed by source for readable state_dict keys; SIMO has one network, "joint".
        self.networks = nn.ModuleDict()
        if simo:
            n_maskers = len(sources) - int(simo_other_residual)
            shared = widths("joint") if layout == "auto" else widths(sources[0])
            self.networks["joint"] = BandSplitNetwork(shared, n_maskers, **common)
        else:
            for source in sources:
                self.networks[source] = BandSplitNetwork(widths(source), 1, **common)

    def training_loss(self, mixture: Tensor, stems: Tensor, loss_name: str) -> Tensor:
        """``tf_l1`` (the replication's t+tf loss: L1 on the waveforms and on the real and
        imaginary parts of the spectrograms), ``stft_l1`` (its STFT term alone, the "loss
        domain: STFT" row of the replication's table; the waveform-only row is ``l1``); other
        names as :meth:`SeparationModel.training_loss`."""
        if loss_name == "tf_l1":
            waveforms, spectrograms = self.forward_with_spec(mixture)
            return tf_l1_loss(waveforms, stems, spectrograms, self.stft(stems))
        if loss_name == "stft_l1":
            # The masked spectrograms themselves, before the iSTFT: what the replication's
            # STFT-domain loss compares with the targets' STFT.
            _, spectrograms = self.forward_with_spec(mixture)
            return complex_l1_loss(spectrograms, self.stft(stems))
        return super().training_loss(mixture, stems, loss_name)

    def forward_with_spec(self, mixture: Tensor) -> tuple[Tensor, Tensor]:
        """Separate ``mixture`` and return the stems with their spectrograms.

        The spectrograms are what the iSTFT turned into the waveforms: what a time-frequency
        loss (L1 on real and imaginary parts) compares with the targets' STFT (same
        ``n_fft``/``n_hop``, Hann, centred: ``model.stft``).

        Args:
            mixture: ``(batch, audio_channels, time)``.

        Returns:
            ``(waveforms, spectrograms)``: real ``(batch, sources, channels, time)`` and
            complex ``(batch, sources, channels, nb_bins, nb_frames)``.
        """
        if mixture.dim() != 3:
            raise ValueError(
                f"BSRNN expects a mixture (batch, channels, time), got shape {tuple(mixture.shape)}"
            )
        spec = self.stft(mixture)
        if self.simo:
            estimates = self.networks["joint"](spec)
            if self.simo_other_residual:
                rest = spec.unsqueeze(1) - estimates.sum(dim=1, keepdim=True)
                estimates = torch.cat([estimates, rest], dim=1)
        else:
            estimates = torch.cat([net(spec) for net in self.networks.values()], dim=1)
        waveforms = self.istft(estimates, length=mixture.shape[-1])
        return waveforms, estimates

    def forward(self, mixture: Tensor) -> Tensor:
        """``(batch, channels, time)`` → ``(batch, sources, channels, time)``."""
        return self.forward_with_spec(mixture)[0]

    def isolate(self, target: str) -> BSRNN | None:
        """This model with the network of ``target`` only (one network per source: the
        stem is exactly the full model's); None for SIMO, whose network is shared."""
        if self.simo or target not in self.sources or len(self.sources) == 1:
            return None
        isolated = copy.copy(self)
        # copy.copy shares the module dictionaries: give the copy its own before replacing
        isolated._modules = dict(self._modules)
        isolated.networks = nn.ModuleDict({target: self.networks[target]})
        isolated.sources = (target,)
        return isolated


def _check_arguments(args: dict[str, Any]) -> None:
    """Raise a StemkitError naming the first bad constructor argument in ``args``."""

    def fail(name: str, message: str) -> NoReturn:
        raise StemkitError(f"bsrnn: bad model argument {name}={args[name]!r}: {message}")

    sources = args["sources"]
    if not sources or not all(isinstance(s, str) and s for s in sources):
        fail("sources", "give a non-empty list of source names")
    if len(set(sources)) != len(sources):
        fail("sources", "source names must be unique")
    for name in ("n_features", "n_layers", "fac_sep", "fac_mask", "n_fft", "n_hop"):
        _positive_int(args, name, fail)
    for name in ("sample_rate", "audio_channels", "conv_kernel", "tac_factor", "n_heads_seq"):
        _positive_int(args, name, fail)
    for name in ("n_dilated", "attention_heads"):
        value = args[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            fail(name, "give a whole number >= 0")
    if args["conv_kernel"] % 2 == 0:
        fail("conv_kernel", "give an odd kernel size (the convolutions keep the length)")
    if args["seq_model"] not in SEQUENCE_KINDS:
        fail("seq_model", f"choose one of {', '.join(SEQUENCE_KINDS)}")
    if args["band_seq_model"] not in (*SEQUENCE_KINDS, "none"):
        fail("band_seq_model", f"choose one of {', '.join(SEQUENCE_KINDS)}, none or null")
    if args["stereo"] not in STEREO_MODES:
        fail("stereo", f"choose one of {', '.join(STEREO_MODES)}")
    if args["tac_activation"] not in TAC_ACTIVATIONS:
        fail("tac_activation", f"choose one of {', '.join(TAC_ACTIVATIONS)}")
    if args["band_conversion"] not in CONVERSIONS:
        fail("band_conversion", f"choose one of {', '.join(CONVERSIONS)}")
    if args["n_features"] % args["n_heads_seq"]:
        fail("n_heads_seq", f"it must divide n_features={args['n_features']}")
    if args["attention_heads"]:
        _positive_int(args, "attention_dim", fail)
        if args["n_features"] % args["attention_heads"]:
            fail("attention_heads", f"it must divide n_features={args['n_features']}")
    if args["simo_other_residual"] and not args["simo"]:
        fail("simo_other_residual", "it needs simo=true")
    if args["simo_other_residual"] and len(sources) < 2:
        fail("simo_other_residual", "it needs at least two sources")
    if args["layout"] != "auto":
        resolve_layout(args["layout"])


def _positive_int(args: dict[str, Any], name: str, fail: Callable[[str, str], NoReturn]) -> None:
    value = args[name]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        fail(name, "give a whole number > 0")
