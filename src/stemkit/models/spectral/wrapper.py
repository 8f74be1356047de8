"""Waveform-level wrapper of spectrogram cores: STFT → target cores → Wiener → iSTFT."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from stemkit.dsp.stft import ISTFT, STFT, OverlapAdd, magnitude
from stemkit.dsp.wiener import wiener, wiener_block
from stemkit.errors import StemkitError
from stemkit.losses import combination_magnitude_mse, mse_loss, multi_domain_loss
from stemkit.models.base import FrameStream, SeparationModel
from stemkit.models.spectral import frames
from stemkit.models.spectral.core import MaskingCore
from stemkit.models.spectral.frames import FrameBlockPath
from stemkit.models.spectral.options import SpectralOptions

__all__ = ["RESIDUAL", "SPECTRAL_LOSSES", "Separator"]

RESIDUAL = "residual"
#: The objectives on the cores' magnitudes (X-UMX ablation: see :meth:`Separator.training_loss`).
SPECTRAL_LOSSES = ("spectral_mse", "combination_mse", "multi_domain_sources", "multi_domain")
#: frames per block when no Wiener block size applies (``niter=0``, or EM over whole tracks is
#: not requested): results do not depend on it, only the working memory does
_DEFAULT_BLOCK = 256
#: the Wiener filter's per-block rescaling, max(1, max|x| / _SCALE_FACTOR) (wiener's default)
_SCALE_FACTOR = 10.0


class Separator(FrameBlockPath, SeparationModel):
    """Separate waveforms with one magnitude-masking core per target (Open-Unmix style).

    Each core (:class:`~stemkit.models.spectral.core.MaskingCore`) maps a magnitude
    spectrogram ``(batch, audio_channels, nb_bins, nb_frames)`` to the target's magnitude
    estimate of the same shape. The estimates become complex STFTs by taking the mixture phase
    (``niter=0``, no softmask) or by multichannel Wiener/EM filtering in blocks of
    ``wiener_win_len`` frames (:func:`stemkit.dsp.wiener.wiener`).

    In eval mode without autograd, cores that declare ``encode_lstm_decode`` separate a whole
    song in frame blocks (:meth:`streams`, :mod:`stemkit.models.spectral.frames`): only the
    per-frame LSTM features exist for the whole song, so memory beyond the input and the
    returned stems stays ~``hidden_size`` floats per frame and target plus one block. Such a
    model separates whole songs by default (:attr:`default_segment` is None).

    The cores live in ``target_models`` (an ``nn.ModuleDict``), so ``state_dict`` keys read
    ``target_models.<target>.<core key>`` as in ``openunmix.model.Separator``; the STFT windows
    are not saved.

    Args:
        target_models: core per target name, in output order.
        options: STFT, channels and filtering (:class:`SpectralOptions`).

    Attributes:
        sources: target names, plus ``"residual"`` when ``options.residual`` is set.
        causal: True when every core declares ``unidirectional`` and ``niter == 0`` (EM pools
            statistics over a block). The STFT still looks ``n_fft`` samples ahead.
    """

    def __init__(self, target_models: Mapping[str, MaskingCore], options: SpectralOptions) -> None:
        if not target_models:
            raise ValueError("Separator needs at least one target model")
        names = tuple(target_models)
        if options.residual and RESIDUAL in names:
            raise ValueError(f"a target is already named {RESIDUAL!r}; rename it or drop residual")
        causal = options.niter == 0 and all(core.unidirectional for core in target_models.values())
        super().__init__(
            names + ((RESIDUAL,) if options.residual else ()),
            sample_rate=options.sample_rate,
            audio_channels=options.audio_channels,
            causal=causal,
        )
        self.options = options
        self.targets = names
        self.frame_block = _DEFAULT_BLOCK
        self.target_models = nn.ModuleDict(dict(target_models))
        self.stft = STFT(options.n_fft, options.n_hop, center=True)
        self.istft = ISTFT(options.n_fft, options.n_hop, center=True)
        # A separate non-centred transform for the training recipe: same window, not saved.
        self._stft_uncentered = STFT(options.n_fft, options.n_hop, center=False)

    # the options, read-only, under the names the filtering and streaming code uses
    @property
    def n_fft(self) -> int:
        """FFT size."""
        return self.options.n_fft

    @property
    def n_hop(self) -> int:
        """Hop size."""
        return self.options.n_hop

    @property
    def niter(self) -> int:
        """Wiener EM iterations (0: mixture phase)."""
        return self.options.niter

    @property
    def softmask(self) -> bool:
        """Initial estimates by ratio mask."""
        return self.options.softmask

    @property
    def residual(self) -> bool:
        """Whether a ``"residual"`` stem is appended (fixed at construction, like ``sources``)."""
        return self.options.residual

    @property
    def wiener_win_len(self) -> int | None:
        """Frames per Wiener block (None: the whole signal)."""
        return self.options.wiener_win_len

    @property
    def default_segment(self) -> float | None:
        """None (whole songs) when the frame-block path bounds the memory, else the base's."""
        if all(core.encode_lstm_decode for core in self._cores()):
            return None
        return super().default_segment

    def _check_waveform(self, waveform: Tensor) -> None:
        if waveform.dim() < 2:
            raise ValueError(
                f"expected a waveform (..., channels, time), got shape {tuple(waveform.shape)}"
            )
        if self.audio_channels == 2 and waveform.shape[-2] != 2:
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
            ``(..., audio_channels, nb_bins, nb_frames)``; for mono models the channels are
            averaged (``audio_channels`` = 1).
        """
        spec = self.mixture_spectrogram(waveform, center=center)
        return magnitude(spec, mono=self.audio_channels == 1)

    def forward_magnitudes(self, mix_mag: Tensor) -> Tensor:
        """Run every core on the mixture magnitude.

        Args:
            mix_mag: ``(batch, audio_channels, nb_bins, nb_frames)``.

        Returns:
            ``(batch, nb_targets, audio_channels, nb_bins, nb_frames)``, targets in order (no
            residual).
        """
        cores = self._cores()
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

        Without autograd and with frame-block cores in eval mode (:meth:`streams`) the song
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
        estimates = self.forward_magnitudes(magnitude(mix_stft, mono=self.audio_channels == 1))
        if torch.is_grad_enabled() and estimates.requires_grad:
            # training through the filter: whole-signal ops, which autograd handles plainly
            stems_stft = wiener(
                estimates,
                mix_stft,
                iterations=self.niter,
                softmask=self.softmask,
                residual=self.residual,
                win_len=self.wiener_win_len,
            )
            return self.istft(stems_stft, length=mixture.shape[-1])
        return self.filter_and_invert(estimates, mix_stft, length=mixture.shape[-1])

    def isolate(self, target: str) -> Separator | None:
        """The separator of ``target`` alone, where its stem does not depend on the others.

        That holds when the cores run independently (not X-UMX's bridged branches) and each
        magnitude simply takes the mixture phase (``niter=0``, no softmask). A Wiener EM or a
        ratio mask filters every source against the others' estimates: filtering against a
        residual instead (Open-Unmix's single-target mode) cost the bundled model 0.8 dB on
        vocals, so such models compute every target.

        Returns:
            The one-target separator sharing this one's core, or None.
        """
        if (
            self.niter > 0
            or self.softmask
            or type(self).forward_magnitudes is not Separator.forward_magnitudes
            or target not in self.targets
            or len(self.sources) == 1
        ):
            return None
        options = dataclasses.replace(self.options, residual=False)
        core = self._cores()[self.targets.index(target)]
        isolated = Separator({target: core}, options)
        isolated.frame_block = self.frame_block
        return isolated.train(self.training)

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
            core.encode_lstm_decode
            and not core.training
            and core.nb_channels == self.audio_channels
            and core.nb_output_bins == nb_bins
            for core in self._cores()
        )

    def _streams_forward_magnitudes(self) -> bool:
        # a subclass that changes forward_magnitudes must bring its own frame-block stages
        return type(self).forward_magnitudes is Separator.forward_magnitudes

    def _wiener_block(self, nb_frames: int) -> int:
        return self.wiener_win_len or (nb_frames if self.niter > 0 else self.frame_block)

    def _filter_block(self, estimates: Tensor, mix_stft: Tensor) -> Tensor:
        """One block of :func:`~stemkit.dsp.wiener.wiener` (``win_len=None`` on the block),
        a few bins at a time (:func:`~stemkit.dsp.wiener.wiener_block`)."""
        return wiener_block(
            estimates,
            mix_stft,
            iterations=self.niter,
            softmask=self.softmask,
            residual=self.residual,
            scale_factor=_SCALE_FACTOR,
            bins_per_step=frames._FILTER_BINS,
        )

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
            estimates: ``(batch, nb_targets, audio_channels|1, nb_bins, nb_frames)`` magnitudes.
            mix_stft: complex ``(batch, audio_channels, nb_bins, nb_frames)``.
            length: output samples (the mixture length).

        Returns:
            ``(batch, sources, audio_channels, length)``.
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
            for piece in stems_stft.split(frames._INVERT_FRAMES, dim=-1):
                inverse.add(piece)
            del stems_stft
        return inverse.finish()

    # --- training ---------------------------------------------------------------------------

    def training_loss(self, mixture: Tensor, stems: Tensor, loss_name: str) -> Tensor:
        """:data:`SPECTRAL_LOSSES` on the core outputs; other names as
        :meth:`SeparationModel.training_loss`.

        The X-UMX ablation (spec-notes §3) is a choice of name: ``spectral_mse`` (neither
        multi-domain nor combination loss), ``combination_mse`` (combination only: magnitude
        MSE over every proper subset of sources), ``multi_domain_sources`` (multi-domain only:
        magnitude MSE + 10 × weighted SDR over the sources alone), ``multi_domain`` (both).

        Both compare magnitudes of the centred STFT; ``multi_domain`` adds the weighted SDR of
        the waveforms rebuilt with the mixture phase (the Wiener filter is not trained
        through).
        """
        if loss_name not in SPECTRAL_LOSSES:
            return super().training_loss(mixture, stems, loss_name)
        mix_stft = self.mixture_spectrogram(mixture)
        estimates = self.forward_magnitudes(magnitude(mix_stft, mono=self.audio_channels == 1))
        targets = self.magnitudes(stems)
        if loss_name == "spectral_mse":
            return mse_loss(estimates, targets)
        if loss_name == "combination_mse":
            return combination_magnitude_mse(estimates, targets, combination=True)
        phase = mix_stft / mix_stft.abs().clamp_min(1e-8)
        waveforms = self.istft(estimates * phase.unsqueeze(1), length=mixture.shape[-1])
        combination = loss_name == "multi_domain"
        return multi_domain_loss(
            estimates, targets, waveforms, stems, mixture, combination=combination
        )

    @torch.no_grad()
    def prepare(self, train_set: Any, progress: bool = False) -> None:
        """Fit the input standardisation of the cores that use it on full training mixtures.

        As in the Open-Unmix recipe: mean and standard deviation per frequency bin over every
        frame of the channel-averaged mixture magnitude of every training track, without
        augmentation.

        Raises:
            StemkitError: no training audio.
        """
        cores = [core for core in self._cores() if core.uses_statistics]
        if not cores:
            return
        total: Tensor | None = None
        total_sq: Tensor | None = None
        count = 0
        for index in tqdm(range(len(train_set)), desc="input statistics", disable=not progress):
            stems, _ = train_set[index]
            mag = self.magnitudes(stems.sum(dim=0, keepdim=True).to(torch.float32))
            frames_ = mag.mean(dim=1)[0].double()  # (nb_bins, nb_frames)
            total = frames_.sum(dim=1) if total is None else total + frames_.sum(dim=1)
            squares = (frames_**2).sum(dim=1)
            total_sq = squares if total_sq is None else total_sq + squares
            count += frames_.shape[1]
        if total is None or total_sq is None or count < 2:
            raise StemkitError("no training audio to fit the input statistics on")
        mean = total / count
        # Population standard deviation, as sklearn's StandardScaler in the reference recipe.
        std = (total_sq / count - mean**2).clamp_min(0.0).sqrt()
        for core in cores:
            core.set_statistics(mean.float(), std.float())

    # --- streaming --------------------------------------------------------------------------

    def frame_stream(self) -> FrameStream:
        """A causal frame-by-frame separator (:class:`.stream.LSTMFrameStream`).

        Raises:
            StemkitError: a core reads future frames or is no LSTM core, or EM is on.
        """
        from stemkit.models.spectral.stream import LSTMFrameStream

        return LSTMFrameStream(self)
