"""``on_progress`` of the chunked separation, which drives the web service's progress bars."""

from __future__ import annotations

import torch

from stemkit import models
from stemkit.api import Separator
from stemkit.inference import separate


def test_separate_reports_every_chunk_up_to_the_total() -> None:
    model = models.build("identity")
    mixture = torch.randn(2, 44100 * 3, generator=torch.Generator().manual_seed(0))
    calls: list[tuple[int, int]] = []
    out = separate(
        model, mixture, segment=1.0, shifts=2, on_progress=lambda d, t: calls.append((d, t))
    )
    totals = {total for _, total in calls}
    assert len(totals) == 1
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == totals.pop()
    assert torch.equal(out[0], mixture)  # the callback changes nothing in the result


def test_separator_passes_it_on() -> None:
    calls: list[tuple[int, int]] = []
    separator = Separator(
        models.build("identity"), segment=0.5, on_progress=lambda d, t: calls.append((d, t))
    )
    separator.separate(torch.zeros(2, 44100), 44100)
    assert calls and calls[-1][0] == calls[-1][1]
