"""Chunked separation near the song's end: the model hears the song, never appended silence.

Zero-padding the last chunk changed a bidirectional model's output over the last second (the
backward LSTM and the Wiener statistics saw silence the song does not have): published
Open-Unmix weights differed from whole-song separation by up to 1.8 % there. The last chunk now
reads the song's final segment, so the tail of a chunked separation is what the model gives on
that window.
"""

from __future__ import annotations

import torch

from stemkit.inference import separate
from stemkit.models import build

RATE = 8000


def test_bidirectional_model_tail_is_its_output_on_the_last_window() -> None:
    torch.manual_seed(0)
    model = build(
        "umx",
        sources=("vocals", "drums"),
        hidden_size=8,
        nb_layers=1,
        sample_rate=RATE,
        n_fft=256,
        n_hop=64,
        bandwidth=3000,
        niter=1,
        residual=True,
    ).eval()
    length, segment = 3 * RATE + 777, 1.0
    mixture = torch.randn(2, length, generator=torch.Generator().manual_seed(3))
    stems = separate(model, mixture, segment=segment, overlap=0.25)
    window = RATE  # one segment
    with torch.no_grad():
        last = model(mixture[None, :, -window:])[0]
    # the last chunk's own part (after the cross-fade with its neighbour) is its output there
    tail = int(0.25 * window)
    torch.testing.assert_close(stems[..., -tail:], last[..., -tail:], rtol=0, atol=1e-6)
    # and the zero-padded window, which the old chunking fed, gives audibly different stems
    hop = window - int(0.25 * window)
    start = ((length - window + hop - 1) // hop) * hop
    padded = torch.nn.functional.pad(mixture[:, start:], (0, window - (length - start)))
    with torch.no_grad():
        old = model(padded[None])[0][..., : length - start]
    assert (old[..., -tail:] - last[..., -tail:]).abs().max() > 1e-3 * last.abs().max()
