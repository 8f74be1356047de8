"""Training losses, named by what they compare. No model computes its own loss.

Waveforms are ``(batch, nb_sources, nb_channels, time)``; spectrograms add ``nb_bins,
nb_frames`` in place of ``time``. Every loss returns a scalar where lower is better, except
:func:`weighted_sdr`, which returns the unreduced per-row scores.
"""

from stemkit.losses.combination import (
    combination_magnitude_mse,
    combination_weighted_sdr_loss,
    multi_domain_loss,
    source_combinations,
)
from stemkit.losses.masking import stacked_mask_l1
from stemkit.losses.sdr import sisdr_loss, usdr_loss, weighted_sdr, weighted_sdr_loss
from stemkit.losses.spectral import complex_l1_loss, magnitude_mse_loss, tf_l1_loss
from stemkit.losses.waveform import l1_loss, mse_loss

__all__ = [
    "combination_magnitude_mse",
    "combination_weighted_sdr_loss",
    "complex_l1_loss",
    "l1_loss",
    "magnitude_mse_loss",
    "mse_loss",
    "multi_domain_loss",
    "sisdr_loss",
    "source_combinations",
    "stacked_mask_l1",
    "tf_l1_loss",
    "usdr_loss",
    "weighted_sdr",
    "weighted_sdr_loss",
]
