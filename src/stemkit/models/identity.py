"""The identity model: every stem is the mixture. A test fixture for the inference path."""

from __future__ import annotations

from torch import Tensor

from stemkit.models.base import SeparationModel
from stemkit.models.registry import register


@register("identity")
class Identity(SeparationModel):
    """Returns the mixture once per source, unchanged.

    Useful to check that chunking, batching and file writing lose nothing: the output must
    equal the input bit for bit.

    Args:
        sources: stem names; the default gives one stem.
        sample_rate: nominal rate in Hz.
        audio_channels: nominal channel count.
    """

    def __init__(
        self,
        sources: tuple[str, ...] | list[str] = ("mixture",),
        sample_rate: int = 44100,
        audio_channels: int = 2,
    ) -> None:
        super().__init__(sources, sample_rate, audio_channels, causal=True)

    def forward(self, mixture: Tensor) -> Tensor:
        """``(batch, channels, time)`` → ``(batch, sources, channels, time)``."""
        return mixture.unsqueeze(1).expand(-1, len(self.sources), -1, -1).clone()
