"""Overlap-add windows at inference: every window gives the identity model back bit for bit."""

from __future__ import annotations

import pytest
import torch

from stemkit.inference import WINDOWS, cross_fade, separate
from stemkit.models import build


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize(("segment", "overlap"), [(0.05, 0.25), (0.03, 0.5), (0.07, 0.1)])
def test_identity_model_comes_back_exactly_for_every_window(
    window: str, segment: float, overlap: float
) -> None:
    model = build("identity", sources=["a", "b"], sample_rate=1000, audio_channels=2)
    mixture = torch.randn(2, 517, generator=torch.Generator().manual_seed(0))
    out = separate(model, mixture, segment=segment, overlap=overlap, window=window, batch_size=3)
    assert torch.equal(out, mixture.expand(2, 2, 517))


def test_the_windows_weigh_the_overlap_as_documented() -> None:
    linear = cross_fade("linear", 9, 40)
    torch.testing.assert_close(linear, torch.arange(1, 10, dtype=torch.float32) / 10)
    assert torch.equal(cross_fade("rectangular", 9, 40), torch.full((9,), 0.5))
    triangular = cross_fade("triangular", 9, 40)
    # With two chunks per overlap the normalised triangles are a ramp too: w(t) = t + 1 against
    # S − hop − t = overlap − t, i.e. the linear ramp exactly (even S), up to rounding.
    torch.testing.assert_close(triangular, linear, rtol=0, atol=1e-6)
    assert ((triangular > 0) & (triangular < 1)).all()
    with pytest.raises(ValueError, match="window must be one of"):
        cross_fade("hann", 4, 16)


def test_rectangular_window_averages_chunks_that_disagree() -> None:
    class Counter(torch.nn.Module):
        """Outputs each chunk's own length-independent tag: 1 for the first chunk, 3 after."""

        sources = ("a",)
        audio_channels = 1
        sample_rate = 100

        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.empty(x.shape[0], 1, *x.shape[1:])
            for i in range(x.shape[0]):
                out[i] = 1.0 + 2.0 * (self.calls > 0)
                self.calls += 1
            return out

    out = separate(Counter(), torch.zeros(1, 35), segment=0.2, overlap=0.25, window="rectangular")
    # chunks of 20 with hop 15: the overlap [15, 20) holds the mean of 1 and 3
    assert (
        out[0, 0, :15].eq(1).all() and out[0, 0, 15:20].eq(2).all() and out[0, 0, 20:].eq(3).all()
    )
