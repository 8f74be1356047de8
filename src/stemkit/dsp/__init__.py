"""Signal processing: STFT/iSTFT on complex tensors and multichannel Wiener/EM filtering."""

from stemkit.dsp.stft import ISTFT, STFT, bandwidth_to_max_bin, magnitude
from stemkit.dsp.wiener import expectation_maximization, initial_estimates, wiener

__all__ = [
    "ISTFT",
    "STFT",
    "bandwidth_to_max_bin",
    "expectation_maximization",
    "initial_estimates",
    "magnitude",
    "wiener",
]
