"""The main job end to end: render an unseen song, separate, score, draw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from stemkit.artifacts import bundled_path, load_model
from stemkit.cli.main import main


def test_demo_writes_stems_scores_and_picture(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--model", "identity", "--duration", "3"]) == 0
    for name in ("mixture", "vocals", "drums", "bass", "other"):
        assert (out / "song" / f"{name}.wav").is_file()
    stem = out / "stems" / "mixture.wav"  # the identity model's single stem
    info = sf.info(stem)
    assert (info.samplerate, info.channels) == (44100, 2)
    assert info.frames == sf.info(out / "song" / "mixture.wav").frames
    assert (out / "spectrograms.png").stat().st_size > 10_000
    assert "uSDR" in capsys.readouterr().out


@pytest.mark.skipif(not bundled_path().is_file(), reason="bundled model not built")
def test_bundled_model_beats_the_mixture_on_an_unseen_song(tmp_path: Path) -> None:
    model = load_model("default")
    assert model.sources == ("vocals", "drums", "bass", "other")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--duration", "8", "--seed", "777"]) == 0
    scores = json.loads((out / "scores.json").read_text())["sources"]
    for source, row in scores.items():
        assert row["uSDR"] > row["mixture_uSDR"], source
