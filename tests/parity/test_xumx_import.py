"""``stemkit models import-xumx``: asteroid's X-UMX file, as its recipe publishes it, into a
stemkit checkpoint that separates as asteroid does.

asteroid's network is built small with random weights (the setup of ``test_xumx_asteroid``),
saved in the recipe's layout (``model.serialize()``: ``model_name``, ``state_dict``,
``model_args``, ``infos``; built here by hand because ``serialize`` imports pytorch_lightning),
imported through the CLI, and the checkpoint's model, with ``--niter 0``, compared with
asteroid's time signals: the mixture phase on each masked magnitude, which is what asteroid
returns. Bound: within 1e-4 of the reference's peak, as in ``test_xumx_asteroid`` (float32
STFT, LSTM and inverse STFT in another arrangement).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_xumx_asteroid import HIDDEN, N_FFT, N_HOP, RATE, SOURCES, _asteroid, _mixture, _randomize

from stemkit.artifacts.checkpoint import load_checkpoint, model_from_checkpoint
from stemkit.cli import main as cli
from stemkit.dsp.stft import bandwidth_to_max_bin

x_umx = pytest.importorskip("asteroid.models.x_umx")

pytestmark = [
    pytest.mark.filterwarnings("ignore:stft with return_complex=False:UserWarning"),
    pytest.mark.filterwarnings("ignore:dropout option adds dropout:UserWarning"),
]


@pytest.fixture(autouse=True)
def only_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMANDS", ("models",))


def _published(tmp_path: Path, **changes: Any) -> tuple[torch.nn.Module, Path]:
    """asteroid's XUMX (random weights) and its file in the recipe's layout."""
    torch.manual_seed(0)
    theirs = x_umx.BrokenXUMX(
        list(SOURCES),
        window_length=N_FFT,
        in_chan=N_FFT,
        n_hop=N_HOP,
        hidden_size=HIDDEN,
        nb_channels=2,
        sample_rate=RATE,
        nb_layers=2,
        max_bin=bandwidth_to_max_bin(RATE, N_FFT, 5000.0),
        return_time_signals=True,
    )
    _randomize(theirs, seed=1)
    theirs.eval()
    payload = {
        "model_name": "XUMX",
        "state_dict": theirs.state_dict(),
        # the recipe computes max_bin with numpy, so the file holds a numpy.int64
        "model_args": {**theirs.get_model_args(), "max_bin": np.int64(theirs.max_bin), **changes},
        "infos": {"software_versions": {"torch_version": "1.8.1", "asteroid_version": "0.5.0"}},
    }
    path = tmp_path / "pretrained_xumx.pth"
    torch.save(payload, path)
    return theirs, path


def test_import_xumx_separates_as_asteroid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    theirs, path = _published(tmp_path)
    out = tmp_path / "xumx.pt"
    argv = ["models", "import-xumx", str(path), "-o", str(out), "--niter", "0"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert "imported xumx (bass, drums, vocals, other)" in captured.err
    payload = load_checkpoint(out)
    assert payload["model_kwargs"]["niter"] == 0 and payload["sample_rate"] == RATE
    model = model_from_checkpoint(payload, out).eval()
    mixture = _mixture(2, 9999, seed=5)
    _, ref = _asteroid(theirs, mixture)
    common = ref.shape[-1]
    with torch.no_grad():
        ours = model(mixture)[..., :common]
    assert ours.shape == ref.shape
    for item in range(2):
        err = (ours[item] - ref[item]).abs().max() / ref[item].abs().max()
        assert float(err) < 1e-4

    # the default is the recipe's one Wiener iteration
    default = tmp_path / "xumx-niter1.pt"
    assert cli.main(["models", "import-xumx", str(path), "-o", str(default)]) == 0
    assert load_checkpoint(default)["model_kwargs"]["niter"] == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"window_length": N_FFT // 2}, "window_length 256 differs from in_chan 512"),
        ({"spec_power": 2}, "spec_power=2"),
        ({"hidden_size": HIDDEN * 2}, "does not load into stemkit's xumx"),
    ],
)
def test_settings_stemkit_cannot_hold_are_one_line(
    tmp_path: Path, changes: dict[str, Any], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = _published(tmp_path, **changes)
    out = tmp_path / "xumx.pt"
    assert cli.main(["models", "import-xumx", str(path), "-o", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"stemkit: error: {path}: ") and message in line
    assert not out.exists()


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, ("touch ran-by-pickle",)


def test_a_malicious_file_is_refused_and_nothing_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "pretrained_xumx.pth"
    torch.save({"state_dict": {}, "model_args": {}, "infos": _Payload()}, path)
    assert cli.main(["models", "import-xumx", str(path), "-o", str(tmp_path / "x.pt")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert re.search(r"refused to resolve \w+\.system", line)
    assert not (tmp_path / "ran-by-pickle").exists() and not (tmp_path / "x.pt").exists()
