"""Two rows of the tiny BSRNN variant grid, end to end through ``stemkit experiments run``.

The command a user runs on the generated songs, here on a few seconds of generated stems and
shrunk further by command-line overrides (one step of one epoch): the base row (SAD sampler)
and the "silent target" row (its new silencing mode) train, are scored on the validation
split, and land in the table beside the published numbers, with every other row a placeholder.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import toy_stems, write_hq_track
from stemkit.cli.main import main

GRID = Path(__file__).resolve().parents[2] / "configs" / "grids" / "bsrnn_variants_tiny.yaml"
ROWS = ("bsrnn", "silent_target")


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 7 s training songs (one becomes the validation split) and one test song: each
    source is active in the first 6 s SAD window of every song."""
    root = tmp_path_factory.mktemp("songs")
    for i in range(3):
        write_hq_track(root / "train" / f"Toy - Train {i}", toy_stems(7.0, seed=i))
    write_hq_track(root / "test" / "Toy - Test 0", toy_stems(7.0, seed=100))
    return root


def test_two_rows_run_and_sit_beside_the_published_numbers(
    songs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the grid's root, runs/grids/..., is relative
    only = [arg for name in ROWS for arg in ("--only", name)]
    shrink = ["optim.epochs=1", "optim.batch_size=2", "data.segment=1.0"]
    shrink += ["data.samples_per_track=1", f"data.root={songs}"]
    assert main(["experiments", "run", str(GRID), *shrink, "--quiet", *only]) == 0

    root = tmp_path / "runs" / "grids" / "bsrnn_variants_tiny"
    with open(root / "table.csv") as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert len(rows) == 25 and set(ROWS) < set(rows)
    for name in ROWS:
        summary = json.loads((root / name / "eval" / "summary.json").read_text())
        assert summary["nb_tracks"] == 1  # the validation split: one of the three songs
        for source in ("vocals", "bass", "drums", "other", "average"):
            ours = float(rows[name][f"usdr_{source}"])
            assert ours == pytest.approx(summary["sources"][source]["uSDR"])
        assert float(rows[name]["parameters_m"]) == pytest.approx(summary["parameters"] / 1e6)
    config = (root / "silent_target" / "config.yaml").read_text()
    assert "silence: target" in config and "sampler: sad" in config
    assert rows["bsrnn"]["paper_usdr_vocals"] == "7.7"
    assert rows["bsrnn"]["label"] == "Base model: N=64, R=8"
    assert rows["gru"]["label"] == "" and rows["gru"]["usdr_vocals"] == ""  # not run: no scores

    table = (root / "table.md").read_text()
    line = next(row for row in table.splitlines() if row.startswith("| silent_target |"))
    assert "Silent target (instead of all sources)" in line and "(7.9)" in line
    assert "| gru | addition (not in the study) |" in table
    assert "uSDR on the 'valid' split" in table
