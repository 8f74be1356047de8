"""Residual sequence units: model a feature sequence and add the result to the input.

Band-split models run such a unit along time (one sequence per band) and along frequency (one
sequence of bands per frame). Two families (reference/spec-notes.md §4.3–4.4):

- :class:`ResidualSequence`: ``GroupNorm(1, N)`` → bidirectional LSTM or GRU with ``h·N``
  units per direction (or a kernel-3 convolution to ``2·h·N`` channels + ReLU) → linear
  ``2·h·N → N`` → add the input.
- :class:`DilatedConvSequence` (the BSCNN unit): an input convolution to ``h·N`` channels, a
  chain of ``n_dilated`` convolutions with dilations 1, 2, 4, …, a "neighbourhood" layer per
  dilated output that reads it together with its two neighbours in the chain, and an output
  convolution back to ``N`` channels; every convolution is preceded by a one-group GroupNorm
  and followed by ReLU; the result is added to the input.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SEQUENCE_KINDS", "DilatedConvSequence", "ResidualSequence", "sequence_unit"]

#: Values accepted by :func:`sequence_unit`.
SEQUENCE_KINDS = ("lstm", "gru", "conv", "dilated")


class ResidualSequence(nn.Module):
    """Normalise, run a bidirectional RNN (or a convolution), project back, add the input.

    Args:
        n_features: feature size ``N`` of the sequence.
        kind: ``"lstm"``, ``"gru"`` or ``"conv"``.
        hidden_factor: ``h``: the RNN has ``h·N`` units per direction; the convolution
            ``2·h·N`` output channels, so that the projection has the same size.
        kernel_size: kernel of the ``"conv"`` kind (odd, "same" padding).
        eps: GroupNorm epsilon.

    Shapes:
        forward: ``(batch, n_features, length)`` → ``(batch, n_features, length)``.
    """

    def __init__(
        self,
        n_features: int,
        kind: str = "lstm",
        hidden_factor: int = 2,
        kernel_size: int = 3,
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        hidden = hidden_factor * n_features
        self.kind = kind
        self.norm = nn.GroupNorm(1, n_features, eps=eps)
        self.model: nn.Module
        if kind == "lstm":
            self.model = nn.LSTM(n_features, hidden, batch_first=True, bidirectional=True)
        elif kind == "gru":
            self.model = nn.GRU(n_features, hidden, batch_first=True, bidirectional=True)
        elif kind == "conv":
            self.model = nn.Sequential(
                nn.Conv1d(n_features, 2 * hidden, kernel_size, padding="same"), nn.ReLU()
            )
        else:
            raise ValueError(f"unknown sequence model {kind!r}; choose lstm, gru or conv")
        self.proj = nn.Linear(2 * hidden, n_features)

    def forward(self, x: Tensor) -> Tensor:
        """Model ``x`` ``(batch, n_features, length)`` and add it back."""
        out = self.norm(x)
        if self.kind == "conv":
            out = self.model(out).transpose(1, 2)
        else:
            out, _ = self.model(out.transpose(1, 2))
        return x + self.proj(out).transpose(1, 2)


def _norm_conv(
    in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1, eps: float = 1e-5
) -> nn.Sequential:
    return nn.Sequential(
        nn.GroupNorm(1, in_channels, eps=eps),
        nn.Conv1d(in_channels, out_channels, kernel_size, padding="same", dilation=dilation),
        nn.ReLU(),
    )


class DilatedConvSequence(nn.Module):
    """The BSCNN residual unit: stacked dilated convolutions with neighbourhood merges.

    With ``n_dilated = D`` and ``H = h·N``: ``input`` (GroupNorm eps ``eps``, ``N → H``);
    ``dilated[i]`` (``H → H``, dilation ``2**i``) applied in a chain; ``merge[i]`` reads the
    concatenation of the chain outputs ``j`` with ``|j − i| ≤ 1`` (2 or 3 of them, 1 when
    ``D = 1``) and gives ``H`` channels; ``output`` reads all ``D`` merges (``D·H`` channels, or
    the input layer's ``H`` when ``D = 0``; GroupNorm eps ``eps``) and gives ``N``. The inner
    GroupNorms keep PyTorch's default epsilon, as in the replication.

    Args:
        n_features: feature size ``N``.
        hidden_factor: ``h``.
        n_dilated: number of dilated convolutions ``D`` (0 allowed).
        kernel_size: kernel of every convolution (odd, "same" padding).
        eps: epsilon of the input and output GroupNorms.

    Shapes:
        forward: ``(batch, n_features, length)`` → ``(batch, n_features, length)``.
    """

    def __init__(
        self,
        n_features: int,
        hidden_factor: int = 1,
        n_dilated: int = 3,
        kernel_size: int = 3,
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        hidden = hidden_factor * n_features
        self.n_dilated = n_dilated
        self.input = _norm_conv(n_features, hidden, kernel_size, eps=eps)
        self.dilated = nn.ModuleList(
            _norm_conv(hidden, hidden, kernel_size, dilation=2**index) for index in range(n_dilated)
        )
        self.merge = nn.ModuleList(
            _norm_conv(len(self._neighbours(index)) * hidden, hidden, kernel_size)
            for index in range(n_dilated)
        )
        self.output = _norm_conv(hidden * max(1, n_dilated), n_features, kernel_size, eps=eps)

    def _neighbours(self, index: int) -> range:
        return range(max(0, index - 1), min(self.n_dilated, index + 2))

    def forward(self, x: Tensor) -> Tensor:
        """Model ``x`` ``(batch, n_features, length)`` and add it back."""
        out = self.input(x)
        if self.n_dilated:
            chain = []
            for layer in self.dilated:
                out = layer(out)
                chain.append(out)
            merged = [
                merge(torch.cat([chain[j] for j in self._neighbours(index)], dim=1))
                for index, merge in enumerate(self.merge)
            ]
            out = torch.cat(merged, dim=1)
        return x + self.output(out)


def sequence_unit(
    kind: str,
    n_features: int,
    hidden_factor: int,
    kernel_size: int = 3,
    n_dilated: int = 3,
    eps: float = 1e-7,
) -> nn.Module:
    """A residual sequence unit of the given ``kind`` (one of :data:`SEQUENCE_KINDS`)."""
    if kind == "dilated":
        return DilatedConvSequence(n_features, hidden_factor, n_dilated, kernel_size, eps)
    return ResidualSequence(n_features, kind, hidden_factor, kernel_size, eps)
