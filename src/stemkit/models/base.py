"""What every separation model declares, whatever its family."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class SeparationModel(nn.Module):
    """Base class of waveform-to-stems models.

    A subclass maps a mixture ``(batch, audio_channels, time)`` to stems
    ``(batch, len(sources), audio_channels, time)`` at ``sample_rate``. Spectrogram cores are
    wrapped by :class:`stemkit.separator.Separator`, which is itself a ``SeparationModel``.

    Attributes:
        sources: names of the stems, in output order.
        sample_rate: the rate in Hz the model works at.
        audio_channels: 1 or 2.
        causal: True when an output sample never depends on later input samples.
    """

    sources: tuple[str, ...]
    sample_rate: int
    audio_channels: int
    causal: bool = False
    model_name: str
    init_kwargs: dict[str, Any]

    def __init__(
        self,
        sources: tuple[str, ...] | list[str],
        sample_rate: int,
        audio_channels: int,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.sources = tuple(sources)
        self.sample_rate = int(sample_rate)
        self.audio_channels = int(audio_channels)
        self.causal = causal

    def forward(self, mixture: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Separate ``(batch, channels, time)`` into ``(batch, sources, channels, time)``."""
        raise NotImplementedError
