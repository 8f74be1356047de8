"""`stemkit experiments table --paper`: ours, the published number and the difference per cell."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from stemkit.cli.main import main
from stemkit.errors import StemkitError
from stemkit.train.experiments import EXTRAPOLATED_EPOCHS, grid_table, load_grid

PUBLISHED = """\
source: "a study"
metric: cSDR
split: test
sources: [vocals, drums]
rows:
  base: {label: "Base row", vocals: 6.5, drums: 5.0, average: 5.75, parameters_m: 2.0,
         energy_kwh_green_algorithms: 0.004, final_train_loss: 3.0, training_hours: 2.0}
  mir: {label: "A MIR-1K row", gsir_vocals: 15.5}
"""


def _summary(vocals: tuple[float, float], drums: tuple[float, float]) -> dict[str, object]:
    """An evaluation summary as `experiments run` stores it: (uSDR, cSDR) per source."""
    sources = {"vocals": vocals, "drums": drums}
    scores = {s: {"uSDR": u, "cSDR": c} for s, (u, c) in sources.items()}
    scores["average"] = {
        "uSDR": (vocals[0] + drums[0]) / 2,
        "cSDR": (vocals[1] + drums[1]) / 2,
    }
    return {
        "parameters": 1_500_000,
        "sources": scores,
        "ledger_totals": {"energy_kwh": 0.01, "codecarbon_kwh": 0.006, "wall_seconds": 7200.0},
    }


@pytest.fixture
def grid_file(tmp_path: Path) -> Path:
    """A grid of two scored rows (one in the study, one an addition) and one unrun row."""
    (tmp_path / "published.yaml").write_text(PUBLISHED)
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        f"root: {tmp_path / 'runs'}\npublished: published.yaml\n"
        "variants: [{name: base}, {name: extra}, {name: mir}]\n"
    )
    # Five epochs whose energy grows: the first three average 2 Wh, the run used 0.01 kWh.
    epochs = [
        {"epoch": i, "train_loss": 4.0 - i * 0.25, "energy_kwh": e, "codecarbon_kwh": e / 2}
        for i, e in enumerate([0.001, 0.002, 0.003, 0.002, 0.002])
    ]
    for name, scores in (("base", ((7.0, 6.75), (4.5, 5.5))), ("extra", ((1.0, 2.0), (3.0, 4.0)))):
        run = tmp_path / "runs" / name
        (run / "eval").mkdir(parents=True)
        (run / "eval" / "summary.json").write_text(json.dumps(_summary(*scores)))
        (run / "history.json").write_text(json.dumps(epochs))
    return grid


def _cells(table: str, model: str) -> dict[str, str]:
    """``{column title: cell}`` of ``model``'s row; repeated titles get the previous one's name."""
    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    row = next(line for line in lines if line.startswith(f"| {model} |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    named: dict[str, str] = {}
    last = ""
    for title, cell in zip(header, cells, strict=True):
        if title in ("published", "Δ", "÷"):
            named[f"{last} {title}"] = cell
        else:
            last = title
            named[title] = cell
    return named


def test_each_published_cell_has_its_number_and_the_difference(grid_file: Path) -> None:
    table = grid_table(load_grid(grid_file), paper=True)
    base = _cells(table, "base")
    # cSDR per source (the published metric), ours − published, signed, in the column's format.
    assert (base["Vocals cSDR"], base["Vocals cSDR published"]) == ("6.75", "6.5")
    assert base["Vocals cSDR Δ"] == "+0.25"
    assert (base["Drums cSDR"], base["Drums cSDR Δ"]) == ("5.50", "+0.50")
    assert (base["Avg cSDR"], base["Avg cSDR published"], base["Avg cSDR Δ"]) == (
        "6.12",
        "5.75",
        "+0.38",
    )
    assert (base["Params (M)"], base["Params (M) Δ"]) == ("1.50", "-0.50")
    assert (base["Final loss"], base["Final loss published"], base["Final loss Δ"]) == (
        "3",
        "3.0",
        "+0",
    )
    # Time and energy compare as ratios; the published energy sits beside the extrapolation.
    assert (base["Train time (h)"], base["Train time (h) ÷"]) == ("2", "1")
    extrapolated = f"Energy GA, {EXTRAPOLATED_EPOCHS} ep. extrapolated (kWh)"
    assert base[extrapolated] == "0.01"  # (1 + 2 + 3 Wh) / 3 epochs × 5 epochs
    assert base[f"{extrapolated} published"] == "0.004"
    assert base[f"{extrapolated} ÷"] == "2.5"
    assert base["Energy GA (kWh)"] == "0.01" and "Energy GA (kWh) published" not in base
    cc = f"Energy CC, {EXTRAPOLATED_EPOCHS} ep. extrapolated (kWh)"
    assert base[cc] == "0.005" and f"{cc} published" not in base  # no row published it
    # An addition of ours has no published numbers: dashes, never a difference with nothing.
    extra = _cells(table, "extra")
    assert extra["Published row"] == "addition (not in the study)"
    assert (extra["Vocals cSDR published"], extra["Vocals cSDR Δ"]) == ("–", "–")
    # A published number of a row not run yet is shown without a difference.
    mir = _cells(table, "mir")
    assert (mir["Voice GSIR"], mir["Voice GSIR published"], mir["Voice GSIR Δ"]) == (
        "–",
        "15.5",
        "–",
    )


def test_both_scores_are_available_and_the_csv_holds_everything(grid_file: Path) -> None:
    grid = load_grid(grid_file)
    table = grid_table(grid, scores="both")
    base = _cells(table, "base")
    assert base["Vocals uSDR"] == "7.00" and base["Vocals cSDR"] == "6.75 (6.5)"
    assert "Vocals uSDR" in _cells(grid_table(grid, scores="usdr"), "base")
    assert "Vocals uSDR" not in _cells(grid_table(grid), "base")  # the published metric: cSDR
    with open(grid.root / "table.csv") as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert float(rows["base"]["usdr_vocals"]) == 7.0 and float(rows["base"]["csdr_drums"]) == 5.5
    assert float(rows["base"]["energy_kwh_green_algorithms_extrapolated"]) == pytest.approx(0.01)
    assert rows["base"]["paper_csdr_vocals"] == "6.5" and rows["mir"]["paper_gsir_vocals"] == "15.5"
    with pytest.raises(StemkitError, match="choose usdr, csdr or both"):
        grid_table(grid, scores="sdr")


def test_the_paper_layout_needs_a_published_file(
    grid_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["experiments", "table", str(grid_file), "--paper"]) == 0
    assert (tmp_path / "runs" / "table-paper.md").is_file()
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| base"))
    assert "| 6.75 | 6.5 | +0.25 |" in row
    bare = tmp_path / "bare.yaml"
    bare.write_text(f"root: {tmp_path / 'runs'}\nvariants: [{{name: base}}]\n")
    assert main(["experiments", "table", str(bare), "--paper"]) != 0
    error = capsys.readouterr().err.strip()
    assert "bare.yaml" in error and "--paper needs" in error and "\n" not in error


def test_published_files_take_score_keys_but_no_unknown_key(tmp_path: Path) -> None:
    paper = tmp_path / "published.yaml"
    paper.write_text(PUBLISHED.replace("gsir_vocals", "sir_vocals"))
    grid = tmp_path / "grid.yaml"
    grid.write_text("root: r\npublished: published.yaml\nvariants: [{name: base}, {name: mir}]\n")
    with pytest.raises(StemkitError, match=r"published\.yaml: row 'mir' has unknown key\(s\) sir"):
        load_grid(grid)
