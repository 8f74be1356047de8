"""Training objectives: which loss each model family trains with, computed on one batch.

The loss functions themselves live in :mod:`stemkit.losses`; this module decides what each
named objective compares (magnitudes, waveforms, complex spectrograms) for a given model.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from stemkit.dsp.stft import magnitude
from stemkit.errors import StemkitError
from stemkit.losses import (
    l1_loss,
    mse_loss,
    multi_domain_loss,
    sisdr_loss,
    tf_l1_loss,
    usdr_loss,
)
from stemkit.models.base import SeparationModel
from stemkit.models.bsrnn import BSRNN
from stemkit.models.hourglass import HourglassSeparator, stacked_mask_loss
from stemkit.separator import Separator

__all__ = ["LOSSES", "compute_loss"]

#: Losses the trainer knows, and what each compares.
LOSSES = {
    "spectral_mse": "magnitude MSE (Open-Unmix recipe; spectrogram models)",
    "multi_domain": "X-UMX: magnitude MSE + 10 × weighted SDR, over all 2^N-2 source subsets",
    "tf_l1": "BSRNN t+tf: L1 on waveform + L1 on real and imaginary STFT parts",
    "stacked_l1": "SH-Net: sum over stacks of mean |Y - X * M_stack| on max-normalised magnitudes",
    "l1": "L1 on waveforms",
    "mse": "MSE on waveforms",
    "usdr": "negative uSDR (MDX definition) on waveforms",
    "sisdr": "negative SI-SDR on waveforms",
}


def compute_loss(model: SeparationModel, mixture: Tensor, stems: Tensor, loss: str) -> Tensor:
    """The training loss of ``model`` on one batch.

    Args:
        model: the model being trained.
        mixture: ``(batch, channels, time)``.
        stems: ``(batch, sources, channels, time)``, the targets in ``model.sources`` order.
        loss: a key of :data:`LOSSES`.
    """
    if loss in ("spectral_mse", "multi_domain"):
        if not isinstance(model, Separator):
            raise StemkitError(f"loss {loss!r} needs a spectrogram model, not {model.model_name}")
        mix_stft = model.mixture_spectrogram(mixture)
        estimates = model.forward_magnitudes(magnitude(mix_stft, mono=model.nb_channels == 1))
        targets = model.magnitudes(stems)
        if loss == "spectral_mse":
            return mse_loss(estimates, targets)
        # Time-domain estimates with the mixture phase: the Wiener filter is not trained through.
        phase = mix_stft / mix_stft.abs().clamp_min(1e-8)
        waveforms = model.istft(estimates * phase.unsqueeze(1), length=mixture.shape[-1])
        return multi_domain_loss(estimates, targets, waveforms, stems, mixture)
    if loss == "tf_l1":
        if not isinstance(model, BSRNN):
            raise StemkitError(f"loss 'tf_l1' needs a band-split model, not {model.model_name}")
        waveforms, spectrograms = model.forward_with_spec(mixture)
        return tf_l1_loss(waveforms, stems, spectrograms, model.stft(stems))
    if loss == "stacked_l1":
        if not isinstance(model, HourglassSeparator):
            raise StemkitError(
                f"loss 'stacked_l1' needs a stacked hourglass model, not {model.model_name}"
            )
        return stacked_mask_loss(model, mixture, stems)
    waveform_losses: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
        "l1": l1_loss,
        "mse": mse_loss,
        "usdr": usdr_loss,
        "sisdr": sisdr_loss,
    }
    if loss in waveform_losses:
        return waveform_losses[loss](model(mixture), stems)
    raise StemkitError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
