"""The options of the spectrogram-masking wrapper, written once."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SpectralOptions"]

#: Names older checkpoints and presets stored, and the field each one now is.
_RENAMED = {"nb_channels": "audio_channels"}


@dataclass(frozen=True)
class SpectralOptions:
    """STFT, channels and Wiener filtering of a :class:`~stemkit.models.spectral.Separator`.

    The defaults are Open-Unmix's MUSDB settings, with the mixture phase (``niter=0``) instead
    of upstream's one EM iteration: the cheaper setting used in training.

    Args:
        sample_rate: rate in Hz.
        audio_channels: 1 or 2. With 1, magnitudes are averaged over the input channels
            before the cores.
        n_fft: FFT size.
        n_hop: hop size.
        niter: Wiener EM iterations at separation time (0: magnitude estimate × mixture
            phase).
        softmask: initial estimates by ratio mask of the core outputs.
        residual: append ``mixture - Σ targets`` as a last stem named ``"residual"``.
        wiener_win_len: frames per Wiener block; ``None`` filters the whole signal at once.

    Raises:
        ValueError: an option out of range.
    """

    sample_rate: int = 44100
    audio_channels: int = 2
    n_fft: int = 4096
    n_hop: int = 1024
    niter: int = 0
    softmask: bool = False
    residual: bool = False
    wiener_win_len: int | None = 300

    def __post_init__(self) -> None:
        if self.audio_channels not in (1, 2):
            raise ValueError(f"audio_channels must be 1 or 2, got {self.audio_channels}")
        if self.niter < 0:
            raise ValueError(f"niter must be >= 0, got {self.niter}")
        if self.wiener_win_len is not None and self.wiener_win_len < 1:
            raise ValueError(f"wiener_win_len must be positive or None, got {self.wiener_win_len}")

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> SpectralOptions:
        """Options from a model factory's keyword arguments.

        Accepts the names stored by older checkpoints (``nb_channels`` for
        ``audio_channels``), so that their ``model_kwargs`` still rebuild the model.

        Raises:
            TypeError: an argument that is no option, or one given under both names.
        """
        fields = {field.name for field in dataclasses.fields(cls)}
        options: dict[str, Any] = {}
        for key, value in kwargs.items():
            name = _RENAMED.get(key, key)
            if name not in fields:
                raise TypeError(
                    f"unexpected keyword argument {key!r}; the spectral options are "
                    f"{', '.join(sorted(fields))}"
                )
            if name in options:
                raise TypeError(f"{name} given twice (once as {key!r})")
            options[name] = value
        return cls(**options)
