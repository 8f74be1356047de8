"""Per-track score documents, aggregates, tables and plots (stemkit.metrics.report)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from stemkit.metrics.report import (
    MISSING,
    Report,
    ReportError,
    TrackScores,
    comparison_table,
    load_report,
    plot_scores,
    write_report,
)
from stemkit.metrics.store import write_json

SOURCES = ("vocals", "bass")


def _track(name: str, vocals: list[float], bass: list[float], full: bool = False) -> TrackScores:
    frames = {"vocals": np.array(vocals), "bass": np.array(bass)}
    other = {m: {s: f + k for s, f in frames.items()} for k, m in enumerate(("ISR", "SIR", "SAR"))}
    return TrackScores(
        name=name,
        usdr={"vocals": float(np.nanmean(vocals)), "bass": 1.0},
        sdr_frames=frames,
        baseline_usdr={"vocals": -5.0, "bass": -3.0},
        baseline_sdr_frames={"vocals": np.array([-5.0, -6.0]), "bass": np.array([-2.0, math.nan])},
        other_frames=other if full else {},
    )


def test_document_round_trip_keeps_every_number() -> None:
    track = _track("A", [1.123456789, math.nan, 3.0], [2.0, 4.0, 6.0], full=True)
    document = json.loads(json.dumps(track.to_document()))
    back = TrackScores.from_document("A", document)
    np.testing.assert_array_equal(back.sdr_frames["vocals"], [1.12346, math.nan, 3.0])
    np.testing.assert_array_equal(back.other_frames["SAR"]["bass"], [4.0, 6.0, 8.0])
    assert back.usdr == track.usdr and back.baseline_usdr == track.baseline_usdr
    np.testing.assert_array_equal(back.baseline_sdr_frames["bass"], [-2.0, math.nan])
    # fast documents leave ISR/SIR/SAR NaN: they are not read back as metrics
    fast = TrackScores.from_document("A", _track("A", [1.0], [2.0]).to_document())
    assert fast.other_frames == {}


def test_aggregates_median_of_medians_and_mean_of_medians() -> None:
    tracks = [
        _track("A", [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]),  # vocals median 2
        _track("B", [4.0, 4.0, math.nan], [1.0, 1.0, 1.0]),  # 4 (NaN frame skipped)
        _track("C", [12.0, 12.0, 12.0], [2.0, 2.0, 2.0]),  # 12
    ]
    rows = Report("m", SOURCES, tracks).summary()["sources"]
    assert rows["vocals"]["cSDR"] == 4.0
    assert rows["vocals"]["cSDR_mean"] == pytest.approx(6.0)
    assert rows["bass"]["cSDR"] == 1.0 and rows["bass"]["uSDR"] == 1.0
    assert rows["vocals"]["mixture_cSDR"] == -5.5 and rows["bass"]["mixture_cSDR"] == -2.0
    assert rows["average"]["cSDR"] == pytest.approx(2.5)
    assert "cISR" not in rows["vocals"]


def test_full_metrics_columns_and_markdown() -> None:
    report = Report("oracle", SOURCES, [_track("A", [1.0, 3.0], [2.0, 2.0], full=True)])
    rows = report.summary()["sources"]
    assert rows["vocals"]["cSIR"] == pytest.approx(3.0)  # SDR median 2, SIR = SDR + 1
    assert rows["bass"]["cSAR"] == pytest.approx(4.0)
    text = report.markdown()
    assert "source-to-artifacts ratio" in text and "cSAR (median)" in text
    assert "| average |" in text and "Mixture baseline" in text
    assert "cSIR" in report.table()


def test_museval_documents_show_missing_usdr(tmp_path: Path) -> None:
    aggregate = pytest.importorskip("museval.aggregate")
    folder = tmp_path / "museval_out" / "test"
    folder.mkdir(parents=True)
    for k in range(2):
        store = aggregate.TrackStore(f"Song {k}", win=1, hop=1)
        for j, source in enumerate(SOURCES):
            values = {m: [float(k + j + i) for i in range(3)] for m in ("SDR", "SIR", "SAR", "ISR")}
            store.add_target(source, values)
        store.save(folder / f"Song {k}.json")
    report = load_report(tmp_path / "museval_out")
    assert report.method == "museval_out" and report.sources == SOURCES
    assert [t.name for t in report.tracks] == ["Song 0", "Song 1"]
    rows = report.summary()["sources"]
    assert rows["bass"]["cSDR"] == pytest.approx(2.5)  # per-track medians 2 and 3
    assert math.isnan(rows["vocals"]["uSDR"]) and "cSIR" in rows["vocals"]
    ours = Report("ours", SOURCES, [_track("Song 0", [9.0], [9.0])])
    table = comparison_table([ours, report])
    vocals = next(line for line in table.splitlines() if line.startswith("vocals"))
    assert vocals.split() == ["vocals", "9.00", "9.00", "1.50", MISSING]


def test_load_report_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no per-track score files"):
        load_report(tmp_path)
    write_json(tmp_path / "test" / "x.json", {"something": "else"})
    with pytest.raises(ReportError, match=r"x\.json.*not a museval-layout"):
        load_report(tmp_path)


def test_write_report_writes_markdown_and_png(tmp_path: Path) -> None:
    report = Report("m", SOURCES, [_track("A", [1.0, 2.0], [3.0, 4.0])])
    markdown, picture = write_report(report, tmp_path)
    assert markdown.read_text().startswith("# m: separation scores")
    assert picture.read_bytes()[:4] == b"\x89PNG"
    assert plot_scores(Report("empty", SOURCES, []), tmp_path / "e.png").is_file()
