"""Training on CPU: the loss goes down, a run resumes exactly, the run folder is complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stemkit.artifacts.checkpoint import load_checkpoint, model_from_checkpoint
from stemkit.cli.main import main
from stemkit.errors import StemkitError
from stemkit.train.config import TrainConfig, resolve_config
from stemkit.train.loop import train

TINY = [
    "model.kwargs.hidden_size=16",
    "model.kwargs.n_fft=512",
    "model.kwargs.n_hop=128",
    "data.segment=1.0",
    "data.samples_per_track=4",
    "optim.batch_size=4",
    "optim.lr=0.01",
    "ledger.codecarbon=false",  # its hardware probe costs a second per run; tested elsewhere
]


def _config(root: Path, run_dir: Path, epochs: int, *extra: str) -> TrainConfig:
    return resolve_config(
        None, [f"data.root={root}", f"run_dir={run_dir}", f"optim.epochs={epochs}", *TINY, *extra]
    )


def test_short_run_lowers_the_loss_and_writes_a_complete_run_folder(
    hq_tree: Path, tmp_path: Path
) -> None:
    best = train(_config(hq_tree, tmp_path / "run", 6), progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 6
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert min(r["valid_loss"] for r in history) < history[0]["valid_loss"]
    for name in ("config.yaml", "last.pt", "best.pt", "best.pt.sha256", "learning_curve.png"):
        assert (tmp_path / "run" / name).is_file(), name
    payload = load_checkpoint(best)
    assert payload["model_name"] == "umx"
    assert payload["sources"] == ["vocals", "drums", "bass", "other"]
    assert payload["provenance"]["seed"] == 42
    assert payload["provenance"]["data_fingerprint"]
    assert payload["ledger"]["totals"]["wall_seconds"] > 0
    assert payload["ledger"]["totals"]["energy_kwh"] > 0
    assert payload["config"]["optim"]["epochs"] == 6
    model = model_from_checkpoint(payload)
    out = model(torch.zeros(1, 2, 4096))
    assert out.shape == (1, 4, 2, 4096)


def test_interrupted_run_resumes_to_the_same_weights(hq_tree: Path, tmp_path: Path) -> None:
    train(_config(hq_tree, tmp_path / "straight", 3), progress=False)

    def interrupt(epoch: int, row: dict) -> None:
        if epoch == 0:
            raise KeyboardInterrupt

    interrupted = _config(hq_tree, tmp_path / "resumed", 3)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, progress=False, on_epoch_end=interrupt)
    assert len(load_checkpoint(tmp_path / "resumed" / "last.pt")["training_state"]["history"]) == 1
    train(interrupted, progress=False)

    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert straight["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert len(resumed["training_state"]["history"]) == 3


def test_resuming_with_another_configuration_is_refused(hq_tree: Path, tmp_path: Path) -> None:
    train(_config(hq_tree, tmp_path / "run", 1), progress=False)
    with pytest.raises(StemkitError, match="different configuration"):
        train(_config(hq_tree, tmp_path / "run", 1, "optim.lr=0.5"), progress=False)


def test_resuming_weights_of_another_model_names_the_file(hq_tree: Path, tmp_path: Path) -> None:
    from stemkit import models
    from stemkit.artifacts.checkpoint import save_checkpoint
    from stemkit.errors import CheckpointError

    config = _config(hq_tree, tmp_path / "run", 2)
    train(_config(hq_tree, tmp_path / "run", 1), progress=False)
    last = tmp_path / "run" / "last.pt"
    payload = load_checkpoint(last)
    # same configuration, but the weights of a narrower model: a damaged or foreign last.pt
    other = models.build("umx", hidden_size=8, n_fft=512, n_hop=128)
    meta = {k: payload[k] for k in ("config", "provenance", "ledger", "training_state")}
    save_checkpoint(last, other, **meta)
    with pytest.raises(CheckpointError, match=r"last\.pt: its weights do not fit"):
        train(config, progress=False)


def test_bad_overrides_name_the_key() -> None:
    with pytest.raises(StemkitError, match="no_such_key"):
        resolve_config(None, ["optim.no_such_key=1"])
    with pytest.raises(StemkitError, match=r"optim\.lr"):
        resolve_config(None, ["optim.lr=fast"])


def test_cli_train_then_evaluate(hq_tree: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "cli"
    args = ["train", "--quiet", "--data", str(hq_tree), "--run-dir", str(run_dir), "optim.epochs=1"]
    assert main([*args, *TINY]) == 0
    assert (run_dir / "best.pt").is_file()
    out = tmp_path / "scores"
    status = main(
        ["evaluate", "--model", str(run_dir / "best.pt"), "--data", str(hq_tree), "-o", str(out)]
    )
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nb_tracks"] == 2
    assert set(summary["sources"]) == {"vocals", "drums", "bass", "other", "average"}
    assert len(list((out / "test").glob("*.json"))) == 2
    assert "uSDR" in capsys.readouterr().out


def test_cli_train_on_a_missing_folder_fails_cleanly(tmp_path: Path, capsys) -> None:
    status = main(["train", "--quiet", "--data", str(tmp_path / "nowhere"), "optim.epochs=1"])
    assert status == 2
    assert "nowhere" in capsys.readouterr().err


TINY_MODELS = {
    "umx": dict(hidden_size=8, n_fft=256, n_hop=64),
    "xumx": dict(hidden_size=8, n_fft=256, n_hop=64),
    "bsrnn": dict(n_features=8, n_layers=1, n_fft=256, n_hop=64, layout=[[1000, 8]]),
}


@pytest.mark.parametrize(
    ("name", "loss"),
    [
        ("umx", "spectral_mse"),
        ("umx", "l1"),
        ("xumx", "multi_domain"),
        ("bsrnn", "tf_l1"),
        ("bsrnn", "usdr"),
        ("bsrnn", "sisdr"),
        ("bsrnn", "mse"),
    ],
)
def test_every_loss_gives_a_finite_gradient(name: str, loss: str) -> None:
    from stemkit import models
    from stemkit.train.objectives import LOSSES, compute_loss

    assert loss in LOSSES
    torch.manual_seed(0)
    sources = ["vocals", "drums"]
    model = models.build(name, sources=sources, **TINY_MODELS[name])
    stems = 0.1 * torch.randn(2, len(sources), 2, 4096)
    value = compute_loss(model, stems.sum(dim=1), stems, loss)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_loss_and_model_mismatch_is_refused() -> None:
    from stemkit import models
    from stemkit.train.objectives import compute_loss

    model = models.build("bsrnn", sources=["vocals"], **TINY_MODELS["bsrnn"])
    stems = torch.zeros(1, 1, 2, 2048)
    with pytest.raises(StemkitError, match="spectrogram model"):
        compute_loss(model, stems.sum(dim=1), stems, "spectral_mse")
    with pytest.raises(StemkitError, match="unknown loss"):
        compute_loss(model, stems.sum(dim=1), stems, "l3")


# --- schedules, accumulation, optimisers and the uSDR monitor ---------------------------------

STATEFUL = {
    "step_accumulate_adamw_usdr": [
        "optim.scheduler=step",
        "optim.step_size=1",
        "optim.gamma=0.5",
        "optim.accumulate=2",
        "optim.optimizer=adamw",
        "optim.lr_scale_batch=16",
        "optim.monitor=valid_usdr",
        "optim.valid_segment=1.5",
    ],
    "plateau_on_usdr": [
        "optim.monitor=valid_usdr",
        "optim.lr_decay_patience=0",
        "optim.lr_decay_gamma=0.5",
        "optim.clip_grad_norm=5.0",
    ],
}


@pytest.mark.parametrize("options", list(STATEFUL), ids=list(STATEFUL))
def test_resume_equals_uninterrupted_with_stateful_options(
    hq_tree: Path, tmp_path: Path, options: str
) -> None:
    extra = STATEFUL[options]
    train(_config(hq_tree, tmp_path / "straight", 3, *extra), progress=False)

    def interrupt(epoch: int, row: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    interrupted = _config(hq_tree, tmp_path / "resumed", 3, *extra)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, progress=False, on_epoch_end=interrupt)
    train(interrupted, progress=False)
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    a, b = straight["training_state"], resumed["training_state"]
    assert [r["lr"] for r in a["history"]] == [r["lr"] for r in b["history"]]
    assert [r["valid_usdr"] for r in a["history"]] == [r["valid_usdr"] for r in b["history"]]
    assert a["scheduler"] == b["scheduler"]


def test_step_schedule_and_batch_rescaled_learning_rate(hq_tree: Path, tmp_path: Path) -> None:
    # lr 0.01 × (batch 4 × accumulate 2) / 16 = 0.005, then halved after every epoch.
    extra = ["optim.scheduler=step", "optim.step_size=1", "optim.gamma=0.5"]
    extra += ["optim.accumulate=2", "optim.lr_scale_batch=16", "data.samples_per_track=6"]
    train(_config(hq_tree, tmp_path / "run", 3, *extra), progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [row["lr"] for row in history] == pytest.approx([0.0025, 0.00125, 0.000625])
    steps = load_checkpoint(tmp_path / "run" / "last.pt")["training_state"]["optimizer"]
    # 2 training tracks × 6 excerpts = 3 batches of 4 per epoch → 2 steps (groups of 2 and 1).
    assert all(int(s["step"]) == 6 for s in steps["state"].values())


def test_step_every_two_epochs_and_no_schedule(hq_tree: Path, tmp_path: Path) -> None:
    train(
        _config(hq_tree, tmp_path / "step", 4, "optim.scheduler=step", "optim.gamma=0.98"),
        progress=False,
    )
    lrs = [row["lr"] for row in json.loads((tmp_path / "step" / "history.json").read_text())]
    assert lrs == pytest.approx([0.01, 0.0098, 0.0098, 0.009604])
    train(_config(hq_tree, tmp_path / "none", 2, "optim.scheduler=none"), progress=False)
    lrs = [row["lr"] for row in json.loads((tmp_path / "none" / "history.json").read_text())]
    assert lrs == [0.01, 0.01]


def test_accumulated_small_batches_equal_one_large_batch(hq_tree: Path, tmp_path: Path) -> None:
    # A band-split model (GroupNorm: no batch statistics, no dropout) and a mean loss: two
    # accumulated batches of 2 give the gradient of the batch of 4 of the same excerpts.
    def config(run: str, *extra: str) -> TrainConfig:
        overrides = [f"data.root={hq_tree}", f"run_dir={tmp_path / run}", "optim.epochs=1"]
        overrides += ["model.name=bsrnn", "model.input_statistics=false", "optim.loss=l1"]
        overrides += [
            "model.kwargs={n_features: 8, n_layers: 1, n_fft: 256, n_hop: 64, layout: [[1000, 8]]}"
        ]
        overrides += ["data.segment=0.5", "data.samples_per_track=4", "optim.batch_size=4"]
        return resolve_config(None, [*overrides, *extra])

    train(config("large"), progress=False)
    train(config("small", "optim.batch_size=2", "optim.accumulate=2"), progress=False)
    large = load_checkpoint(tmp_path / "large" / "last.pt")["state_dict"]
    accumulated = load_checkpoint(tmp_path / "small" / "last.pt")["state_dict"]
    for key, value in large.items():
        torch.testing.assert_close(accumulated[key], value, rtol=1e-4, atol=1e-6)


def test_usdr_monitor_scores_the_validation_track_and_keeps_its_best(
    hq_tree: Path, tmp_path: Path
) -> None:
    from stemkit.data.musdb import MusdbHQ
    from stemkit.inference import separate
    from stemkit.metrics.sdr import usdr

    run_dir = tmp_path / "run"
    extra = ["optim.monitor=valid_usdr", "optim.valid_segment=1.5"]
    config = _config(hq_tree, run_dir, 3, *extra)
    train(config, progress=False)
    history = json.loads((run_dir / "history.json").read_text())
    assert all("valid_usdr" in row and "valid_loss" in row for row in history)
    best_row = max(history, key=lambda row: row["valid_usdr"])

    model = model_from_checkpoint(load_checkpoint(run_dir / "best.pt"))
    valid = MusdbHQ(hq_tree, split="valid", segment=None, seed=42, valid_fraction=0.15)
    scores = []
    for index in range(len(valid)):
        stems, _ = valid[index]
        estimate = separate(model, stems.sum(dim=0), segment=1.5, overlap=0.1)
        scores.append(usdr(stems.numpy(), estimate.numpy()).mean())
    assert float(sum(scores) / len(scores)) == pytest.approx(best_row["valid_usdr"], abs=1e-4)

    lines = (run_dir / "history.csv").read_text().splitlines()
    assert lines[0].split(",")[:4] == ["epoch", "train_loss", "valid_loss", "valid_usdr"]
    assert len(lines) == 4
    assert (run_dir / "learning_curve.png").stat().st_size > 1000


def test_bad_choices_name_the_option() -> None:
    with pytest.raises(StemkitError, match=r"optim\.scheduler='cosine'.*plateau"):
        resolve_config(None, ["optim.scheduler=cosine"])
    with pytest.raises(StemkitError, match=r"optim\.monitor"):
        resolve_config(None, ["optim.monitor=valid_sdr"])
    with pytest.raises(StemkitError, match=r"optim\.accumulate=0"):
        resolve_config(None, ["optim.accumulate=0"])


def test_a_run_saved_before_new_options_still_resumes(tmp_path: Path) -> None:
    from stemkit.artifacts.checkpoint import save_checkpoint
    from stemkit.train.config import config_to_dict
    from stemkit.train.loop import check_same_run

    config = config_to_dict(resolve_config(None, []))
    old = {**config, "optim": {k: v for k, v in config["optim"].items() if k != "monitor"}}
    from stemkit import models

    model = models.build("identity", sources=["vocals"])
    save_checkpoint(tmp_path / "last.pt", model, config=old)
    check_same_run(tmp_path, config)  # the missing key takes today's default: same run
    changed = {**config, "optim": {**config["optim"], "monitor": "valid_usdr"}}
    with pytest.raises(StemkitError, match="different configuration"):
        check_same_run(tmp_path, changed)


def test_validation_chunks_cover_the_track() -> None:
    from stemkit.train.loop import _chunk_bounds

    assert _chunk_bounds(9, 4) == [(0, 4), (4, 9)]
    assert _chunk_bounds(11, 4) == [(0, 4), (4, 8), (8, 11)]
    assert _chunk_bounds(3, 4) == [(0, 3)]
