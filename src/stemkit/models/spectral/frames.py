"""Whole-song separation in frame blocks, for cores that are frame-wise except one LSTM.

An Open-Unmix core is frame-wise except for its LSTM: ``forward(x) = decode([encode(x),
lstm(encode(x))], x)``, where encode and decode (with BatchNorm in eval mode) treat every frame
on its own. So a song can be separated keeping only the encoder outputs and then, once the
LSTM has run, the decoder's first layer for all frames (``hidden_size`` floats per frame and
target), while the mixture STFT, the target magnitudes and the complex stems exist for one
block of frames at a time. Every layer runs once per frame; only the STFT of a block is
computed twice (to encode, then to decode and filter), which costs far less than holding it.
With the mixture phase, a stem's STFT is its mask times the mixture STFT
(:meth:`FrameBlockPath.masked_mixture`).

:class:`FrameBlockPath` holds the three stages; :class:`~stemkit.models.spectral.Separator`
mixes it in and takes it in eval mode without autograd (``Separator.streams``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from stemkit.dsp.stft import ISTFT, STFT, OverlapAdd, magnitude
from stemkit.models.spectral.core import MaskingCore

__all__ = ["FrameBlockPath"]

#: frames per inverse-FFT step when overlap-adding a block: memory knob only
_INVERT_FRAMES = 64
#: frequency bins filtered at once inside a Wiener block (the EM is per bin): memory knob only
_FILTER_BINS = 256


class FrameBlockPath:
    """The frame-block stages of the masking wrapper (a mixin of ``Separator``).

    :meth:`encode_frames` → :meth:`run_sequence` → :meth:`decode_and_invert`; a wrapper whose
    cores are joined differently (X-UMX's bridges) overrides the stages.
    """

    # provided by the wrapper
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    audio_channels: int
    stft: STFT
    istft: ISTFT
    target_models: nn.ModuleDict
    #: frames per block where blocks do not change the result: a memory knob only
    frame_block: int

    if TYPE_CHECKING:

        def _check_waveform(self, waveform: Tensor) -> None: ...

        def _wiener_block(self, nb_frames: int) -> int: ...

        def _filter_block(self, estimates: Tensor, mix_stft: Tensor) -> Tensor: ...

        @property
        def niter(self) -> int: ...

        @property
        def softmask(self) -> bool: ...

        @property
        def residual(self) -> bool: ...

    def _cores(self) -> list[MaskingCore]:
        return list(self.target_models.values())  # type: ignore[arg-type]

    def _block_spectrogram(self, mixture: Tensor, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Mixture STFT of frames ``[start, stop)`` and the cores' view of its magnitude.

        Returns:
            Complex ``(batch, channels, nb_bins, nb_block_frames)`` and the magnitude time
            first, ``(nb_block_frames, batch, audio_channels, nb_bins)`` (a view of
            :meth:`_block_magnitude`'s).
        """
        spec, mag = self._block_magnitude(mixture, start, stop)
        return spec, mag.permute(3, 0, 1, 2)

    def _block_magnitude(self, mixture: Tensor, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Mixture STFT of frames ``[start, stop)`` and its magnitude in the same layout.

        Returns:
            Complex ``(batch, channels, nb_bins, nb_block_frames)`` and the real
            ``(batch, audio_channels, nb_bins, nb_block_frames)``.
        """
        spec = self.stft.frames(mixture, start, stop)
        return spec, magnitude(spec, mono=self.audio_channels == 1)

    def encode_frames(self, mixture: Tensor) -> list[Tensor]:
        """Stage 1: every core's encoder output for the whole song.

        The mixture STFT is computed block by block (:meth:`stemkit.dsp.stft.STFT.frames`)
        and dropped once encoded.

        Args:
            mixture: ``(batch, channels, time)``.

        Returns:
            One ``(nb_frames, batch, hidden_size)`` tensor per target.
        """
        self._check_waveform(mixture)
        nb_frames = self.stft.frame_count(mixture.shape[-1])
        cores = self._cores()
        encoded: list[Tensor] = []
        for start in range(0, nb_frames, self.frame_block):
            stop = min(start + self.frame_block, nb_frames)
            _, mag = self._block_magnitude(mixture, start, stop)
            for index, core in enumerate(cores):
                features = core.encode_block(mag)
                if index == len(encoded):
                    encoded.append(features.new_empty(nb_frames, *features.shape[1:]))
                encoded[index][start:stop] = features
        return encoded

    def run_sequence(self, encoded: list[Tensor]) -> list[Tensor]:
        """Stage 2: each core's LSTM over the whole song, then the part of its decoder that
        needs only the skip features (``decode_hidden``); consumes ``encoded`` (emptied).

        Args:
            encoded: the output of :meth:`encode_frames`; each entry is freed once used.

        Returns:
            One ``(nb_frames, batch, width)`` tensor per target, the input of the core's
            ``decode_block`` (Open-Unmix: the decoder's hidden layer, ``hidden_size`` wide).
        """
        context = []
        for index, core in enumerate(self._cores()):
            features = encoded[index]
            encoded[index] = features.new_empty(0)
            lstm_out = core.lstm(features)[0]
            hidden: Tensor | None = None
            for start in range(0, features.shape[0], self.frame_block):
                stop = start + self.frame_block
                piece = core.decode_hidden(
                    torch.cat([features[start:stop], lstm_out[start:stop]], dim=-1)
                )
                if hidden is None:
                    # the encoder output of a frame is not needed once its piece is computed:
                    # write over it where the widths agree (Open-Unmix's do)
                    same = piece.shape[1:] == features.shape[1:] and piece.dtype == features.dtype
                    shape = (features.shape[0], *piece.shape[1:])
                    hidden = features if same else piece.new_empty(shape)
                hidden[start:stop] = piece
            del features, lstm_out
            assert hidden is not None
            context.append(hidden)
        encoded.clear()
        return context

    def decode_frames(self, mag: Tensor, context: list[Tensor], start: int) -> Tensor:
        """Target magnitudes of one block of frames from its mixture magnitude and the context.

        Args:
            mag: ``(batch, audio_channels, nb_bins, nb_block_frames)``, mixture magnitude.
            context: the output of :meth:`run_sequence`.
            start: the block's first frame.

        Returns:
            ``(batch, nb_targets, audio_channels, nb_bins, nb_block_frames)``.
        """
        stop = start + mag.shape[-1]
        cores = self._cores()
        estimates = mag.new_empty(mag.shape[0], len(cores), *mag.shape[1:])
        for index, core in enumerate(cores):
            core.decode_block(context[index][start:stop], mag, out=estimates[:, index])
        return estimates

    def _masks_the_mixture(self, nb_channels: int) -> bool:
        """Whether each stem's STFT is its core's mask times the mixture STFT.

        With the mixture phase (``niter=0``, no ratio mask, no residual), a core that masks
        the mixture magnitude gives ``mask·|x| · x/|x| = mask·x``: no magnitude, phase or
        trigonometry to compute (silent bins give 0 either way). A mono core on a stereo
        mixture sees the channels' mean magnitude, so that shortcut needs the mixture's own
        channel count; cores joined differently (X-UMX's bridges) decode their own way.
        """
        return (
            self.niter == 0
            and not self.softmask
            and not self.residual
            and nb_channels == self.audio_channels
            and type(self).decode_frames is FrameBlockPath.decode_frames
            and all(type(core).mask_block is not MaskingCore.mask_block for core in self._cores())
        )

    def masked_mixture(self, spec: Tensor, context: list[Tensor], start: int) -> Tensor:
        """Complex stems of one block as mask × mixture (see :meth:`_masks_the_mixture`).

        Args:
            spec: complex ``(batch, channels, nb_bins, nb_block_frames)``, the mixture STFT.
            context: the output of :meth:`run_sequence`.
            start: the block's first frame.

        Returns:
            Complex ``(batch, nb_targets, channels, nb_bins, nb_block_frames)``.
        """
        stop = start + spec.shape[-1]
        # torch.stft's frames come bin-major (a transposed view): one contiguous copy here makes
        # each target's product below 3-4× faster than on the strided layout
        pairs = torch.view_as_real(spec.contiguous())
        stems = spec.new_empty(spec.shape[0], len(self.targets), *spec.shape[1:])
        for index, core in enumerate(self._cores()):
            mask = core.mask_block(context[index][start:stop])
            assert mask is not None
            # real × (re, im) pairs: widening the mask to complex would cost a copy
            torch.mul(pairs, mask.unsqueeze(-1), out=torch.view_as_real(stems[:, index]))
        return stems

    def decode_and_invert(self, mixture: Tensor, context: list[Tensor]) -> Tensor:
        """Stage 3: per Wiener block, decode the targets, filter and invert into the stems.

        Each block of ``wiener_win_len`` frames recomputes its mixture STFT, decodes every
        target for those frames (:meth:`decode_frames`), runs the Wiener filter/EM on them and
        overlap-adds their inverse STFT into the preallocated output, as the wrapper's
        ``filter_and_invert`` does with whole-song spectrograms.

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
        if self._masks_the_mixture(nb_channels):
            for first in range(0, nb_frames, group):
                spec = self.stft.frames(mixture, first, min(first + group, nb_frames))
                stems_stft = self.masked_mixture(spec, context, first)
                del spec
                for piece in stems_stft.split(_INVERT_FRAMES, dim=-1):
                    inverse.add(piece)
                del stems_stft
            return inverse.finish()
        for first in range(0, nb_frames, group):
            spec, mag = self._block_magnitude(mixture, first, min(first + group, nb_frames))
            estimates = self.decode_frames(mag, context, first)
            del mag
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
