"""Every registered model with parameters learns on generated stems with its recipe's loss.

A tiny configuration of each model takes a few Adam steps on one fixed batch of generated
stems (the toy stems of ``conftest``); its training loss must fall clearly. The table of tiny
configurations must cover every trainable model in the registry, so a new model cannot be
added without joining this test.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from conftest import toy_stems
from stemkit import models
from stemkit.train.objectives import compute_loss

#: name -> (constructor kwargs, loss, sources, rate, channels, steps, lr)
TINY: dict[str, tuple[dict[str, Any], str, tuple[str, ...], int, int, int, float]] = {
    "umx": (dict(hidden_size=16, n_fft=256, n_hop=64), "spectral_mse",
            ("vocals", "drums"), 16000, 2, 15, 0.01),
    "xumx": (dict(hidden_size=16, n_fft=256, n_hop=64), "multi_domain",
             ("vocals", "drums"), 16000, 2, 15, 0.01),
    "bsrnn": (dict(n_features=8, n_layers=1, n_fft=256, n_hop=64, layout=[[1000, 6]]), "tf_l1",
              ("vocals", "drums"), 16000, 2, 15, 0.01),
    "shnet": (dict(channels=8, stem_channels=[8, 8, 8, 8], nb_stacks=2, depth=2, n_fft=256,
                   n_hop=64, patch_frames=16), "stacked_l1",
              ("accompaniment", "vocals"), 8000, 1, 20, 0.01),
    "demucs": (dict(channels=8, depth=3, lstm_layers=1, sample_rate=16000), "l1",
               ("vocals", "drums"), 16000, 2, 20, 0.01),
    "convtasnet": (dict(N=16, L=16, B=16, H=32, P=3, X=2, R=1, sample_rate=16000), "l1",
                   ("vocals", "drums"), 16000, 2, 15, 0.003),
}  # fmt: skip


def _trainable(name: str) -> bool:
    # The oracles and the identity hold no parameters: nothing to train.
    with torch.device("meta"):
        model = models.build(name)
    return any(True for _ in model.parameters())


def test_every_trainable_model_has_a_tiny_configuration() -> None:
    assert {name for name in models.available() if _trainable(name)} == set(TINY)


def _batch(sources: tuple[str, ...], rate: int, channels: int) -> torch.Tensor:
    """``(2, nb_sources, channels, time)``: 1 s excerpts of two generated songs."""
    items = []
    for seed in (0, 1):
        stems = toy_stems(
            1.0, seed=seed, rate=rate, channels=channels
        )  # vocals, drums, bass, other
        if sources == ("accompaniment", "vocals"):
            stems = np.stack([stems[1:].sum(axis=0), stems[0]])
        else:
            stems = stems[: len(sources)]
        items.append(torch.from_numpy(stems))
    return torch.stack(items)


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_model_loss_goes_down(name: str) -> None:
    kwargs, loss, sources, rate, channels, steps, lr = TINY[name]
    torch.manual_seed(0)
    if "sample_rate" not in kwargs and name != "shnet":
        kwargs = {**kwargs, "sample_rate": rate}
    model = models.build(name, sources=list(sources), **kwargs)
    assert (model.sample_rate, model.audio_channels) == (rate, channels)
    stems = _batch(sources, rate, channels)
    mixture = stems.sum(dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        value = compute_loss(model, mixture, stems, loss)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(value.item())
    assert all(np.isfinite(losses))
    # the mean of the last three steps: robust to one noisy step
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses
