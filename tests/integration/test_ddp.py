"""Data-parallel training on CPU: two processes of batch 2 take the steps of one of batch 4."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stemkit.artifacts.checkpoint import load_checkpoint
from stemkit.train.config import resolve_config
from stemkit.train.loop import train

# A band-split model: group norm only (PyTorch's SyncBatchNorm does not run on CPU) and no
# dropout, so that the only difference between the runs is the order of float sums.
TINY_BSRNN = [
    "model.name=bsrnn",
    "model.input_statistics=false",
    "model.kwargs.n_features=8",
    "model.kwargs.n_layers=1",
    "model.kwargs.n_fft=256",
    "model.kwargs.n_hop=64",
    "model.kwargs.layout=[[1000,8]]",
    "optim.loss=l1",
    "optim.lr=0.01",
    "optim.epochs=1",
    "data.segment=0.5",
    "data.samples_per_track=4",
    "ledger.codecarbon=false",
]


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(
    hq_tree: Path, tmp_path: Path
) -> None:
    # 2 training tracks x 4 excerpts = 8 items: 2 steps of a global batch of 4 in both runs.
    train(
        resolve_config(
            None,
            [
                f"data.root={hq_tree}",
                f"run_dir={tmp_path / 'one'}",
                *TINY_BSRNN,
                "optim.batch_size=4",
            ],
        ),
        progress=False,
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "-m", "stemkit.cli.main", "train", "--quiet"]
    command += ["--data", str(hq_tree), "--run-dir", str(tmp_path / "two"), *TINY_BSRNN]
    command += ["optim.batch_size=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("best checkpoint") == 1  # only the first process speaks

    one = load_checkpoint(tmp_path / "one" / "last.pt")
    two = load_checkpoint(tmp_path / "two" / "last.pt")
    steps = [int(s["step"]) for s in two["training_state"]["optimizer"]["state"].values()]
    assert set(steps) == {2}
    # Measured: at most 6e-6 apart (weights of size ~0.3) after two Adam steps at lr 0.01.
    for key, value in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][key], value, rtol=1e-4, atol=5e-5)
    row_one, row_two = one["training_state"]["history"][0], two["training_state"]["history"][0]
    assert row_two["train_loss"] == pytest.approx(row_one["train_loss"], rel=1e-4)
    assert row_two["valid_loss"] == pytest.approx(row_one["valid_loss"], rel=1e-4)


def test_bf16_mixed_precision_trains_a_step_on_cpu(hq_tree: Path, tmp_path: Path) -> None:
    # Open-Unmix: BSRNN's complex masks cannot be built from bfloat16 (torch.complex refuses).
    overrides = [f"data.root={hq_tree}", f"run_dir={tmp_path / 'bf16'}", "optim.epochs=1"]
    overrides += ["model.kwargs.hidden_size=16", "model.kwargs.n_fft=512"]
    overrides += ["model.kwargs.n_hop=128", "data.segment=1.0", "data.samples_per_track=4"]
    overrides += ["optim.batch_size=4", "ledger.codecarbon=false", "precision=bf16-mixed"]
    train(resolve_config(None, overrides), progress=False)
    payload = load_checkpoint(tmp_path / "bf16" / "last.pt")
    history = payload["training_state"]["history"]
    assert len(history) == 1 and torch.isfinite(torch.tensor(history[0]["train_loss"]))
    assert payload["config"]["precision"] == "bf16-mixed"
    assert all(v.dtype != torch.bfloat16 for v in payload["state_dict"].values())


def test_bad_device_options_name_the_option() -> None:
    from stemkit.errors import StemkitError

    with pytest.raises(StemkitError, match=r"precision='fp8'.*bf16-mixed"):
        resolve_config(None, ["precision=fp8"])
    with pytest.raises(StemkitError, match=r"strategy='fsdp'"):
        resolve_config(None, ["strategy=fsdp"])
    with pytest.raises(StemkitError, match=r"devices='0'"):
        resolve_config(None, ["devices=0"])
