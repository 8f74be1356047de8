"""``stemkit evaluate`` on a MIR-1K folder scores with the protocol (GNSDR, GSIR, GSAR)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stemkit.artifacts.checkpoint import save_checkpoint
from stemkit.cli.main import main
from stemkit.data.mir1k_writer import write_mir1k_from_musdb
from stemkit.models import build


@pytest.fixture
def mir1k_root(hq_tree: Path, tmp_path: Path) -> Path:
    root = tmp_path / "mir1k"
    write_mir1k_from_musdb(hq_tree, root, clip_seconds=1.0)
    return root


def test_mixture_as_estimate_scores_zero_gnsdr(
    mir1k_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # NSDR = SDR(estimate) - SDR(mixture): the mixture itself improves nothing, for every clip.
    # The model runs at 44.1 kHz: the resampling round trip leaves tiny artefacts, which keep
    # SAR finite (an estimate exactly in the span of the references has SAR = inf).
    checkpoint = tmp_path / "mixture.pt"
    save_checkpoint(checkpoint, build("identity", sources=["accompaniment", "vocals"]))
    out = tmp_path / "scores"
    code = main(["evaluate", "--model", str(checkpoint), "--data", str(mir1k_root), "-o", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "GNSDR" in printed and "GSIR" in printed and "GSAR" in printed
    scores = json.loads((out / "mir1k_scores.json").read_text())
    assert scores["clips"] >= 1
    for source in ("accompaniment", "vocals"):
        assert scores["GNSDR"][source] == pytest.approx(0.0, abs=0.01)
    assert not list(out.glob("*.partial"))


def test_a_model_without_the_protocol_sources_is_refused(
    mir1k_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "four.pt"
    save_checkpoint(checkpoint, build("identity", sources=["vocals", "drums", "bass", "other"]))
    out = tmp_path / "scores"
    code = main(["evaluate", "--model", str(checkpoint), "--data", str(mir1k_root), "-o", str(out)])
    assert code != 0
    assert "accompaniment" in capsys.readouterr().err
    assert not (out / "mir1k_scores.json").exists()


def test_data_mir1k_writes_the_layout_once_and_leaves_nothing_on_failure(
    hq_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stemkit.data.factory import detect_format

    out = tmp_path / "MIR-1K"
    assert main(["data", "mir1k", str(hq_tree), str(out), "--clip-seconds", "1"]) == 0
    assert detect_format(out) == "mir1k"
    assert len(list((out / "Wavfile").glob("*.wav"))) > 0
    # an existing folder is never overwritten
    assert main(["data", "mir1k", str(hq_tree), str(out)]) != 0
    assert "already exists" in capsys.readouterr().err
    # a failure (a singer name with '_') leaves neither the folder nor its partial twin
    bad = tmp_path / "bad"
    assert main(["data", "mir1k", str(hq_tree), str(bad), "--singers", "a_b"]) != 0
    assert not bad.exists() and not (tmp_path / "bad.partial").exists()
