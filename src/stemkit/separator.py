"""Waveform-level wrapper of spectrogram cores: STFT → target cores → Wiener → iSTFT."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from stemkit.dsp.stft import ISTFT, STFT, OverlapAdd, magnitude
from stemkit.dsp.wiener import expectation_maximization, initial_estimates, wiener
from stemkit.models.base import SeparationModel

__all__ = ["Separator"]

RESIDUAL = "residual"
#: frames per block when no Wiener block size applies (``niter=0``, or EM over whole tracks is
#: not requested): results do not depend on it, only the working memory does
_DEFAULT_BLOCK = 256
#: frequency bins filtered at once inside a Wiener block (the EM is per bin): memory knob only
_FILTER_BINS = 256
#: frames per inverse-FFT step when overlap-adding a block: memory knob only
_INVERT_FRAMES = 64
#: the Wiener filter's per-block rescaling, max(1, max|x| / _SCALE_FACTOR) (wiener's default)
_SCALE_FACTOR = 10.0


class Separator(SeparationModel):
    """Separate waveforms with one magnitude-masking core per target (Open-Unmix style).

    Each core maps a magnitude spectrogram ``(batch, nb_channels, nb_bins, nb_frames)`` to the
    target's magnitude estimate of the same shape. The estimates become complex STFTs by
    taking the mixture phase (``niter=0``, no softmask) or by multichannel Wiener/EM filtering
    in blocks of ``wiener_win_len`` frames (:func:`stemkit.dsp.wiener.wiener`).

    In eval mode without autograd, Open-Unmix-like cores separate a whole song in frame blocks
    (:meth:`streams`): only the per-frame LSTM features exist for the whole song, so memory
    beyond the input and the returned stems stays ~``hidden_size`` floats per frame and target
    plus one block.

    The cores live in ``target_models`` (an ``nn.ModuleDict``), so ``state_dict`` keys read
    ``target_models.<target>.<core key>`` as in ``openunmix.model.Separator``; the STFT windows
    are not saved.

    Args:
        target_models: core per target name, in output order.
        sample_rate: rate in Hz.
        nb_channels: audio channels (1 or 2). With 1, magnitudes are averaged over the input
            channels before the cores.
        n_fft: FFT size.
        n_hop: hop size.
        niter: Wiener EM iterations (0: magnitude estimate × mixture phase).
        softmask: initial estimates by ratio mask of the core outputs.
        residual: append ``mixture - Σ targets`` as a last stem named ``"residual"``.
        wiener_win_len: frames per Wiener block; ``None`` filters the whole signal at once.

    Attributes:
        sources: target names, plus ``"residual"`` when ``residual`` is set.
        causal: True when every core declares ``unidirectional`` and ``niter == 0`` (EM pools
            statistics over a block). The STFT still looks ``n_fft`` samples ahead.
    """

    def __init__(
        self,
        target_models: Mapping[str, nn.Module],
        *,
        sample_rate: int,
        nb_channels: int,
        n_fft: int,
        n_hop: int,
        niter: int = 0,
        softmask: bool = False,
        residual: bool = False,
        wiener_win_len: int | None = 300,
    ) -> None:
        if not target_models:
            raise ValueError("Separator needs at least one target model")
        if nb_channels not in (1, 2):
            raise ValueError(f"nb_channels must be 1 or 2, got {nb_channels}")
        if niter < 0:
            raise ValueError(f"niter must be >= 0, got {niter}")
        if wiener_win_len is not None and wiener_win_len < 1:
            raise ValueError(f"wiener_win_len must be positive or None, got {wiener_win_len}")
        names = tuple(target_models)
        if residual and RESIDUAL in names:
            raise ValueError(f"a target is already named {RESIDUAL!r}; rename it or drop residual")
        causal = niter == 0 and all(
            bool(getattr(core, "unidirectional", False)) for core in target_models.values()
        )
        super().__init__(
            names + ((RESIDUAL,) if residual else ()),
            sample_rate=sample_rate,
            audio_channels=nb_channels,
            causal=causal,
        )
        self.targets = names
        self.nb_channels = nb_channels
        self.n_fft = n_fft
        self.n_hop = n_hop
        self.niter = niter
        self.softmask = softmask
        self._residual = residual
        self.wiener_win_len = wiener_win_len
        #: frames per block where blocks do not change the result (the frame-block encoder;
        #: the filter when ``niter=0`` and ``wiener_win_len`` is None): a memory knob only
        self.frame_block = _DEFAULT_BLOCK
        self.target_models = nn.ModuleDict(dict(target_models))
        self.stft = STFT(n_fft, n_hop, center=True)
        self.istft = ISTFT(n_fft, n_hop, center=True)
        # A separate non-centred transform for the training recipe: same window, not saved.
        self._stft_uncentered = STFT(n_fft, n_hop, center=False)

    @property
    def residual(self) -> bool:
        """Whether a ``"residual"`` stem is appended (fixed at construction, like ``sources``)."""
        return self._residual

    def _check_waveform(self, waveform: Tensor) -> None:
        if waveform.dim() < 2:
            raise ValueError(
                f"expected a waveform (..., channels, time), got shape {tuple(waveform.shape)}"
            )
        if self.nb_channels == 2 and waveform.shape[-2] != 2:
            raise ValueError(
                f"this separator takes stereo input, got {waveform.shape[-2]} channel(s); "
                "convert the audio to stereo first"
            )

    def mixture_spectrogram(self, waveform: Tensor, center: bool = True) -> Tensor:
        """Complex STFT of ``waveform``.

        Args:
            waveform: ``(..., channels, time)``, e.g. ``(batch, channels, time)`` or the targets
                ``(batch, sources, channels, time)``.
            center: reflect-pad as at separation time; upstream training uses ``False``.

        Returns:
            Complex ``(..., channels, nb_bins, nb_frames)``.
        """
        self._check_waveform(waveform)
        transform = self.stft if center else self._stft_uncentered
        return transform(waveform)

    def magnitudes(self, waveform: Tensor, center: bool = True) -> Tensor:
        """Magnitude spectrogram as the cores see it.

        Args:
            waveform: ``(..., channels, time)``.
            center: see :meth:`mixture_spectrogram`.

        Returns:
            ``(..., nb_channels, nb_bins, nb_frames)``; for mono models the channels are
            averaged (``nb_channels`` = 1).
        """
        spec = self.mixture_spectrogram(waveform, center=center)
        return magnitude(spec, mono=self.nb_channels == 1)

    def forward_magnitudes(self, mix_mag: Tensor) -> Tensor:
        """Run every core on the mixture magnitude.

        Args:
            mix_mag: ``(batch, nb_channels, nb_bins, nb_frames)``.

        Returns:
            ``(batch, nb_targets, nb_channels, nb_bins, nb_frames)``, targets in order (no
            residual).
        """
        cores = list(self.target_models.values())
        if torch.is_grad_enabled() and (
            mix_mag.requires_grad or any(p.requires_grad for p in self.parameters())
        ):
            return torch.stack([core(mix_mag) for core in cores], dim=1)
        # Without autograd each core writes into one preallocated tensor: a list plus its
        # stacked copy would hold every estimate twice.
        first = cores[0](mix_mag)
        estimates = first.new_empty(first.shape[0], len(cores), *first.shape[1:])
        estimates[:, 0] = first
        del first
        for index, core in enumerate(cores[1:], start=1):
            estimates[:, index] = core(mix_mag)
        return estimates

    def forward(self, mixture: Tensor) -> Tensor:
        """Separate ``mixture`` ``(batch, channels, time)`` into
        ``(batch, sources, channels, time)``, cropped to the input length.

        Without autograd and with Open-Unmix-like cores in eval mode (:meth:`streams`) the song
        goes through in frame blocks: :meth:`encode_frames`, :meth:`run_sequence`,
        :meth:`decode_and_invert`; beyond the input and the returned stems the memory is the
        per-frame LSTM features plus one block. Otherwise the whole-signal spectrograms are
        computed (and autograd flows through them); both give the same stems up to float
        rounding.
        """
        if mixture.dim() != 3:
            raise ValueError(
                f"expected a waveform (batch, channels, time), got shape {tuple(mixture.shape)}"
            )
        if self.streams(mixture):
            context = self.run_sequence(self.encode_frames(mixture))
            return self.decode_and_invert(mixture, context)
        mix_stft = self.mixture_spectrogram(mixture)
        # the magnitude is a temporary: freed as soon as the cores have run
        estimates = self.forward_magnitudes(magnitude(mix_stft, mono=self.nb_channels == 1))
        if torch.is_grad_enabled() and estimates.requires_grad:
            # training through the filter: whole-signal ops, which autograd handles plainly
            stems_stft = wiener(
                estimates,
                mix_stft,
                iterations=self.niter,
                softmask=self.softmask,
                residual=self._residual,
                win_len=self.wiener_win_len,
            )
            return self.istft(stems_stft, length=mixture.shape[-1])
        return self.filter_and_invert(estimates, mix_stft, length=mixture.shape[-1])

    # --- whole-song separation in frame blocks (eval mode, Open-Unmix-like cores) -----------
    #
    # An Open-Unmix core is frame-wise except for its LSTM: forward(x) = decode([encode(x),
    # lstm(encode(x))], x), where encode and decode (with BatchNorm in eval mode) treat every
    # frame on its own. So a song can be separated keeping only the encoder outputs and then
    # the LSTM outputs for all frames (hidden_size floats per frame and target), while the
    # mixture STFT, the target magnitudes and the complex stems exist for one block of frames
    # at a time.

    def streams(self, mixture: Tensor) -> bool:
        """Whether :meth:`forward` separates ``mixture`` in frame blocks (bounded memory).

        True when no gradient is needed, every core is in eval mode and declares
        ``encode_lstm_decode`` (:class:`stemkit.models.umx.OpenUnmix` does), the cores take
        this separator's channels and bins, and ``forward_magnitudes`` is the one the frame-block
        stages reproduce. Otherwise :meth:`forward` computes whole-signal spectrograms.
        """
        if torch.is_grad_enabled() and (
            mixture.requires_grad or any(p.requires_grad for p in self.parameters())
        ):
            return False
        nb_bins = self.n_fft // 2 + 1
        return self._streams_forward_magnitudes() and all(
            bool(getattr(core, "encode_lstm_decode", False))
            and not core.training
            and getattr(core, "nb_channels", None) == self.nb_channels
            and getattr(core, "nb_output_bins", None) == nb_bins
            for core in self.target_models.values()
        )

    def _streams_forward_magnitudes(self) -> bool:
        # a subclass that changes forward_magnitudes must bring its own frame-block stages
        return type(self).forward_magnitudes is Separator.forward_magnitudes

    def _cores(self) -> list[Any]:
        return list(self.target_models.values())

    def _block_spectrogram(self, mixture: Tensor, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Mixture STFT of frames ``[start, stop)`` and the cores' view of its magnitude.

        Returns:
            Complex ``(batch, channels, nb_bins, nb_block_frames)`` and the magnitude time
            first, ``(nb_block_frames, batch, nb_channels, nb_bins)``.
        """
        spec = self.stft.frames(mixture, start, stop)
        mag = magnitude(spec, mono=self.nb_channels == 1)
        return spec, mag.permute(3, 0, 1, 2)

    def encode_frames(self, mixture: Tensor) -> list[Tensor]:
        """Stage 1 of the frame-block path: every core's encoder output for the whole song.

        The mixture STFT is computed block by block (:meth:`stemkit.dsp.stft.STFT.frames`)
        and dropped once encoded.

        Args:
            mixture: ``(batch, channels, time)``; :meth:`streams` must hold.

        Returns:
            One ``(nb_frames, batch, hidden_size)`` tensor per target.
        """
        self._check_waveform(mixture)
        nb_frames = self.stft.frame_count(mixture.shape[-1])
        cores = self._cores()
        encoded: list[Tensor] = []
        for start in range(0, nb_frames, self.frame_block):
            stop = min(start + self.frame_block, nb_frames)
            _, mix = self._block_spectrogram(mixture, start, stop)
            for index, core in enumerate(cores):
                features = core.encode(mix)
                if index == len(encoded):
                    encoded.append(features.new_empty(nb_frames, *features.shape[1:]))
                encoded[index][start:stop] = features
        return encoded

    def run_sequence(self, encoded: list[Tensor]) -> list[Tensor]:
        """Stage 2: each core's LSTM over the whole song; consumes ``encoded`` (emptied).

        Args:
            encoded: the output of :meth:`encode_frames`; each entry is freed once used.

        Returns:
            One ``(nb_frames, batch, hidden_size)`` LSTM output per target.
        """
        context = []
        for index, core in enumerate(self._cores()):
            context.append(core.lstm(encoded[index])[0])
            # the encoder output is recomputed per block when decoding: free it now
            encoded[index] = encoded[index].new_empty(0)
        encoded.clear()
        return context

    def decode_frames(self, mix: Tensor, context: list[Tensor], start: int) -> Tensor:
        """Target magnitudes of one block of frames from its mixture magnitude and the context.

        Args:
            mix: ``(nb_block_frames, batch, nb_channels, nb_bins)``, mixture magnitude.
            context: the output of :meth:`run_sequence`.
            start: the block's first frame.

        Returns:
            ``(batch, nb_targets, nb_channels, nb_bins, nb_block_frames)``.
        """
        stop = start + mix.shape[0]
        cores = self._cores()
        estimates = mix.new_empty(mix.shape[1], len(cores), *mix.shape[2:], mix.shape[0])
        for index, core in enumerate(cores):
            skip = torch.cat([core.encode(mix), context[index][start:stop]], dim=-1)
            estimates[:, index] = core.decode(skip, mix).permute(1, 2, 3, 0)
        return estimates

    def decode_and_invert(self, mixture: Tensor, context: list[Tensor]) -> Tensor:
        """Stage 3: per Wiener block, decode the targets, filter and invert into the stems.

        Each block of ``wiener_win_len`` frames recomputes its mixture STFT, decodes every
        target for those frames (:meth:`decode_frames`), runs the Wiener filter/EM on them and
        overlap-adds their inverse STFT into the preallocated output, as
        :meth:`filter_and_invert` does with whole-song spectrograms.

        Args:
            mixture: ``(batch, channels, time)``.
            context: the output of :meth:`run_sequence`.

        Returns:
            ``(batch, sources, channels, time)``.
        """
        batch, nb_channels, length = mixture.shape
        nb_frames = self.stft.frame_count(length)
        block = self._wiener_block(nb_frames)
        # Decode whole groups of Wiener blocks of at least frame_block frames: fewer, larger
        # matrix products (a product over one or a few frames may also round differently from
        # one over many; the EM's double-precision statistics keep that at float rounding).
        group = block * -(-self.frame_block // block)
        out = mixture.new_zeros(batch, len(self.sources), nb_channels, length)
        inverse = OverlapAdd(self.istft, out, nb_frames)
        for first in range(0, nb_frames, group):
            spec, mix = self._block_spectrogram(mixture, first, min(first + group, nb_frames))
            estimates = self.decode_frames(mix, context, first)
            del mix
            for start in range(0, spec.shape[-1], block):
                stems_stft = self._filter_block(
                    estimates[..., start : start + block], spec[..., start : start + block]
                )
                # a few frames at a time: the inverse FFT buffers are n_fft per frame and stem
                for piece in stems_stft.split(_INVERT_FRAMES, dim=-1):
                    inverse.add(piece)
                del stems_stft
            del estimates, spec
        return inverse.finish()

    def _wiener_block(self, nb_frames: int) -> int:
        return self.wiener_win_len or (nb_frames if self.niter > 0 else self.frame_block)

    def _filter_block(self, estimates: Tensor, mix_stft: Tensor) -> Tensor:
        """One block of :func:`~stemkit.dsp.wiener.wiener` (``win_len=None`` on the block).

        Everything in the filter is per frequency bin (the EM statistics pool over the
        block's frames, never over bins) except the block's rescaling, ``max(1, max|x| /
        scale_factor)``: with the scale taken from the whole block, the bins are filtered
        a few at a time, which bounds the EM temporaries to a fraction of the block.
        """
        nb_bins = mix_stft.shape[-2]
        if self.niter == 0 or nb_bins <= _FILTER_BINS:
            return wiener(
                estimates,
                mix_stft,
                iterations=self.niter,
                softmask=self.softmask,
                residual=self._residual,
                scale_factor=_SCALE_FACTOR,
                win_len=None,
            )
        # wiener's per-block scaling (scale_factor 10), per batch item
        max_abs = torch.clamp(
            mix_stft.abs().amax(dim=(-3, -2, -1), keepdim=True) / _SCALE_FACTOR, min=1
        )
        scale = max_abs.unsqueeze(-4)
        out: Tensor | None = None
        for low in range(0, nb_bins, _FILTER_BINS):
            high = min(low + _FILTER_BINS, nb_bins)
            x_bins = mix_stft[..., low:high, :]
            y = initial_estimates(
                estimates[..., low:high, :],
                x_bins,
                softmask=self.softmask,
                residual=self._residual,
            )
            y, _, _ = expectation_maximization(y / scale, x_bins / max_abs, self.niter)
            if out is None:
                out = y.new_empty(*y.shape[:-2], nb_bins, y.shape[-1])
            out[..., low:high, :] = y * scale
            del y
        assert out is not None
        return out

    def filter_and_invert(self, estimates: Tensor, mix_stft: Tensor, length: int) -> Tensor:
        """Wiener-filter the estimates and invert them to waveforms, one block at a time.

        Each block of ``wiener_win_len`` frames goes through initial estimates, EM and the
        inverse STFT, overlap-added into the preallocated output
        (:class:`stemkit.dsp.stft.OverlapAdd`): beyond the inputs and the returned stems the
        memory is that of one block, and the complex stems never exist for the whole signal.
        Equal (up to float rounding) to :func:`stemkit.dsp.wiener.wiener` with
        ``win_len=wiener_win_len`` followed by the iSTFT of the whole signal. With
        ``wiener_win_len=None`` and ``niter > 0`` the EM pools over the whole signal, so the
        whole signal is one block.

        Args:
            estimates: ``(batch, nb_targets, nb_channels|1, nb_bins, nb_frames)`` magnitudes.
            mix_stft: complex ``(batch, nb_channels, nb_bins, nb_frames)``.
            length: output samples (the mixture length).

        Returns:
            ``(batch, sources, nb_channels, length)``.
        """
        nb_frames = mix_stft.shape[-1]
        block = self._wiener_block(nb_frames)
        batch, nb_channels = mix_stft.shape[0], mix_stft.shape[-3]
        out = mix_stft.real.new_zeros(batch, len(self.sources), nb_channels, length)
        inverse = OverlapAdd(self.istft, out, nb_frames)
        for start in range(0, nb_frames, block):
            stems_stft = self._filter_block(
                estimates[..., start : start + block], mix_stft[..., start : start + block]
            )
            for piece in stems_stft.split(_INVERT_FRAMES, dim=-1):
                inverse.add(piece)
            del stems_stft
        return inverse.finish()
