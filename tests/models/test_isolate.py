"""``SeparationModel.isolate``: a two-stem split runs only the networks its stem needs.

The isolated model must give the full model's stem (same arithmetic on the same network, so
equal up to the float rounding of a different batch of sources: 1e-6 relative to the stem's
peak) and must not call the other sources' networks; models whose sources are filtered or
computed jointly must refuse (None), so that ``--two-stems`` keeps their full computation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from stemkit import models
from stemkit.api import Separator
from stemkit.models.base import SeparationModel

RATE = 44100


def _mixture(seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(1, 2, int(seconds * RATE), generator=generator)


def _calls(module: nn.Module) -> list[int]:
    """A counter of the forward calls of ``module`` and its layers (its one element): the
    frame-block path of Open-Unmix calls a core's layers, not the core."""
    count = [0]
    for layer in module.modules():
        layer.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    return count


@pytest.mark.parametrize(
    "name, kwargs, networks",
    [
        ("umx", dict(hidden_size=16, niter=0), "target_models"),
        ("bsrnn", dict(sources=["vocals", "drums", "bass"], n_features=8, n_layers=1), "networks"),
    ],
)
def test_isolated_stem_is_the_full_models_and_runs_one_network(
    name: str, kwargs: dict[str, object], networks: str
) -> None:
    torch.manual_seed(0)
    model = models.build(name, **kwargs).eval()
    mixture = _mixture()
    with torch.no_grad():
        full = model(mixture)
        isolated = model.isolate("drums")
        assert isolated is not None
        assert isolated.sources[0] == "drums"
        counters = {key: _calls(net) for key, net in getattr(model, networks).items()}
        stem = isolated(mixture)[:, 0]
    expected = full[:, model.sources.index("drums")]
    bound = 1e-6 * float(expected.abs().max())
    assert float((stem - expected).abs().max()) <= bound
    assert {key: count[0] > 0 for key, count in counters.items()} == {
        key: key == "drums" for key in counters
    }
    # the full model is untouched: still every source, same output
    with torch.no_grad():
        torch.testing.assert_close(model(mixture), full, rtol=0, atol=0)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("umx", dict(hidden_size=16, niter=1)),  # EM filters every source against the others
        ("umx", dict(hidden_size=16, niter=0, softmask=True)),  # a ratio mask shares them too
        ("xumx", dict(hidden_size=16, niter=0)),  # bridged branches
        ("bsrnn", dict(sources=["vocals", "drums"], n_features=8, n_layers=1, simo=True)),
        ("demucs", dict(channels=4, depth=2, lstm_layers=1)),
    ],
)
def test_jointly_computed_sources_are_not_isolated(name: str, kwargs: dict[str, object]) -> None:
    model = models.build(name, **kwargs)
    assert model.isolate(model.sources[0]) is None


def test_unknown_target_is_not_isolated() -> None:
    model = models.build("umx", hidden_size=16, niter=0)
    assert model.isolate("kazoo") is None


def test_two_stems_file_uses_the_isolated_model(tmp_path: Path) -> None:
    """Through the API: the karaoke pair adds up to the mixture, the stem is the full
    model's, and only the stem's network ran."""
    torch.manual_seed(0)
    model: SeparationModel = models.build("umx", hidden_size=16, niter=0).eval()
    song = tmp_path / "song.wav"
    mixture = _mixture(2.0, seed=1)[0]
    sf.write(song, mixture.T.numpy(), RATE, subtype="FLOAT")
    separator = Separator(model, name="tiny-umx", device="cpu")
    counters = {key: _calls(net) for key, net in model.target_models.items()}
    separator.separate_file(song, tmp_path / "out", format="wav", two_stems="bass")
    assert {key: count[0] > 0 for key, count in counters.items()} == {
        key: key == "bass" for key in counters
    }
    folder = tmp_path / "out" / "song"
    bass, _ = sf.read(folder / "bass.wav", dtype="float32")
    rest, _ = sf.read(folder / "no_bass.wav", dtype="float32")
    full = separator.separate(mixture.numpy(), RATE)["bass"].T
    # 16-bit files: each stem is within half a quantisation step (plus clipping, none here)
    step = 2.0**-15
    assert np.abs(bass - full).max() <= step
    assert np.abs(bass + rest - mixture.T.numpy()).max() <= 2 * step
