"""Experiment grids: variants train, resume, get scored and tabulated; finished ones are skipped."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from stemkit.artifacts.checkpoint import load_checkpoint
from stemkit.cli.main import main
from stemkit.errors import StemkitError
from stemkit.train.experiments import grid_rows, load_grid

PRESET = """
seed: 42
data:
  segment: 1.0
  samples_per_track: 2
optim:
  batch_size: 4
  lr: 0.01
  epochs: 2
"""

GRID = """
base: {preset}
root: {root}
overrides: [data.root={data}]
evaluate: {{segment: 2.0, overlap: 0.25}}
variants:
  - name: tiny_umx
    overrides: [model.kwargs.hidden_size=8, model.kwargs.n_fft=512, model.kwargs.n_hop=128]
  - name: tiny_bsrnn
    overrides:
      - model.name=bsrnn
      - model.input_statistics=false
      - optim.loss=tf_l1
      - optim.scheduler=step
      - optim.monitor=valid_usdr
      - "model.kwargs={{n_features: 8, n_layers: 1, n_fft: 512, n_hop: 128, layout: [[1000, 8]]}}"
"""


def _grid(tmp_path: Path, data: Path) -> Path:
    preset = tmp_path / "preset.yaml"
    preset.write_text(PRESET)
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID.format(preset=preset, root=tmp_path / "runs", data=data))
    return grid


@pytest.mark.slow
def test_grid_runs_end_to_end_resumes_and_skips_finished_variants(
    hq_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid_file = _grid(tmp_path, hq_tree)
    runs = tmp_path / "runs"
    # An interrupted grid: only one variant, and one epoch of the two.
    args = ["experiments", "run", str(grid_file), "--quiet"]
    assert main([*args[:3], "optim.epochs=1", "--quiet", "--only", "tiny_umx"]) == 0
    assert not (runs / "tiny_bsrnn").exists()
    first = load_checkpoint(runs / "tiny_umx" / "last.pt")["training_state"]["history"]
    assert len(first) == 1

    assert main(args) == 0
    for name in ("tiny_umx", "tiny_bsrnn"):
        history = load_checkpoint(runs / name / "last.pt")["training_state"]["history"]
        assert len(history) == 2, name  # the first variant resumed to the full budget
        summary = json.loads((runs / name / "eval" / "summary.json").read_text())
        assert summary["nb_tracks"] == 2
        assert summary["parameters"] > 0
        assert summary["ledger_totals"]["energy_kwh"] > 0
    assert "valid_usdr" in history[0]

    table = (runs / "table.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| tiny_")]
    assert [line.split("|")[1].strip() for line in lines] == ["tiny_umx", "tiny_bsrnn"]
    assert "Vocals uSDR" in table and "Avg uSDR" in table and "Avg cSDR" in table
    for line in lines:  # the CodeCarbon column: its measurement, or "–" with a reason on record
        name, cell = line.split("|")[1].strip(), line.split("|")[-3].strip()
        measured = json.loads((runs / name / "eval" / "summary.json").read_text())
        codecarbon = measured["ledger_totals"].get("codecarbon_kwh")
        if codecarbon is None:
            assert cell == "–"
        else:
            assert float(cell) == pytest.approx(codecarbon, rel=1e-2) and codecarbon >= 0
    with open(runs / "table.csv") as handle:
        rows = list(csv.DictReader(handle))
    summary = json.loads((runs / "tiny_bsrnn" / "eval" / "summary.json").read_text())
    assert float(rows[1]["csdr_average"]) == pytest.approx(summary["sources"]["average"]["cSDR"])
    assert float(rows[1]["usdr_vocals"]) == pytest.approx(summary["sources"]["vocals"]["uSDR"])
    assert float(rows[1]["usdr_average"]) == pytest.approx(summary["sources"]["average"]["uSDR"])
    assert float(rows[0]["parameters_m"]) > 0 and float(rows[0]["training_hours"]) > 0

    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/*.pt")}
    capsys.readouterr()
    assert main(["experiments", "run", str(grid_file)]) == 0
    err = capsys.readouterr().err  # the status lines are log records, on stderr
    assert err.count("skipped") == 2 and err.count("already evaluated") == 2
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/*.pt")} == stamps

    assert main(["experiments", "table", str(grid_file)]) == 0
    assert "tiny_bsrnn" in capsys.readouterr().out


def test_table_of_an_unrun_grid_shows_placeholders(tmp_path: Path) -> None:
    grid = load_grid(_grid(tmp_path, tmp_path / "nowhere"))
    assert [row["model"] for row in grid_rows(grid)] == ["tiny_umx", "tiny_bsrnn"]
    from stemkit.train.experiments import grid_table

    table = grid_table(grid, write=False)
    assert table.count("| tiny_") == 2 and "–" in table
    assert not (tmp_path / "runs").exists()


def test_bad_grids_are_refused_with_the_file_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("root: r\nvariants: [{name: a}, {name: a}]\n")
    with pytest.raises(StemkitError, match=r"bad\.yaml.*used twice: a"):
        load_grid(bad)
    bad.write_text("root: r\nvariant: []\n")
    with pytest.raises(StemkitError, match="unknown grid key"):
        load_grid(bad)
    bad.write_text("root: r\nvariants: [{name: a, overrides: [optim.nope=1]}]\n")
    grid = load_grid(bad)
    with pytest.raises(StemkitError, match="nope"):
        grid.config(grid.variants[0])
    with pytest.raises(StemkitError, match="no such grid"):
        load_grid(tmp_path / "missing.yaml")
    bad.write_text("root: r\nevaluate: {subset: validation}\nvariants: [{name: a}]\n")
    with pytest.raises(StemkitError, match=r"evaluate\.subset='validation': choose one of"):
        load_grid(bad)
    paper = tmp_path / "paper.yaml"
    paper.write_text(
        "source: s\nmetric: uSDR\nsplit: valid\nsources: [vocals]\n"
        "rows: {b: {label: B, vocals: 1.0}}\n"
    )
    bad.write_text(f"root: r\npublished: {paper}\nvariants: [{{name: a}}]\n")
    with pytest.raises(StemkitError, match=r"published row\(s\) b of .*match no variant"):
        load_grid(bad)
    paper.write_text(
        "source: s\nmetric: uSDR\nsplit: valid\nsources: [vocals]\n"
        "rows: {a: {label: A, vocal: 1.0}}\n"
    )
    with pytest.raises(StemkitError, match=r"row 'a' has unknown key\(s\) vocal"):
        load_grid(bad)


def test_shipped_grids_resolve(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    for name in ("bsrnn_variants.yaml", "tiny_synth.yaml"):
        grid = load_grid(root / "configs" / "grids" / name)
        assert len(grid.variants) >= 2
        for variant in grid.variants:
            config = grid.config(variant)
            assert config.run_dir.endswith(variant.name)


def test_a_variant_may_start_from_its_own_preset(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2] / "configs"
    grid_file = tmp_path / "systems.yaml"
    grid_file.write_text(
        f"base: {root / 'umx_synth_small.yaml'}\nroot: {tmp_path / 'runs'}\n"
        "overrides: [optim.epochs=1]\nvariants:\n"
        "  - {name: umx}\n"
        f"  - {{name: demucs, base: {root / 'demucs_synth_tiny.yaml'}, overrides: [seed=7]}}\n"
    )
    grid = load_grid(grid_file)
    umx, demucs = (grid.config(v) for v in grid.variants)
    assert (umx.model.name, demucs.model.name) == ("umx", "demucs")
    assert demucs.data.augment == "demucs" and demucs.seed == 7
    assert umx.optim.epochs == demucs.optim.epochs == 1  # shared overrides still apply
    grid_file.write_text("root: r\nvariants: [{name: a, bsae: x.yaml}]\n")
    with pytest.raises(StemkitError, match=r"variant 'a' has unknown key\(s\) bsae"):
        load_grid(grid_file)
