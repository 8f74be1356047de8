"""``stemkit models`` end to end: listing, and importing Open-Unmix weights for ``separate``."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
import torch

from stemkit.artifacts.checkpoint import load_checkpoint
from stemkit.cli import main as cli

RATE = 44100
N_FFT, N_HOP = 512, 128


@pytest.fixture(autouse=True)
def only_models_and_separate(monkeypatch: pytest.MonkeyPatch) -> None:
    # The parser then does not depend on the other subcommands.
    monkeypatch.setattr(cli, "COMMANDS", ("separate", "models"))


@pytest.fixture
def official(upstream: ModuleType, tmp_path: Path) -> Path:
    """A folder as upstream's training leaves it: vocals.pth, drums.pth, separator.json."""
    folder = tmp_path / "a"
    folder.mkdir()
    for seed, target in enumerate(("vocals", "drums")):
        torch.manual_seed(seed)
        core = upstream.OpenUnmix(nb_bins=N_FFT // 2 + 1, nb_channels=2, hidden_size=16)
        with torch.no_grad():
            core.output_mean.uniform_(0.2, 1.0)
        torch.save(core.state_dict(), folder / f"{target}.pth")
    (folder / "separator.json").write_text(
        json.dumps({"nfft": N_FFT, "nhop": N_HOP, "sample_rate": RATE, "nb_channels": 2})
    )
    return folder


def test_list_is_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models"]) == 0
    listed = capsys.readouterr().out
    assert "registered models:" in listed and "  umx\n" in listed
    assert cli.main(["models", "list"]) == 0
    assert capsys.readouterr().out == listed


def test_import_then_separate(
    official: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.pt"
    argv = ["models", "import-openunmix", str(official / "vocals.pth"), str(official / "drums.pth")]
    assert cli.main([*argv, "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    payload = load_checkpoint(out)
    assert payload["sources"] == ["vocals", "drums"]
    assert payload["model_kwargs"]["n_hop"] == N_HOP

    song = tmp_path / "song.wav"
    mixture = np.random.default_rng(0).standard_normal((RATE, 2)).astype(np.float32) * 0.1
    sf.write(song, mixture, RATE, subtype="FLOAT")
    separated = tmp_path / "separated"
    assert cli.main(["separate", str(song), "--model", str(out), "-o", str(separated), "-q"]) == 0
    for name in ("vocals", "drums"):
        stem, rate = sf.read(separated / "song" / f"{name}.wav", dtype="float32")
        assert rate == RATE and stem.shape == mixture.shape
        assert np.abs(stem).max() > 1e-3

    # the output is not overwritten silently
    assert cli.main([*argv, "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    renamed = [*argv, "-o", str(out), "--force", "--targets", "lead", "kit", "--niter", "0"]
    assert cli.main(renamed) == 0
    assert load_checkpoint(out)["sources"] == ["lead", "kit"]


def test_bad_file_exits_2_and_names_it(
    official: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"\x00garbage")
    argv = ["models", "import-openunmix", str(official / "vocals.pth"), str(bad)]
    assert cli.main([*argv, "-o", str(tmp_path / "y.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stemkit: error:") and str(bad) in err
    assert not (tmp_path / "y.pt").exists()


def test_assumed_settings_are_reported(
    official: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (official / "separator.json").unlink()
    argv = ["models", "import-openunmix", str(official / "vocals.pth"), str(official / "drums.pth")]
    assert cli.main([*argv, "-o", str(tmp_path / "z.pt")]) == 0
    err = capsys.readouterr().err
    assert "assumed sample_rate=44100 (override with --sample-rate)" in err
    assert "assumed n_hop=128 (override with --n-hop)" in err
