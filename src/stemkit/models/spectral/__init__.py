"""Spectrogram masking: cores that map magnitudes to magnitudes, inside one waveform wrapper.

- :mod:`~stemkit.models.spectral.options`: :class:`SpectralOptions`, the wrapper's options;
- :mod:`~stemkit.models.spectral.core`: :class:`MaskingCore`, what a core declares;
- :mod:`~stemkit.models.spectral.wrapper`: :class:`Separator`, STFT → cores → Wiener → iSTFT;
- :mod:`~stemkit.models.spectral.frames`: its whole-song path in frame blocks;
- :mod:`~stemkit.models.spectral.stream`: its causal frame-by-frame path for streaming.
"""

from stemkit.models.spectral.core import MaskingCore
from stemkit.models.spectral.options import SpectralOptions
from stemkit.models.spectral.wrapper import RESIDUAL, Separator

__all__ = ["RESIDUAL", "MaskingCore", "Separator", "SpectralOptions"]
