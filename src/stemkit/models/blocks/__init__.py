"""Layers shared between model families: band split, sequence units, TAC, attention, masks."""

from stemkit.models.blocks.attention import BandLayerNorm, FullBandAttention
from stemkit.models.blocks.bandsplit import BandSplit, split_bands
from stemkit.models.blocks.mask import MaskEstimator
from stemkit.models.blocks.sequence import (
    SEQUENCE_KINDS,
    DilatedConvSequence,
    ResidualSequence,
    sequence_unit,
)
from stemkit.models.blocks.tac import TAC, TAC_ACTIVATIONS

__all__ = [
    "SEQUENCE_KINDS",
    "TAC",
    "TAC_ACTIVATIONS",
    "BandLayerNorm",
    "BandSplit",
    "DilatedConvSequence",
    "FullBandAttention",
    "MaskEstimator",
    "ResidualSequence",
    "sequence_unit",
    "split_bands",
]
