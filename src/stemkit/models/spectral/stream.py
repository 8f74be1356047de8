"""Causal frame-by-frame separation with unidirectional LSTM cores (causal Open-Unmix)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from stemkit.dsp.stft import magnitude
from stemkit.dsp.wiener import wiener
from stemkit.errors import StemkitError
from stemkit.models.base import FrameStream

if TYPE_CHECKING:
    from stemkit.models.spectral.wrapper import Separator

__all__ = ["LSTMFrameStream"]

LSTMState = tuple[Tensor, Tensor]


class LSTMFrameStream(FrameStream):
    """A :class:`~stemkit.models.base.FrameStream` over a causal masking ``Separator``.

    Each call runs the frames through every core's encoder, its LSTM from the state the
    previous call left, and its decoder, then takes the mixture phase (``niter=0``): frame by
    frame the same as the offline separator.

    Args:
        separator: cores that declare ``encode_lstm_decode`` and are ``unidirectional``, and
            ``niter == 0``. It is put in eval mode (batch norm must use its running statistics
            and LSTM dropout must be off for a frame to depend on the past only).

    Raises:
        StemkitError: the separator looks into the future (a bidirectional LSTM reads later
            frames; Wiener EM pools statistics over blocks of frames), or a core is not an
            LSTM core.
    """

    def __init__(self, separator: Separator) -> None:
        for name, core in zip(separator.targets, separator._cores(), strict=True):
            if not core.encode_lstm_decode:
                raise StemkitError(
                    f"target {name!r} has a {type(core).__name__} core; streaming supports "
                    "Open-Unmix-like LSTM cores only"
                )
            if not core.unidirectional:
                raise StemkitError(
                    f"target {name!r} has a bidirectional LSTM, whose backward direction reads "
                    "future frames, so it cannot stream; build the model with "
                    "unidirectional=True (and train it so)"
                )
        if separator.niter != 0:
            raise StemkitError(
                f"the separator refines its estimates with {separator.niter} Wiener EM "
                f"iteration(s), which pool statistics over blocks of up to "
                f"{separator.wiener_win_len} frames, future ones included; set niter=0 to stream"
            )
        self.separator = separator.eval()
        self.n_fft = separator.n_fft
        self.n_hop = separator.n_hop
        self._states: dict[str, LSTMState] = {}

    def reset(self) -> None:
        """Forget the LSTM states."""
        self._states = {}

    def __call__(self, mix_stft: Tensor) -> Tensor:
        """Stems of the next frames, ``(batch, sources, channels, nb_bins, nb_frames)``."""
        sep = self.separator
        mix_mag = magnitude(mix_stft, mono=sep.audio_channels == 1)
        frames = mix_mag.permute(3, 0, 1, 2)  # (nb_frames, batch, audio_channels, nb_bins)
        estimates = []
        for name, core in zip(sep.targets, sep._cores(), strict=True):
            encoded = core.encode(frames)
            lstm_out = self._lstm_steps(name, core.lstm, encoded)
            masked = core.decode(torch.cat([encoded, lstm_out], dim=-1), frames)
            estimates.append(masked.permute(1, 2, 3, 0))
        return wiener(
            torch.stack(estimates, dim=1),
            mix_stft,
            iterations=0,
            softmask=sep.softmask,
            residual=sep.residual,
        )

    def _lstm_steps(self, name: str, lstm: nn.LSTM, inputs: Tensor) -> Tensor:
        """Run ``lstm`` over ``inputs`` ``(nb_frames, batch, features)`` from the saved state.

        Frame by frame with the fused cell: ``nn.LSTM`` on CPU re-packs its weights for oneDNN
        on every call, which costs several times the arithmetic of one frame.
        """
        state = self._states.get(name)
        if state is None:
            zeros = inputs.new_zeros(lstm.num_layers, inputs.shape[1], lstm.hidden_size)
            state = (zeros, zeros)
        hidden, cell = list(state[0].unbind(0)), list(state[1].unbind(0))
        weights = [
            (
                getattr(lstm, f"weight_ih_l{layer}"),
                getattr(lstm, f"weight_hh_l{layer}"),
                getattr(lstm, f"bias_ih_l{layer}") if lstm.bias else None,
                getattr(lstm, f"bias_hh_l{layer}") if lstm.bias else None,
            )
            for layer in range(lstm.num_layers)
        ]
        outputs = []
        for frame in inputs:
            for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights):
                hidden[layer], cell[layer] = torch.lstm_cell(
                    frame, (hidden[layer], cell[layer]), w_ih, w_hh, b_ih, b_hh
                )
                frame = hidden[layer]
            outputs.append(frame)
        self._states[name] = (torch.stack(hidden), torch.stack(cell))
        return torch.stack(outputs)
