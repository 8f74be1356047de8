"""What the masking wrapper asks of a spectrogram core."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

__all__ = ["MaskingCore"]


class MaskingCore(nn.Module):
    """A target's core: mixture magnitude in, the target's magnitude estimate out.

    Subclasses map ``(batch, nb_channels, nb_output_bins, nb_frames)`` to the same shape. A
    core that is frame-wise except for one LSTM declares :attr:`encode_lstm_decode` and
    implements :meth:`encode`, ``lstm`` and :meth:`decode`: the wrapper then separates a whole
    song in frame blocks and, when the core is :attr:`unidirectional`, streams it.

    Attributes:
        nb_channels: channels of the magnitude spectrogram (1 or 2).
        nb_output_bins: frequency bins in and out, ``n_fft // 2 + 1``.
        unidirectional: the core never reads later frames.
        encode_lstm_decode: ``forward(x) == decode(cat(encode(x), lstm(encode(x))), x)``
            with ``encode`` and ``decode`` frame-wise in eval mode.
        uses_statistics: the core wants :meth:`set_statistics` before training.
    """

    nb_channels: int
    nb_output_bins: int
    unidirectional: bool = False
    encode_lstm_decode: ClassVar[bool] = False
    #: the core standardises its input with statistics of the training mixtures
    #: (:meth:`set_statistics`), fitted by the wrapper's ``prepare``
    uses_statistics: ClassVar[bool] = False
    lstm: nn.LSTM

    def encode(self, x: Tensor) -> Tensor:
        """``(nb_frames, batch, nb_channels, nb_bins)`` → ``(nb_frames, batch, features)``."""
        raise NotImplementedError

    def decode(self, skip: Tensor, mix: Tensor) -> Tensor:
        """Skip features ``(nb_frames, batch, 2·features)`` and the mixture magnitude
        ``(nb_frames, batch, nb_channels, nb_bins)`` → the masked magnitude, shaped like ``mix``.
        """
        raise NotImplementedError

    def set_statistics(self, mean: Any, std: Any) -> None:
        """Store the per-bin mean and deviation of the training mixtures' magnitudes.

        Called by the wrapper's ``prepare`` when :attr:`uses_statistics` is set.
        """
