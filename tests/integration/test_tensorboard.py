"""The run's TensorBoard log holds the same per-epoch scalars as its history files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stemkit.train.config import resolve_config
from stemkit.train.loop import train

pytest.importorskip("tensorboard")


def test_tensorboard_scalars_match_the_history(hq_tree: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    overrides = [
        f"data.root={hq_tree}",
        f"run_dir={run}",
        "optim.epochs=2",
        "model.kwargs.hidden_size=16",
        "model.kwargs.n_fft=512",
        "model.kwargs.n_hop=128",
        "data.segment=1.0",
        "data.samples_per_track=2",
        "optim.batch_size=4",
    ]
    train(resolve_config(None, overrides), progress=False)
    history = json.loads((run / "history.json").read_text())
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    for key in ("train_loss", "valid_loss", "lr"):
        logged = [(event.step, event.value) for event in events.Scalars(key)]
        expected = [(row["epoch"], row[key]) for row in history]
        assert [step for step, _ in logged] == [step for step, _ in expected]
        # TensorBoard stores float32.
        assert [value for _, value in logged] == pytest.approx(
            [value for _, value in expected], rel=1e-6
        )
