"""Open-Unmix (Stöter et al., 2019): the spectrogram-masking core and its registry entry.

The core keeps the layer order, attribute names and therefore the ``state_dict`` keys of the
``openunmix`` package (reference/spec-notes.md §2.3), so that its published weights load with
``load_state_dict`` unchanged. One core per target; :class:`stemkit.models.spectral.Separator` turns
the cores into a waveform-to-stems model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stemkit import MUSDB_SOURCES
from stemkit.dsp.stft import bandwidth_to_max_bin
from stemkit.models.registry import register
from stemkit.models.spectral import MaskingCore, Separator, SpectralOptions

__all__ = ["OpenUnmix", "umx", "umx_cores"]

ArrayLike = Tensor | np.ndarray | Sequence[float]


def _as_vector(values: ArrayLike, name: str) -> Tensor:
    vector = torch.as_tensor(np.asarray(values, dtype=np.float64)).float().flatten()
    if not torch.isfinite(vector).all():
        raise ValueError(f"{name} holds non-finite values; recompute the training statistics")
    return vector


class OpenUnmix(MaskingCore):
    """Open-Unmix core: magnitude spectrogram in, masked magnitude spectrogram out.

    Layers: crop to ``max_bin`` bins → standardise (``+ input_mean``, ``× input_scale``) →
    ``fc1`` (no bias) → ``bn1`` → tanh → ``lstm`` (``nb_layers``, bidirectional with
    ``hidden_size // 2`` units per direction, or unidirectional with ``hidden_size``; dropout
    0.4 between layers) → concatenate tanh output and LSTM output → ``fc2`` → ``bn2`` → ReLU →
    ``fc3`` → ``bn3`` → ``× output_scale + output_mean`` → ReLU → × input magnitude.

    Args:
        nb_bins: number of output bins, ``n_fft // 2 + 1``.
        nb_channels: audio channels of the input spectrogram (1 or 2).
        hidden_size: width of the bottleneck (512 for umx/umxhq, 1024 for umxl).
        nb_layers: LSTM layers.
        unidirectional: causal variant (a forward-only LSTM of ``hidden_size`` units).
        max_bin: bins kept at the input; ``None`` keeps all. 1487 for a 16 kHz bandwidth.
        input_mean: per-bin mean of the training magnitudes (length ≥ ``max_bin``); see
            :meth:`set_statistics`. ``None`` leaves zeros.
        input_scale: per-bin standard deviation, the companion of ``input_mean`` (upstream's
            argument name, though it holds a deviation). ``None`` leaves ones.

    Shapes:
        forward: ``(batch, nb_channels, nb_bins, nb_frames)`` →
        ``(batch, nb_channels, nb_bins, nb_frames)``.
    """

    #: ``forward(x) == decode(cat(encode(x), lstm(encode(x))), x)`` with ``encode`` and
    #: ``decode`` frame-wise in eval mode: lets :class:`~stemkit.models.spectral.Separator`
    #: separate a whole song in frame blocks. A subclass that changes ``forward`` must set it
    #: to False.
    encode_lstm_decode: ClassVar[bool] = True
    #: the input standardisation is fitted on the training mixtures (:meth:`set_statistics`)
    uses_statistics: ClassVar[bool] = True

    def __init__(
        self,
        nb_bins: int = 2049,
        nb_channels: int = 2,
        hidden_size: int = 512,
        nb_layers: int = 3,
        unidirectional: bool = False,
        max_bin: int | None = None,
        input_mean: ArrayLike | None = None,
        input_scale: ArrayLike | None = None,
    ) -> None:
        super().__init__()
        if max_bin is not None and not 0 < max_bin <= nb_bins:
            raise ValueError(f"max_bin must lie in [1, nb_bins={nb_bins}], got {max_bin}")
        if not unidirectional and hidden_size % 2:
            raise ValueError(f"a bidirectional core needs an even hidden_size, got {hidden_size}")
        self.nb_output_bins = nb_bins
        # upstream treats max_bin=0 like None
        self.nb_bins = max_bin or nb_bins
        self.nb_channels = nb_channels
        self.hidden_size = hidden_size
        self.unidirectional = unidirectional

        self.fc1 = nn.Linear(self.nb_bins * nb_channels, hidden_size, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden_size)
        self.lstm = nn.LSTM(
            input_size=hidden_size,
            hidden_size=hidden_size if unidirectional else hidden_size // 2,
            num_layers=nb_layers,
            bidirectional=not unidirectional,
            batch_first=False,
            dropout=0.4 if nb_layers > 1 else 0.0,
        )
        self.fc2 = nn.Linear(2 * hidden_size, hidden_size, bias=False)
        self.bn2 = nn.BatchNorm1d(hidden_size)
        self.fc3 = nn.Linear(hidden_size, self.nb_output_bins * nb_channels, bias=False)
        self.bn3 = nn.BatchNorm1d(self.nb_output_bins * nb_channels)

        # Parameters (not buffers), as upstream: the keys and the parameter count depend on it.
        self.input_mean = nn.Parameter(torch.zeros(self.nb_bins))
        self.input_scale = nn.Parameter(torch.ones(self.nb_bins))
        self.output_scale = nn.Parameter(torch.ones(self.nb_output_bins))
        self.output_mean = nn.Parameter(torch.ones(self.nb_output_bins))
        if input_mean is not None or input_scale is not None:
            self.set_statistics(
                input_mean if input_mean is not None else np.zeros(self.nb_bins),
                input_scale if input_scale is not None else np.ones(self.nb_bins),
            )

    @torch.no_grad()
    def set_statistics(self, mean: ArrayLike, std: ArrayLike) -> None:
        """Store the input standardisation as the reference recipe does.

        Keeps ``-mean`` and ``1 / std`` over the first ``max_bin`` bins, with ``std`` floored
        at ``1e-4 × max(std)`` so that silent bins do not blow up.

        Args:
            mean: per-bin mean of channel-averaged training magnitudes, length ≥ ``max_bin``.
            std: per-bin standard deviation, same length rule.
        """
        mean_t = _as_vector(mean, "mean")
        std_t = _as_vector(std, "std")
        for name, vector in (("mean", mean_t), ("std", std_t)):
            if vector.numel() < self.nb_bins:
                raise ValueError(
                    f"{name} has {vector.numel()} bins, the model keeps {self.nb_bins}"
                )
        std_t = std_t[: self.nb_bins]
        if std_t.max() <= 0:
            raise ValueError("std is zero everywhere; the statistics come from silent data")
        std_t = torch.clamp(std_t, min=1e-4 * float(std_t.max()))
        self.input_mean.copy_(-mean_t[: self.nb_bins])
        self.input_scale.copy_(1.0 / std_t)

    def forward(self, x: Tensor) -> Tensor:
        """Mask ``x`` ``(batch, nb_channels, nb_bins, nb_frames)``; returns the same shape."""
        if x.dim() != 4 or x.shape[1] != self.nb_channels or x.shape[2] != self.nb_output_bins:
            raise ValueError(
                f"OpenUnmix expects (batch, {self.nb_channels}, {self.nb_output_bins}, nb_frames),"
                f" got {tuple(x.shape)}"
            )
        # (nb_frames, batch, nb_channels, nb_bins): time first for the LSTM
        x = x.permute(3, 0, 1, 2)
        mix = x.detach()
        encoded = self.encode(x)
        lstm_out, _ = self.lstm(encoded)
        return self.decode(torch.cat([encoded, lstm_out], dim=-1), mix).permute(1, 2, 3, 0)

    def encode(self, x: Tensor) -> Tensor:
        """Standardise, project and squash the input magnitudes (the part before the LSTM).

        Args:
            x: ``(nb_frames, batch, nb_channels, nb_bins)``, full band.

        Returns:
            ``(nb_frames, batch, hidden_size)`` after tanh.
        """
        nb_frames, batch, nb_channels, _ = x.shape
        h = (x[..., : self.nb_bins] + self.input_mean) * self.input_scale
        h = self.bn1(self.fc1(h.reshape(-1, nb_channels * self.nb_bins)))
        return torch.tanh(h.reshape(nb_frames, batch, self.hidden_size))

    def decode(self, skip: Tensor, mix: Tensor) -> Tensor:
        """Turn the skip features into a mask and apply it (the part after the LSTM).

        Args:
            skip: ``(nb_frames, batch, 2·hidden_size)``, encoder output beside LSTM output.
            mix: ``(nb_frames, batch, nb_channels, nb_bins)``, the full-band mixture magnitude.

        Returns:
            The masked magnitude, shaped like ``mix``.
        """
        nb_frames, batch, nb_channels, _ = mix.shape
        h = F.relu(self.bn2(self.fc2(skip.reshape(-1, skip.shape[-1]))))
        h = self.bn3(self.fc3(h))
        h = h.reshape(nb_frames, batch, nb_channels, self.nb_output_bins)
        return F.relu(h * self.output_scale + self.output_mean) * mix

    # --- the frame-block path (stemkit.models.spectral.frames) -----------------------------
    # The same layers as encode/decode, arranged for whole songs in eval mode: the mixture
    # magnitude stays in the STFT's own (batch, channels, bins, frames) layout (no transposed
    # copy of it or of the masked output), and the decoder's first layer runs once per frame
    # right after the LSTM, so the encoder never runs twice on a frame.

    def encode_block(self, mag: Tensor) -> Tensor:
        """:meth:`encode` of a magnitude in the STFT's layout (eval mode).

        Args:
            mag: ``(batch, nb_channels, nb_output_bins, nb_frames)``.

        Returns:
            ``(nb_frames, batch, hidden_size)``, as :meth:`encode` of ``mag`` time first.
        """
        batch, nb_channels, _, nb_frames = mag.shape
        # time first while standardising: the product below is then frames × features
        x = mag[..., : self.nb_bins, :].permute(3, 0, 1, 2)
        h = (x + self.input_mean).mul_(self.input_scale)
        h = self.bn1(self.fc1(h.reshape(-1, nb_channels * self.nb_bins)))
        return torch.tanh_(h).reshape(nb_frames, batch, self.hidden_size)

    def decode_hidden(self, skip: Tensor) -> Tensor:
        """The decoder's first layer: ``fc2`` → ``bn2`` → ReLU.

        Args:
            skip: ``(nb_frames, batch, 2·hidden_size)``.

        Returns:
            ``(nb_frames, batch, hidden_size)``.
        """
        h = F.relu_(self.bn2(self.fc2(skip.reshape(-1, skip.shape[-1]))))
        return h.reshape(*skip.shape[:-1], self.hidden_size)

    def decode_block(self, hidden: Tensor, mag: Tensor, out: Tensor | None = None) -> Tensor:
        """The rest of :meth:`decode` (``fc3`` → ``bn3`` → output scaling → ReLU → × mixture),
        straight into the STFT's layout (eval mode).

        Args:
            hidden: ``(nb_frames, batch, hidden_size)`` from :meth:`decode_hidden`.
            mag: ``(batch, nb_channels, nb_output_bins, nb_frames)``, the mixture magnitude.
            out: where to write the result (shaped like ``mag``); a new tensor if None.

        Returns:
            The masked magnitude, shaped like ``mag``.
        """
        mask = self.mask_block(hidden)
        return torch.mul(mask, mag, out=out) if out is not None else mask.mul_(mag)

    def mask_block(self, hidden: Tensor) -> Tensor:
        """The mask :meth:`decode_block` multiplies the mixture magnitude by (eval mode).

        Args:
            hidden: ``(nb_frames, batch, hidden_size)`` from :meth:`decode_hidden`.

        Returns:
            ``(batch, nb_channels, nb_output_bins, nb_frames)``, non-negative.
        """
        nb_frames, batch, _ = hidden.shape
        # fc3 as W · hiddenᵀ: the product comes out frames last, the layout of the STFT. The
        # layers after it run as decode runs them: folding bn3 and the output scaling into
        # fc3 moved values across the ReLU's zero, which a ratio mask (softmask) amplifies.
        h = torch.matmul(self.fc3.weight, hidden.permute(1, 2, 0))  # (batch, C·F, T)
        bn = self.bn3
        assert bn.running_mean is not None and bn.running_var is not None
        h = F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        h = h.view(batch, self.nb_channels, self.nb_output_bins, nb_frames)
        return h.mul_(self.output_scale[:, None]).add_(self.output_mean[:, None]).relu_()


def umx_cores(
    sources: Sequence[str],
    options: SpectralOptions,
    hidden_size: int = 512,
    nb_layers: int = 3,
    unidirectional: bool = False,
    bandwidth: float = 16000,
) -> dict[str, OpenUnmix]:
    """One fresh :class:`OpenUnmix` core per source, sized for ``options``.

    Raises:
        ValueError: no source, or a name given twice.
    """
    sources = list(sources)
    if not sources:
        raise ValueError("an Open-Unmix model needs at least one source name")
    if len(set(sources)) != len(sources):
        raise ValueError(f"source names must be unique, got {sources}")
    return {
        name: OpenUnmix(
            nb_bins=options.n_fft // 2 + 1,
            nb_channels=options.audio_channels,
            hidden_size=hidden_size,
            nb_layers=nb_layers,
            unidirectional=unidirectional,
            max_bin=bandwidth_to_max_bin(options.sample_rate, options.n_fft, bandwidth),
        )
        for name in sources
    }


@register("umx")
def umx(
    sources: Sequence[str] = MUSDB_SOURCES,
    hidden_size: int = 512,
    nb_layers: int = 3,
    unidirectional: bool = False,
    bandwidth: float = 16000,
    **options: Any,
) -> Separator:
    """Open-Unmix separator: one :class:`OpenUnmix` core per source inside a ``Separator``.

    The defaults give the umx/umxhq configuration (hidden 512, 8,893,348 parameters per
    target); ``hidden_size=1024`` gives umxl. Upstream separates with ``niter=1``; the default
    here is 0 (mixture phase), the cheaper setting used in training.

    Args:
        sources: target names, in output order.
        hidden_size: core width.
        nb_layers: LSTM layers.
        unidirectional: causal cores.
        bandwidth: input bandwidth in Hz (sets ``max_bin``).
        **options: the fields of :class:`~stemkit.models.spectral.SpectralOptions`
            (``sample_rate``, ``audio_channels``, ``n_fft``, ``n_hop``, ``niter``, ``softmask``,
            ``residual``, ``wiener_win_len``); ``nb_channels`` is read as ``audio_channels``.
    """
    spectral = SpectralOptions.from_kwargs(options)
    cores = umx_cores(sources, spectral, hidden_size, nb_layers, unidirectional, bandwidth)
    return Separator(cores, spectral)
