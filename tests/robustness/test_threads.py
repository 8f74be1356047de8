"""Thread policy: the default follows the cores really free; ``--threads`` overrides it."""

from __future__ import annotations

import pytest
import torch

from stemkit.cli.main import main
from stemkit.runtime import available_cores, choose_threads


def test_default_leaves_busy_cores_to_their_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("stemkit.runtime.available_cores", lambda: 2)
    assert choose_threads(load=0.1) == 2
    assert choose_threads(load=1.0) == 1  # another process holds one of the two cores
    assert choose_threads(load=7.5) == 1  # never below one
    monkeypatch.setattr("stemkit.runtime.available_cores", lambda: 16)
    assert choose_threads(load=3.4) == 13


def test_environment_and_flag_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(load=10.0) == 3
    assert choose_threads(2, load=10.0) == 2
    with pytest.raises(ValueError, match="positive"):
        choose_threads(0)


def test_available_cores_respects_affinity() -> None:
    import os

    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))


def test_threads_flag_reaches_torch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = torch.get_num_threads()
    try:
        assert main(["models", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
        assert main(["models", "--threads", "0"]) == 2
        assert "--threads must be a positive integer" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
