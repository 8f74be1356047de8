"""Waveform-level wrapper of spectrogram cores: STFT → target cores → Wiener → iSTFT."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from stemkit.dsp.stft import ISTFT, STFT, OverlapAdd, magnitude
from stemkit.dsp.wiener import wiener
from stemkit.models.base import SeparationModel

__all__ = ["Separator"]

RESIDUAL = "residual"
#: frames per block when no Wiener block size applies (``niter=0``, or EM over whole tracks is
#: not requested): results do not depend on it, only the working memory does
_DEFAULT_BLOCK = 256


class Separator(SeparationModel):
    """Separate waveforms with one magnitude-masking core per target (Open-Unmix style).

    Each core maps a magnitude spectrogram ``(batch, nb_channels, nb_bins, nb_frames)`` to the
    target's magnitude estimate of the same shape. The estimates become complex STFTs by
    taking the mixture phase (``niter=0``, no softmask) or by multichannel Wiener/EM filtering
    in blocks of ``wiener_win_len`` frames (:func:`stemkit.dsp.wiener.wiener`).

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
        ``(batch, sources, channels, time)``, cropped to the input length."""
        if mixture.dim() != 3:
            raise ValueError(
                f"expected a waveform (batch, channels, time), got shape {tuple(mixture.shape)}"
            )
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
        block = self.wiener_win_len or (nb_frames if self.niter > 0 else _DEFAULT_BLOCK)
        batch, nb_channels = mix_stft.shape[0], mix_stft.shape[-3]
        out = mix_stft.real.new_zeros(batch, len(self.sources), nb_channels, length)
        inverse = OverlapAdd(self.istft, out, nb_frames)
        for start in range(0, nb_frames, block):
            # one block of the blocked filter: its scaling and EM statistics are per block
            stems_stft = wiener(
                estimates[..., start : start + block],
                mix_stft[..., start : start + block],
                iterations=self.niter,
                softmask=self.softmask,
                residual=self._residual,
                win_len=None,
            )
            inverse.add(stems_stft)
            del stems_stft
        return inverse.finish()
