"""Transform-average-concatenate (TAC): exchange information between audio channels.

Luo et al., "End-to-end microphone permutation and number invariant multi-channel speech
separation" (ICASSP 2020), as used for stereo in the band-split RNN replication
(reference/spec-notes.md §4.4). For every feature vector position (band and frame), each
channel's vector goes through ``Linear(N → hN)`` + activation, the channel mean of those through
``Linear(hN → hN)`` + activation, and each channel's transform concatenated with that mean
through ``Linear(2hN → N)`` + activation; the result is added to the input. It works for any
number of channels, and the output does not depend on the order of the channels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TAC", "TAC_ACTIVATIONS"]

TAC_ACTIVATIONS = ("tanh", "prelu")


class TAC(nn.Module):
    """Transform-average-concatenate over the channel axis.

    The three layers share one activation module. With ``"prelu"`` that means a single learned
    slope per TAC, as in the replication's code (where one PReLU instance serves all three
    layers): its published parameter count includes one slope per block, not three.

    Args:
        n_features: feature size ``N``.
        hidden_factor: ``h``, width multiplier of the hidden layers (3 in the replication).
        activation: ``"tanh"`` (SIMO-BSRNN) or ``"prelu"`` (the TAC paper; oBSRNN).

    Shapes:
        forward: ``(..., nb_channels, n_features)`` → same shape.
    """

    def __init__(self, n_features: int, hidden_factor: int = 3, activation: str = "tanh") -> None:
        super().__init__()
        if activation not in TAC_ACTIVATIONS:
            raise ValueError(
                f"unknown TAC activation {activation!r}; choose one of {TAC_ACTIVATIONS}"
            )
        hidden = hidden_factor * n_features
        self.transform = nn.Linear(n_features, hidden)
        self.average = nn.Linear(hidden, hidden)
        self.concat = nn.Linear(2 * hidden, n_features)
        self.activation: nn.Module = nn.PReLU() if activation == "prelu" else nn.Tanh()

    def forward(self, x: Tensor) -> Tensor:
        """Mix the channels of ``x`` ``(..., nb_channels, n_features)``."""
        per_channel = self.activation(self.transform(x))
        mean = self.activation(self.average(per_channel.mean(dim=-2, keepdim=True)))
        joint = torch.cat([per_channel, mean.expand_as(per_channel)], dim=-1)
        return x + self.activation(self.concat(joint))
