"""The contract every separation model meets, whatever its family.

Generic code (inference, evaluation, training, the command line) reads a model through this
contract only: what it separates (:attr:`~SeparationModel.sources`, rate, channels), how it
prefers to be applied (:attr:`~SeparationModel.default_segment`,
:attr:`~SeparationModel.default_batch_size`, :attr:`~SeparationModel.requires_references`),
how it trains (:meth:`~SeparationModel.training_loss`, :meth:`~SeparationModel.prepare`) and
whether it can stream (:meth:`~SeparationModel.frame_stream`). A family's own needs live in
its overrides, never in an ``isinstance`` test of a generic layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor, nn

from stemkit.errors import StemkitError
from stemkit.losses import (
    combination_weighted_sdr_loss,
    l1_loss,
    mse_loss,
    sisdr_loss,
    usdr_loss,
)

__all__ = [
    "DEFAULT_SEGMENT",
    "TRAINING_LOSSES",
    "WAVEFORM_LOSSES",
    "FrameStream",
    "SeparationModel",
]

#: Chunk length in seconds for models that keep the whole song's activations (waveform and
#: band-split networks): a 10-minute song through the umxhq-size separator peaks at about
#: 1.6 GB in 15 s chunks (bench/results/long_song.md).
DEFAULT_SEGMENT = 15.0

#: Every training objective by name, and what it compares.
TRAINING_LOSSES: dict[str, str] = {
    "spectral_mse": "magnitude MSE (Open-Unmix recipe; spectrogram models)",
    "multi_domain": "X-UMX: magnitude MSE + 10 × weighted SDR, over all 2^N-2 source subsets",
    "multi_domain_sources": "X-UMX ablation: the multi-domain loss over the sources alone",
    "combination_mse": "X-UMX ablation: magnitude MSE over all 2^N-2 source subsets",
    "combination_wsdr": "1 + weighted SDR over all 2^N-2 source subsets, on waveforms",
    "tf_l1": "BSRNN t+tf: L1 on waveform + L1 on real and imaginary STFT parts",
    "stft_l1": "BSRNN STFT-only: L1 on real and imaginary STFT parts (no waveform term)",
    "stacked_l1": "SH-Net: sum over stacks of mean |Y - X * M_stack| on max-normalised magnitudes",
    "l1": "L1 on waveforms",
    "mse": "MSE on waveforms",
    "usdr": "negative uSDR (MDX definition) on waveforms",
    "sisdr": "negative SI-SDR on waveforms",
}

#: The objectives any model trains with: a loss on its output waveforms.
WAVEFORM_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "l1": l1_loss,
    "mse": mse_loss,
    "usdr": usdr_loss,
    "sisdr": sisdr_loss,
    "combination_wsdr": combination_weighted_sdr_loss,
}

#: The objectives only one family computes (in its :meth:`SeparationModel.training_loss`),
#: and which family: the error a model of another family gives for them.
_FAMILY_LOSSES = {
    "spectral_mse": "a spectrogram model (umx, xumx)",
    "multi_domain": "a spectrogram model (umx, xumx)",
    "multi_domain_sources": "a spectrogram model (umx, xumx)",
    "combination_mse": "a spectrogram model (umx, xumx)",
    "tf_l1": "a band-split model (bsrnn)",
    "stft_l1": "a band-split model (bsrnn)",
    "stacked_l1": "a stacked hourglass model (shnet)",
}


class FrameStream:
    """Separates a stream of STFT frames of a causal model, keeping its state between calls.

    :class:`stemkit.inference.streaming.StreamingSeparator` owns the analysis and synthesis
    (buffers, reflect padding, overlap-add, latency); the model supplies this: the frames'
    stems, computed from these and all earlier frames only.

    Attributes:
        n_fft: FFT size of the frames (Hann window, one-sided).
        n_hop: hop size between frames.
    """

    n_fft: int
    n_hop: int

    def reset(self) -> None:
        """Forget the past: the next frames start a new signal."""
        raise NotImplementedError

    def __call__(self, mix_stft: Tensor) -> Tensor:
        """Stems of the next frames.

        Args:
            mix_stft: complex ``(batch, channels, nb_bins, nb_frames)``, the frames following
                those of the previous call.

        Returns:
            Complex ``(batch, sources, channels, nb_bins, nb_frames)``.
        """
        raise NotImplementedError


class SeparationModel(nn.Module):
    """Base class of waveform-to-stems models.

    A subclass maps a mixture ``(batch, audio_channels, time)`` to stems
    ``(batch, len(sources), audio_channels, time)`` at ``sample_rate``. Spectrogram cores are
    wrapped by :class:`stemkit.models.spectral.Separator`, which is itself a
    ``SeparationModel``.

    Attributes:
        sources: names of the stems, in output order.
        sample_rate: the rate in Hz the model works at.
        audio_channels: 1 or 2.
        causal: True when an output sample never depends on later input samples.
        requires_references: True when the model needs the true stems of the mixture before
            ``forward`` (the oracles): generic code must give them, and cannot separate a song
            that has none.
        model_name: the registry name, set by :func:`stemkit.models.build` (empty when the
            model was constructed directly).
        init_kwargs: the constructor arguments, set by :func:`stemkit.models.build`.
    """

    sources: tuple[str, ...]
    sample_rate: int
    audio_channels: int
    causal: bool = False
    requires_references: ClassVar[bool] = False
    model_name: str
    init_kwargs: dict[str, Any]

    def __init__(
        self,
        sources: tuple[str, ...] | list[str],
        sample_rate: int,
        audio_channels: int,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.sources = tuple(sources)
        self.sample_rate = int(sample_rate)
        self.audio_channels = int(audio_channels)
        self.causal = causal
        # set by stemkit.models.build; empty for a model constructed directly
        self.model_name = ""
        self.init_kwargs = {}

    @property
    def default_segment(self) -> float | None:
        """Chunk length in seconds that separation uses unless told otherwise.

        ``None`` separates the whole song at once: right for models whose memory stays bounded
        on any length by themselves, or whose output depends on seeing the whole track.
        """
        return DEFAULT_SEGMENT

    @property
    def default_batch_size(self) -> int:
        """Chunks per model call that separation uses unless told otherwise.

        1 unless batching chunks saves time at the same output: a model whose work is bound by
        reading its weights (one long sequence through a wide LSTM) reads them once per step
        for every chunk of the batch.
        """
        return 1

    def forward(self, mixture: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Separate ``(batch, channels, time)`` into ``(batch, sources, channels, time)``."""
        raise NotImplementedError

    def training_loss(self, mixture: Tensor, stems: Tensor, loss_name: str) -> Tensor:
        """The training loss on one batch.

        The default knows the waveform losses (:data:`WAVEFORM_LOSSES`) on ``self(mixture)``; a
        family with its own objective overrides this and hands the other names to it.

        Args:
            mixture: ``(batch, channels, time)``.
            stems: ``(batch, sources, channels, time)``, the targets in :attr:`sources` order.
            loss_name: a key of :data:`TRAINING_LOSSES`.

        Raises:
            StemkitError: an unknown loss, or one of another family.
        """
        if loss_name in WAVEFORM_LOSSES:
            return WAVEFORM_LOSSES[loss_name](self(mixture), stems)
        if loss_name in _FAMILY_LOSSES:
            raise StemkitError(
                f"loss {loss_name!r} needs {_FAMILY_LOSSES[loss_name]}, not "
                f"{type(self).__name__}; choose one of {', '.join(WAVEFORM_LOSSES)}"
            )
        raise StemkitError(
            f"unknown loss {loss_name!r}; choose one of {', '.join(TRAINING_LOSSES)}"
        )

    def prepare(self, train_set: Any, progress: bool = False) -> None:
        """A recipe step on the training tracks before the first epoch (default: none).

        Args:
            train_set: the full training tracks, without augmentation: ``train_set[i]`` is
                ``(stems, name)`` with stems ``(sources, channels, time)``.
            progress: show a progress bar.
        """

    def set_references(self, stems: Tensor, rest: Tensor | None = None) -> None:
        """Give the true stems of the next mixture, when :attr:`requires_references` is set.

        Args:
            stems: ``(sources, channels, time)``, aligned with the mixture.
            rest: ``(channels, time)``, the sum of the track's other stems (those the model
                does not separate), or None when ``stems`` are all of them.

        Raises:
            StemkitError: the model separates without references.
        """
        raise StemkitError(f"{type(self).__name__} separates without references")

    def isolate(self, target: str) -> SeparationModel | None:
        """A model that computes ``target`` without computing the other sources, if this one can.

        For a two-stem split (``target`` and the mixture minus it) the other sources' networks
        need not run when each source has its own (Open-Unmix, BSRNN without SIMO). The
        returned model shares this one's modules (no copy of the weights); its first source is
        ``target``, and its ``target`` stem is this model's (up to float rounding): a model
        that filters its sources jointly (a Wiener EM, a ratio mask) cannot isolate one.

        Returns:
            The lighter model, or None when the sources are computed jointly (the default).
        """
        return None

    def frame_stream(self) -> FrameStream:
        """A :class:`FrameStream` that separates this model's STFT frames as they come.

        Raises:
            StemkitError: the model cannot stream (it looks into the future, or does not work
                on STFT frames).
        """
        raise StemkitError(
            f"{type(self).__name__} cannot stream: streaming needs a causal spectrogram "
            "Separator, e.g. build('umx', unidirectional=True, niter=0)"
        )
