"""No silent wrong numbers: evaluation resumes only on the same audio, models of a subset of the
sources train and are scored on the whole mixture, and a dataset at another rate than the
model's is evaluated at its own rate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

import stemkit.evaluation.musdb as evaluation
from conftest import SOURCES, toy_stems, write_hq_track
from stemkit.cli.main import main
from stemkit.data.musdb import MusdbHQ, Track
from stemkit.evaluation import EvaluationError, Report, TrackScores, evaluate
from stemkit.metrics.sdr import usdr
from stemkit.models import build
from stemkit.models.base import SeparationModel

SECONDS = 2.0


def _model(name: str, **kwargs: object) -> SeparationModel:
    model = build(name, **kwargs)
    assert isinstance(model, SeparationModel)
    return model


def _tree(root: Path, seed: int, rate: int = 44100, subsets: tuple[str, ...] = ("test",)) -> Path:
    """Two tracks per subset named as every generated set names them; audio from ``seed``."""
    for subset in subsets:
        for i in range(2):
            stems = toy_stems(SECONDS, seed=seed + i, rate=rate)
            write_hq_track(root / subset / f"Toy - {i}", stems, rate=rate)
    return root


def _usdrs(report: Report) -> list[dict[str, float]]:
    return [t.usdr for t in report.tracks]


def _count_separations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = evaluation._separate_and_score

    def counted(model: SeparationModel, track: Track, **options: Any) -> TrackScores:
        calls.append(track.name)
        return real(model, track, **options)

    monkeypatch.setattr(evaluation, "_separate_and_score", counted)
    return calls


# --- A: an output folder's scores belong to one dataset -------------------------------------


def test_another_dataset_with_the_same_track_names_is_refused_never_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _tree(tmp_path / "first", seed=1)
    second = _tree(tmp_path / "second", seed=50)
    out = tmp_path / "scores"
    model = _model("identity", sources=SOURCES)
    old = evaluate(model, first, out_dir=out)
    fresh = evaluate(model, second)  # in memory: what the second set really scores
    assert _usdrs(old) != _usdrs(fresh)
    with pytest.raises(EvaluationError, match=rf"{out}.*dataset.*another output folder.*--force"):
        evaluate(model, second, out_dir=out)
    forced = evaluate(model, second, out_dir=out, force=True)
    assert _usdrs(forced) == _usdrs(fresh)
    # resuming on the same dataset still reads every track back
    calls = _count_separations(monkeypatch)
    again = evaluate(model, second, out_dir=out)
    assert calls == [] and _usdrs(again) == _usdrs(fresh)
    record = json.loads((out / "evaluation.json").read_text())
    assert record["dataset"]["root"] == str(second.resolve())


def test_the_cli_refuses_another_dataset_and_prints_no_old_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _tree(tmp_path / "first", seed=1)
    second = _tree(tmp_path / "second", seed=50)
    out = tmp_path / "scores"
    args = ["evaluate", "--model", "irm2", "-o", str(out)]
    assert main([*args, "--data", str(first)]) == 0
    capsys.readouterr()
    assert main([*args, "--data", str(second)]) == 2
    captured = capsys.readouterr()
    assert "uSDR" not in captured.out and "vocals" not in captured.out
    assert str(out) in captured.err and "--force" in captured.err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--overlap", "0.9"], "overlap must be"),
        (["--batch-size", "0"], "batch_size must be"),
        (["--segment", "-1"], "segment must be"),
        (["--limit", "0"], "limit must be"),
        (["--limit", "-1"], "limit must be"),  # a slice would silently drop the last track
    ],
)
def test_bad_chunking_settings_are_one_line_before_any_track(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    option: list[str],
    message: str,
) -> None:
    data = _tree(tmp_path / "data", seed=1)
    calls = _count_separations(monkeypatch)
    out = tmp_path / "scores"
    args = ["evaluate", "--model", "irm2", "--data", str(data), "-o", str(out)]
    assert main([*args, *option]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert calls == [] and not out.exists()


def test_a_track_file_of_other_audio_is_scored_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _tree(tmp_path / "first", seed=1)
    second = _tree(tmp_path / "second", seed=50)
    model = _model("identity", sources=SOURCES)
    out, other = tmp_path / "scores", tmp_path / "other"
    truth = evaluate(model, first, out_dir=out)
    evaluate(model, second, out_dir=other)
    # a stale file slipped in under the same name (same settings, other audio)
    name = truth.tracks[0].name
    (out / "test" / f"{name}.json").write_bytes((other / "test" / f"{name}.json").read_bytes())
    calls = _count_separations(monkeypatch)
    resumed = evaluate(model, first, out_dir=out)
    assert calls == [name]
    assert _usdrs(resumed) == _usdrs(truth)


def test_both_subsets_of_one_dataset_share_an_output_folder(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data", seed=3, subsets=("train", "test"))
    out = tmp_path / "scores"
    model = _model("identity", sources=SOURCES)
    test = evaluate(model, root, "test", out_dir=out)
    evaluate(model, root, "train", out_dir=out)
    assert _usdrs(evaluate(model, root, "test", out_dir=out)) == _usdrs(test)
    assert set(json.loads((out / "evaluation.json").read_text())["dataset"]["subsets"]) == {
        "train",
        "test",
    }


# --- B: the mixture is the whole song, whatever a model separates ---------------------------


def test_the_training_mixture_of_a_vocals_model_is_the_sum_of_all_stems(hq_tree: Path) -> None:
    from stemkit.train.loop import mixture_and_targets, target_rows

    data = MusdbHQ(hq_tree, "test", sources=("vocals",), segment=None)
    stems, name = data[0]
    track = next(t for t in data.tracks if t.name == name)
    every = np.stack([sf.read(track.path(s), dtype="float32")[0].T for s in SOURCES])
    rows = target_rows(data.stem_sources, ("vocals",))
    mixture, targets = mixture_and_targets(stems[None], rows)
    np.testing.assert_allclose(mixture[0].numpy(), every.sum(axis=0), atol=1e-6)
    np.testing.assert_array_equal(targets[0, 0].numpy(), every[0])
    assert targets.shape == (1, 1, *every.shape[1:])


def test_a_vocals_model_is_trained_on_the_whole_mixture(
    hq_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stemkit.train.loop as loop
    from stemkit.train.config import resolve_config

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = loop.compute_loss

    def spy(model: SeparationModel, mixture: torch.Tensor, stems: torch.Tensor, loss: str) -> Any:
        seen.append((mixture.detach().clone(), stems.detach().clone()))
        return real(model, mixture, stems, loss)

    monkeypatch.setattr(loop, "compute_loss", spy)
    config = resolve_config(
        None,
        [
            f"data.root={hq_tree}",
            f"run_dir={tmp_path / 'run'}",
            "data.sources=[vocals]",
            "optim.epochs=1",
            "model.kwargs.hidden_size=8",
            "model.kwargs.n_fft=512",
            "model.kwargs.n_hop=128",
            "data.segment=0.5",
            "data.samples_per_track=2",
            "optim.batch_size=2",
            "ledger.codecarbon=false",
        ],
    )
    loop.train(config, progress=False)
    assert seen  # training batches, then validation chunks
    for mixture, targets in seen:
        assert targets.shape[1] == 1
        rest = (mixture - targets[:, 0]).pow(2).sum() / mixture.pow(2).sum()
        # the other three stems are in the input: not vocals -> vocals
        assert rest > 0.1


def test_the_mixture_baseline_of_a_vocals_model_is_not_a_perfect_score(hq_tree: Path) -> None:
    vocals = evaluate(_model("identity", sources=("vocals",)), hq_tree)
    every = evaluate(_model("identity", sources=SOURCES), hq_tree)
    for one, four in zip(vocals.tracks, every.tracks, strict=True):
        # identity: the estimate is the mixture, so it scores exactly the baseline
        assert one.usdr["vocals"] == one.baseline_usdr["vocals"] < 10.0
        # the same whole-song mixture as a four-source model is scored on
        assert one.baseline_usdr["vocals"] == four.baseline_usdr["vocals"]
        np.testing.assert_array_equal(
            one.baseline_sdr_frames["vocals"], four.baseline_sdr_frames["vocals"]
        )


def test_evaluation_separates_the_mixture_file_when_it_differs_from_the_stem_sum(
    tmp_path: Path,
) -> None:
    root = _tree(tmp_path / "data", seed=7)
    folder = root / "test" / "Toy - 0"
    stems = np.stack([sf.read(folder / f"{s}.wav", dtype="float32")[0].T for s in SOURCES])
    # as a lossy codec leaves it: close to the stem sum, not equal to it
    rng = np.random.default_rng(0)
    mixture = 0.9 * stems.sum(axis=0) + 0.01 * rng.standard_normal(stems.shape[1:])
    mixture = mixture.astype(np.float32)
    sf.write(folder / "mixture.wav", mixture.T, 44100, subtype="FLOAT")
    report = evaluate(_model("identity", sources=SOURCES), root, limit=1)
    track = report.tracks[0]
    expected = usdr(stems, np.broadcast_to(mixture, stems.shape))
    summed = usdr(stems, np.broadcast_to(stems.sum(axis=0), stems.shape))
    for i, source in enumerate(SOURCES):
        assert track.usdr[source] == pytest.approx(expected[i], abs=1e-4)
        assert track.baseline_usdr[source] == pytest.approx(expected[i], abs=1e-4)
        assert abs(track.usdr[source] - summed[i]) > 0.1


# --- C: a dataset at another rate than the model's ------------------------------------------


@pytest.mark.parametrize(
    ("data_rate", "model_rate", "bound"), [(22050, 44100, 0.1), (16000, 8000, 1.0)]
)
def test_a_dataset_at_another_rate_is_scored_at_its_own(
    tmp_path: Path, data_rate: int, model_rate: int, bound: float
) -> None:
    """Identity: the scores at the native rate within ``bound`` dB: soxr's round trip through a
    higher rate changes them by about 0.05 dB; through a lower one the band above its Nyquist
    (part of the noisy drums) is lost, about 0.5 dB. The oracle's masks depend on the STFT's
    resolution in Hz, so its scores move more: finite, positive, and of the native order."""
    root = _tree(tmp_path / "data", seed=11, rate=data_rate)
    for kind in ("identity", "irm2"):
        native = evaluate(_model(kind, sources=SOURCES, sample_rate=data_rate), root)
        other = evaluate(_model(kind, sources=SOURCES, sample_rate=model_rate), root)
        for a, b in zip(native.tracks, other.tracks, strict=True):
            # scored at the track's rate and length: as many 1 s frames, the same baseline
            assert len(b.sdr_frames["vocals"]) == len(a.sdr_frames["vocals"]) == SECONDS
            assert b.baseline_usdr == a.baseline_usdr
            for source in SOURCES:
                assert np.isfinite(b.usdr[source]), (kind, source)
                if kind == "identity":
                    assert b.usdr[source] == pytest.approx(a.usdr[source], abs=bound), source
                elif model_rate > data_rate:
                    assert 10.0 < b.usdr[source] < a.usdr[source] + 3.0, source
                else:
                    assert 0.0 < b.usdr[source] < a.usdr[source] + 3.0, source


@pytest.mark.parametrize("kind", ["irm2", "mwf"])
def test_an_oracle_of_some_sources_counts_the_rest_of_the_track(hq_tree: Path, kind: str) -> None:
    # Given only the vocals, a ratio mask would be |V|²/|V|² = 1 everywhere: the vocals
    # estimate would be the whole mixture. The rest of the track must enter the masks.
    from stemkit.evaluation import evaluate as run_evaluation
    from stemkit.models import build

    full = run_evaluation(build(kind), hq_tree, method=kind)
    vocals = run_evaluation(build(kind, sources=("vocals",)), hq_tree, method=kind)
    for whole, alone in zip(full.tracks, vocals.tracks, strict=True):
        # The rest is one more source: a vocals/accompaniment oracle, close to the 4-source
        # one on vocals but not equal (the power of a sum is not the sum of the powers).
        assert abs(alone.usdr["vocals"] - whole.usdr["vocals"]) < 3.0
        assert alone.usdr["vocals"] > alone.baseline_usdr["vocals"] + 5
