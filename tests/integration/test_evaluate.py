"""`stemkit evaluate` end to end on the toy MUSDB18-HQ tree: metrics modes, jobs, resume,
reports, comparison and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

import stemkit.evaluation.musdb as evaluation
from stemkit.cli.main import main
from stemkit.data.musdb import Track
from stemkit.errors import DatasetError
from stemkit.evaluation import EvaluationError, Report, TrackScores, evaluate
from stemkit.metrics.store import read_json
from stemkit.models import build
from stemkit.models.base import SeparationModel

SOURCES = ("vocals", "drums", "bass", "other")


def _model(name: str, **kwargs: object) -> SeparationModel:
    model = build(name, **kwargs)
    assert isinstance(model, SeparationModel)
    return model


def _same_scores(a: Report, b: Report) -> None:
    assert [t.name for t in a.tracks] == [t.name for t in b.tracks]
    for x, y in zip(a.tracks, b.tracks, strict=True):
        assert x.usdr == y.usdr and x.baseline_usdr == y.baseline_usdr
        for s in SOURCES:
            np.testing.assert_array_equal(x.sdr_frames[s], y.sdr_frames[s])
            np.testing.assert_array_equal(x.baseline_sdr_frames[s], y.baseline_sdr_frames[s])
    # the scores, not what computing them cost (times differ between runs)
    assert {k: v for k, v in a.summary().items() if k != "cost"} == {
        k: v for k, v in b.summary().items() if k != "cost"
    }


def test_cost_of_separating_and_scoring_is_recorded(hq_tree: Path, tmp_path: Path) -> None:
    """Per track (in its JSON, read back on resume) and in total (summary.json): the audio's
    duration exactly, times and the Green Algorithms energy computed from them."""
    out = tmp_path / "eval"
    report = evaluate(_model("irm2"), hq_tree, "test", out_dir=out)
    durations = []
    for track in report.tracks:
        cost = track.cost
        stored = read_json(out / "test" / f"{track.name}.json")["stemkit"]["cost"]
        assert stored == cost
        info = sf.info(hq_tree / "test" / track.name / "vocals.wav")
        assert cost["audio_seconds"] == info.frames / info.samplerate
        durations.append(cost["audio_seconds"])
        for part in ("separation", "scoring"):
            span, constants = cost[part], cost[part]["constants"]
            assert span["seconds"] > 0 and span["cpu_seconds"] >= 0 and span["memory_gb"] > 0
            joules = (
                span["cpu_seconds"] * constants["watts_per_core"]
                + span["memory_gb"] * span["seconds"] * constants["watts_per_gb_memory"]
            ) * constants["pue"]
            assert span["energy_kwh"] == pytest.approx(joules / 3.6e6, rel=1e-12)
            assert span["carbon_g"] == pytest.approx(
                span["energy_kwh"] * constants["carbon_g_per_kwh"], rel=1e-12
            )
    summary = read_json(out / "summary.json")["cost"]
    assert summary["audio_seconds"] == pytest.approx(sum(durations), rel=1e-12)
    seconds = sum(t.cost["separation"]["seconds"] for t in report.tracks)
    assert summary["separation"]["seconds"] == pytest.approx(seconds, rel=1e-12)
    assert summary["real_time_factor"] == pytest.approx(sum(durations) / seconds, rel=1e-12)
    # resumed: every track read back, with the cost measured when it was computed
    again = evaluate(_model("irm2"), hq_tree, "test", out_dir=out)
    assert [t.cost for t in again.tracks] == [t.cost for t in report.tracks]


@pytest.fixture(scope="module")
def irm2_full(hq_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Path]:
    out = tmp_path_factory.mktemp("irm2_full")
    return evaluate(_model("irm2"), hq_tree, method="irm2", metrics="full", out_dir=out), out


def test_full_and_fast_give_the_same_sdr(hq_tree: Path, irm2_full: tuple[Report, Path]) -> None:
    full, _ = irm2_full
    fast = evaluate(_model("irm2"), hq_tree, method="irm2")
    for f, g in zip(full.tracks, fast.tracks, strict=True):
        assert f.usdr == g.usdr
        for s in SOURCES:
            # the v4 SDR with filters equals the filter-free frame SNR (5-decimal storage)
            np.testing.assert_allclose(f.sdr_frames[s], g.sdr_frames[s], atol=2e-5)
            assert set(f.other_frames) == {"ISR", "SIR", "SAR"}
            assert np.isfinite(f.other_frames["SIR"][s]).all()
        assert g.other_frames == {}
    rows = full.summary()["sources"]
    assert {"cSDR", "cSDR_mean", "cISR", "cSIR", "cSAR", "cSAR_mean"} <= set(rows["vocals"])
    assert "cSIR" not in fast.summary()["sources"]["vocals"]
    assert all(math.isfinite(rows["average"][k]) for k in ("cISR", "cSIR", "cSAR"))
    assert "cSIR" in full.table() and "cSIR" not in fast.table()


def test_json_files_are_readable_by_museval(irm2_full: tuple[Report, Path]) -> None:
    aggregate = pytest.importorskip("museval.aggregate")
    report, out = irm2_full
    track = report.tracks[0]
    document = read_json(out / "test" / f"{track.name}.json")
    frame = aggregate.json2df(document, track.name)
    for metric, frames in (("SDR", track.sdr_frames), ("SIR", track.other_frames["SIR"])):
        rows = frame[(frame.target == "vocals") & (frame.metric == metric)].sort_values("time")
        np.testing.assert_allclose(rows.score.to_numpy(dtype=float), frames["vocals"])
    pytest.importorskip("jsonschema")
    store = aggregate.TrackStore(track.name)
    store.scores = document
    store.validate()  # raises on a document outside museval's schema


def test_jobs_2_gives_the_scores_of_jobs_1(hq_tree: Path) -> None:
    one = evaluate(_model("irm2"), hq_tree, method="irm2")
    two = evaluate(_model("irm2"), hq_tree, method="irm2", jobs=2)
    _same_scores(one, two)


def test_resume_reads_finished_tracks_back(
    hq_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "scores"
    first = evaluate(_model("irm2"), hq_tree, method="irm2", out_dir=out)
    calls: list[str] = []
    real = evaluation._separate_and_score

    def counted(model: SeparationModel, track: Track, **options: Any) -> TrackScores:
        calls.append(track.name)
        return real(model, track, **options)

    monkeypatch.setattr(evaluation, "_separate_and_score", counted)
    again = evaluate(_model("irm2"), hq_tree, method="irm2", out_dir=out)
    assert calls == []
    _same_scores(first, again)
    # an interrupted run: one track file missing, only that track is separated
    missing = first.tracks[1].name
    (out / "test" / f"{missing}.json").unlink()
    resumed = evaluate(_model("irm2"), hq_tree, method="irm2", out_dir=out)
    assert calls == [missing]
    _same_scores(first, resumed)
    settings = json.loads((out / "evaluation.json").read_text())
    assert settings["metrics"] == "fast" and settings["model_name"] == "irm2"


def test_resume_refuses_other_settings_unless_forced(hq_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores"
    evaluate(_model("irm2"), hq_tree, method="irm2", out_dir=out, limit=1)
    with pytest.raises(EvaluationError, match=r"metrics: 'fast' there, 'full' now.*--force"):
        evaluate(_model("irm2"), hq_tree, method="irm2", metrics="full", out_dir=out, limit=1)
    with pytest.raises(EvaluationError, match="model_name"):
        evaluate(_model("irm1"), hq_tree, method="irm2", out_dir=out, limit=1)
    forced = evaluate(
        _model("irm2"), hq_tree, method="irm2", metrics="full", out_dir=out, limit=1, force=True
    )
    assert "ISR" in forced.tracks[0].other_frames
    assert json.loads((out / "evaluation.json").read_text())["metrics"] == "full"


def test_report_files_are_written(irm2_full: tuple[Report, Path]) -> None:
    report, out = irm2_full
    text = (out / "report.md").read_text()
    assert "source-to-distortion ratio" in text and "source-to-interference ratio" in text
    assert "Mixture baseline" in text and "(mean)" in text
    vocals = report.summary()["sources"]["vocals"]
    assert f"{vocals['cSDR']:.2f}" in text and f"{vocals['mixture_cSDR']:.2f}" in text
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sources"]["vocals"]["cSAR"] == pytest.approx(vocals["cSAR"])


def test_cli_compare_two_methods_and_a_museval_folder(
    hq_tree: Path,
    irm2_full: tuple[Report, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    irm2, irm2_dir = irm2_full
    mixture_dir = tmp_path / "mixture"
    identity = _model("identity", sources=SOURCES)
    evaluate(identity, hq_tree, method="mixture", out_dir=mixture_dir)
    # museval's own output: the same layout without our "stemkit" key
    museval_dir = tmp_path / "museval_run"
    (museval_dir / "test").mkdir(parents=True)
    for path in (irm2_dir / "test").glob("*.json"):
        document = read_json(path)
        del document["stemkit"]
        (museval_dir / "test" / path.name).write_text(json.dumps(document))
    out = tmp_path / "cmp"
    args = ["evaluate", "--compare", str(irm2_dir), str(mixture_dir), str(museval_dir)]
    assert main([*args, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "irm2 cSDR" in printed and "mixture cSDR" in printed and "museval_run cSDR" in printed
    vocals = next(line for line in printed.splitlines() if line.startswith("vocals"))
    summary = irm2.summary()["sources"]["vocals"]
    assert f"{summary['cSDR']:.2f}" in vocals and "–" in vocals  # museval files lack uSDR
    assert "mixture cSDR" in (out / "comparison.md").read_text()
    assert (out / "comparison.png").stat().st_size > 1000
    # NAME=DIR labels a column; plain folders keep their recorded method
    labelled = ["evaluate", "--compare", f"oracle={irm2_dir}", str(mixture_dir)]
    assert main(labelled) == 0
    header = capsys.readouterr().out.splitlines()[1]
    assert "oracle cSDR" in header and "mixture cSDR" in header and "irm2" not in header


def test_cli_full_metrics(
    hq_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores"
    args = ["evaluate", "--model", "irm2", "--data", str(hq_tree), "--metrics", "full"]
    assert main([*args, "--limit", "1", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cSIR" in printed and "cSDR mean" in printed
    assert (out / "report.md").is_file()
    # the same folder with other settings: a clean error, exit status 2
    assert main([*args[:-2], "--limit", "1", "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


class _Diverged(SeparationModel):
    def __init__(self) -> None:
        super().__init__(SOURCES, 44100, 2)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        out = mixture.unsqueeze(1).repeat(1, len(self.sources), 1, 1)
        out[:, 1, :, 100] = math.nan
        return out


def test_nan_estimates_are_an_error_naming_the_track(hq_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match=r"Toy - Test 0.*drums hold NaN"):
        evaluate(_Diverged(), hq_tree, out_dir=tmp_path / "out")
    assert not list((tmp_path / "out").glob("test/*.json"))


def test_a_source_missing_from_the_dataset_names_the_file(hq_tree: Path) -> None:
    model = _model("identity", sources=("vocals", "piano"))
    with pytest.raises(DatasetError, match=r"piano\.wav"):
        evaluate(model, hq_tree)


def test_stems_of_different_lengths_name_the_file(hq_tree: Path, tmp_path: Path) -> None:
    root = tmp_path / "bad"
    track = root / "test" / "Bad - Song"
    track.mkdir(parents=True)
    for stem in ("mixture", *SOURCES):
        nb = 22050 if stem == "bass" else 44100
        sf.write(track / f"{stem}.wav", np.zeros((nb, 2), dtype=np.float32), 44100)
    with pytest.raises(DatasetError, match=r"bass\.wav.*length"):
        evaluate(_model("irm2"), root)
