"""Training on CPU: the loss goes down, a run resumes exactly, the run folder is complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stemkit.cli.main import main
from stemkit.errors import StemkitError
from stemkit.train.checkpoint import load_checkpoint, model_from_checkpoint
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
    from stemkit.train.loop import LOSSES, compute_loss

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
    from stemkit.train.loop import compute_loss

    model = models.build("bsrnn", sources=["vocals"], **TINY_MODELS["bsrnn"])
    stems = torch.zeros(1, 1, 2, 2048)
    with pytest.raises(StemkitError, match="spectrogram model"):
        compute_loss(model, stems.sum(dim=1), stems, "spectral_mse")
    with pytest.raises(StemkitError, match="unknown loss"):
        compute_loss(model, stems.sum(dim=1), stems, "l3")
