"""CrossNet-Open-Unmix (X-UMX; Sawata et al., ICASSP 2021): Open-Unmix branches joined by bridges.

One Open-Unmix branch per source, with two averaging operations across the branches
(reference/spec-notes.md §3):

* bridge 1: the encoder outputs (after tanh) of all branches are averaged, and this one average
  is the input of every branch's LSTM;
* bridge 2: each branch's skip concatenation ``[encoder output, LSTM output]`` is averaged over
  the branches, and this one average is the input of every branch's decoder.

The bridges add no parameters: the branches *are* :class:`~stemkit.models.umx.OpenUnmix` cores
(4 × 8,893,348 = 35,573,392 parameters at the MUSDB settings), held by a
:class:`~stemkit.models.spectral.Separator` subclass whose ``forward_magnitudes`` runs them jointly.
So X-UMX shares Open-Unmix's STFT, Wiener filtering, training views, input statistics and
``state_dict`` keys (``target_models.<source>.fc1.weight``, ...), and a trained UMX can seed it
branch by branch. Weights saved by asteroid's ``XUMX`` use other key names; see
:func:`stemkit.artifacts.asteroid.convert_asteroid_state_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from stemkit import MUSDB_SOURCES
from stemkit.models.registry import register
from stemkit.models.spectral import MaskingCore, Separator, SpectralOptions
from stemkit.models.umx import OpenUnmix, umx_cores

__all__ = ["XUMX", "xumx"]


class XUMX(Separator):
    """X-UMX: Open-Unmix cores run jointly through the two bridging averages.

    The waveform path is :class:`~stemkit.models.spectral.Separator`'s (STFT, magnitudes,
    Wiener or mixture phase, iSTFT); only :meth:`forward_magnitudes` differs.

    Args:
        target_models: one :class:`OpenUnmix` core per source, in output order, all with the
            same ``nb_bins``, ``max_bin``, ``nb_channels``, ``hidden_size``, LSTM depth and
            direction.
        options: STFT, channels and filtering (:class:`~stemkit.models.spectral.SpectralOptions`).
        bridging: average across branches as X-UMX does. ``False`` runs the branches
            independently, which makes the model exactly a set of Open-Unmix cores (the
            paper's ablation baseline).

    Shapes:
        forward: ``(batch, audio_channels, time)`` → ``(batch, nb_sources, audio_channels, time)``.
        forward_magnitudes: ``(batch, audio_channels, nb_bins, nb_frames)`` →
        ``(batch, nb_targets, audio_channels, nb_bins, nb_frames)``.
    """

    def __init__(
        self,
        target_models: Mapping[str, MaskingCore],
        options: SpectralOptions,
        *,
        bridging: bool = True,
    ) -> None:
        _check_branches(target_models, options.audio_channels, options.n_fft)
        super().__init__(target_models, options)
        self.bridging = bridging

    def _branches(self) -> list[OpenUnmix]:
        cores = list(self.target_models.values())
        assert all(isinstance(core, OpenUnmix) for core in cores)
        return cores  # type: ignore[return-value]

    def forward_magnitudes(self, mix_mag: Tensor) -> Tensor:
        """Masked magnitude estimates of every target from the mixture magnitude.

        Args:
            mix_mag: ``(batch, nb_channels, nb_bins, nb_frames)``.

        Returns:
            ``(batch, nb_targets, nb_channels, nb_bins, nb_frames)``, targets in order (no
            residual): ReLU mask × ``mix_mag``.
        """
        branches = self._branches()
        first = branches[0]
        if (
            mix_mag.dim() != 4
            or mix_mag.shape[1] != self.audio_channels
            or mix_mag.shape[2] != first.nb_output_bins
        ):
            raise ValueError(
                f"X-UMX expects (batch, {self.audio_channels}, {first.nb_output_bins}, nb_frames), "
                f"got {tuple(mix_mag.shape)}"
            )
        # (nb_frames, batch, nb_channels, nb_bins): time first for the LSTMs
        x = mix_mag.permute(3, 0, 1, 2)
        mix = x.detach()
        encoded = [core.encode(x) for core in branches]
        if self.bridging:
            lstm_inputs = [_mean(encoded)] * len(branches)
        else:
            lstm_inputs = encoded
        skips = [
            torch.cat([own, core.lstm(shared)[0]], dim=-1)
            for core, own, shared in zip(branches, encoded, lstm_inputs, strict=True)
        ]
        if self.bridging:
            skips = [_mean(skips)] * len(branches)
        del encoded, lstm_inputs
        if torch.is_grad_enabled() and (
            mix_mag.requires_grad or any(p.requires_grad for p in self.parameters())
        ):
            estimates = [core.decode(h, mix) for core, h in zip(branches, skips, strict=True)]
            # (nb_frames, batch, nb_targets, nb_channels, nb_bins) → batch first, frames last
            return torch.stack(estimates, dim=2).permute(1, 2, 3, 4, 0)
        # without autograd each branch writes into one preallocated tensor (no stacked copy)
        out = mix_mag.new_empty(mix_mag.shape[0], len(branches), *mix_mag.shape[1:])
        for index, (core, h) in enumerate(zip(branches, skips, strict=True)):
            out[:, index] = core.decode(h, mix).permute(1, 2, 3, 0)
        return out

    # Frame-block stages (see Separator.streams). With bridging, every branch decodes the same
    # skip features, [mean of the encoder outputs, mean of the LSTM outputs], and every LSTM
    # reads the mean encoder output: only those two means are kept for the whole song.

    def _streams_forward_magnitudes(self) -> bool:
        return type(self).forward_magnitudes is XUMX.forward_magnitudes

    def encode_frames(self, mixture: Tensor) -> list[Tensor]:
        """Stage 1 of the frame-block path (see :meth:`Separator.encode_frames`).

        Returns:
            With bridging, one ``(nb_frames, batch, hidden_size)`` tensor: the mean encoder
            output of the branches; without, one encoder output per branch.
        """
        if not self.bridging:
            return super().encode_frames(mixture)
        self._check_waveform(mixture)
        nb_frames = self.stft.frame_count(mixture.shape[-1])
        shared: Tensor | None = None
        for start in range(0, nb_frames, self.frame_block):
            stop = min(start + self.frame_block, nb_frames)
            _, mix = self._block_spectrogram(mixture, start, stop)
            features = _mean([core.encode(mix) for core in self._branches()])
            if shared is None:
                shared = features.new_empty(nb_frames, *features.shape[1:])
            shared[start:stop] = features
        assert shared is not None
        return [shared]

    def run_sequence(self, encoded: list[Tensor]) -> list[Tensor]:
        """Stage 2 (see :meth:`Separator.run_sequence`): with bridging, the mean LSTM output."""
        if not self.bridging:
            return super().run_sequence(encoded)
        branches = self._branches()
        shared = encoded.pop()
        total = branches[0].lstm(shared)[0]
        for core in branches[1:]:
            total += core.lstm(shared)[0]
        del shared
        return [total.div_(len(branches))]

    def decode_frames(self, mag: Tensor, context: list[Tensor], start: int) -> Tensor:
        """One block's target magnitudes (see :meth:`Separator.decode_frames`)."""
        if not self.bridging:
            return super().decode_frames(mag, context, start)
        mix = mag.permute(3, 0, 1, 2)  # the cores' time-first view
        branches = self._branches()
        lstm_mean = context[0][start : start + mix.shape[0]]
        skip = torch.cat([_mean([core.encode(mix) for core in branches]), lstm_mean], dim=-1)
        estimates = mix.new_empty(mix.shape[1], len(branches), *mix.shape[2:], mix.shape[0])
        for index, core in enumerate(branches):
            estimates[:, index] = core.decode(skip, mix).permute(1, 2, 3, 0)
        return estimates

    def extra_repr(self) -> str:
        return f"bridging={self.bridging}"


def _mean(tensors: list[Tensor]) -> Tensor:
    return torch.stack(tensors).mean(dim=0)


def _check_branches(
    target_models: Mapping[str, MaskingCore], audio_channels: int, n_fft: int
) -> None:
    cores = list(target_models.values())
    if not cores:
        raise ValueError("X-UMX needs at least one branch")
    if not all(isinstance(core, OpenUnmix) for core in cores):
        raise TypeError("X-UMX branches must be stemkit.models.umx.OpenUnmix cores")

    def layout(core: OpenUnmix) -> tuple[object, ...]:
        lstm = core.lstm
        return (
            core.nb_output_bins,
            core.nb_bins,
            core.nb_channels,
            core.hidden_size,
            lstm.num_layers,
            core.unidirectional,
        )

    layouts = {layout(core) for core in cores}  # type: ignore[arg-type]
    if len(layouts) != 1:
        raise ValueError(
            "X-UMX averages features across branches, so every branch needs the same (nb_bins, "
            f"max_bin, nb_channels, hidden_size, nb_layers, unidirectional); got {layouts}"
        )
    nb_output_bins, _, core_channels, *_ = layouts.pop()
    if core_channels != audio_channels or nb_output_bins != n_fft // 2 + 1:
        raise ValueError(
            f"the branches take {core_channels} channel(s) × {nb_output_bins} bins, but the "
            f"separator has audio_channels={audio_channels} and n_fft={n_fft}"
        )


@register("xumx")
def xumx(
    sources: Sequence[str] = MUSDB_SOURCES,
    hidden_size: int = 512,
    nb_layers: int = 3,
    unidirectional: bool = False,
    bandwidth: float = 16000,
    bridging: bool = True,
    **options: Any,
) -> XUMX:
    """X-UMX separator with the MUSDB defaults of the asteroid recipe (hidden 512, 16 kHz band).

    Upstream separates with ``niter=1``; the default here is 0 (mixture phase), as for ``umx``.

    Args:
        sources: target names, in output order (the asteroid recipe uses
            ``["bass", "drums", "vocals", "other"]``).
        hidden_size: branch width.
        nb_layers: LSTM layers per branch.
        unidirectional: causal branches.
        bandwidth: input bandwidth in Hz (sets ``max_bin``).
        bridging: the two cross-branch averages; ``False`` gives independent Open-Unmix cores.
        **options: the fields of :class:`~stemkit.models.spectral.SpectralOptions`, as for
            :func:`~stemkit.models.umx.umx`.
    """
    spectral = SpectralOptions.from_kwargs(options)
    cores = umx_cores(sources, spectral, hidden_size, nb_layers, unidirectional, bandwidth)
    return XUMX(cores, spectral, bridging=bridging)
