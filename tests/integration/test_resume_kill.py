"""A run killed with SIGKILL in mid-epoch and restarted ends with the weights of a run never
interrupted, bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stemkit.artifacts.checkpoint import load_checkpoint
from stemkit.train.loop import BATCH_DELAY_ENV

# Open-Unmix with 3 LSTM layers: dropout and batch norm make the replay of RNG state matter.
TINY = [
    "optim.epochs=2",
    "model.kwargs.hidden_size=16",
    "model.kwargs.n_fft=512",
    "model.kwargs.n_hop=128",
    "data.segment=1.0",
    "data.samples_per_track=4",
    "optim.batch_size=4",
    "optim.lr=0.01",
    "ledger.codecarbon=false",
]


def _command(root: Path, run_dir: Path) -> list[str]:
    command = [sys.executable, "-m", "stemkit.cli.main", "train", "--quiet"]
    return [*command, "--data", str(root), "--run-dir", str(run_dir), *TINY]


def _env(delay: float = 0.0) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(BATCH_DELAY_ENV, None)
    if delay:
        env[BATCH_DELAY_ENV] = str(delay)
    return env


@pytest.mark.slow
def test_sigkill_in_mid_epoch_then_restart_gives_the_same_weights(
    hq_tree: Path, tmp_path: Path
) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_command(hq_tree, straight), env=_env(), check=True, timeout=120)

    # 2 batches per epoch, each followed by a 1 s pause: epoch 1 lasts over 2 s.
    process = subprocess.Popen(_command(hq_tree, killed), env=_env(delay=1.0))
    try:
        deadline = time.monotonic() + 90
        while not (killed / "history.json").is_file():  # written right after last.pt
            assert process.poll() is None, "the run ended before its first epoch was saved"
            assert time.monotonic() < deadline, "no epoch saved in 90 s"
            time.sleep(0.05)
        time.sleep(0.5)  # into epoch 1's first batch or its pause
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    history = json.loads((killed / "history.json").read_text())
    assert [row["epoch"] for row in history] == [0]
    assert load_checkpoint(killed / "last.pt")["training_state"]["epoch"] == 0

    subprocess.run(_command(hq_tree, killed), env=_env(), check=True, timeout=120)
    a = load_checkpoint(straight / "last.pt")
    b = load_checkpoint(killed / "last.pt")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert [r["train_loss"] for r in a["training_state"]["history"]] == [
        r["train_loss"] for r in b["training_state"]["history"]
    ]
    assert a["training_state"]["optimizer"]["state"].keys() == (
        b["training_state"]["optimizer"]["state"].keys()
    )
