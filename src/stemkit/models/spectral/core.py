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

    # The frame-block path calls the three methods below (eval mode, no autograd). Their
    # defaults rebuild them from encode/decode; a core overrides them to skip transposes, and
    # to run part of its decoder once per frame right after the LSTM (the part it keeps in
    # ``decode_hidden``'s output), so that no layer runs twice on a frame.

    def encode_block(self, mag: Tensor) -> Tensor:
        """:meth:`encode` of a magnitude ``(batch, nb_channels, nb_bins, nb_frames)``, the
        STFT's layout; returns ``(nb_frames, batch, features)``."""
        return self.encode(mag.permute(3, 0, 1, 2))

    def decode_hidden(self, skip: Tensor) -> Tensor:
        """The part of :meth:`decode` that needs only the skip features
        ``(nb_frames, batch, 2·features)``; returns ``(nb_frames, batch, width)``. The default
        keeps the skip features as they are."""
        return skip

    def decode_block(self, hidden: Tensor, mag: Tensor, out: Tensor | None = None) -> Tensor:
        """The rest of :meth:`decode`: ``decode_block(decode_hidden(skip), mag)`` equals
        ``decode(skip, mag time first)``, in the layout of ``mag``
        ``(batch, nb_channels, nb_bins, nb_frames)``; written into ``out`` when given."""
        masked = self.decode(hidden, mag.permute(3, 0, 1, 2)).permute(1, 2, 3, 0)
        if out is None:
            return masked
        return out.copy_(masked)

    def mask_block(self, hidden: Tensor) -> Tensor | None:
        """The non-negative mask ``decode_block(hidden, mag)`` multiplies ``mag`` by, in the
        layout ``(batch, nb_channels, nb_bins, nb_frames)``; None (the default) for a core
        whose output is no mask of its input. With the mixture phase, a target's complex
        STFT is then the mask times the mixture STFT."""
        return None

    def set_statistics(self, mean: Any, std: Any) -> None:
        """Store the per-bin mean and deviation of the training mixtures' magnitudes.

        Called by the wrapper's ``prepare`` when :attr:`uses_statistics` is set.
        """
