"""Energy of separation and evaluation: CodeCarbon beside the Green Algorithms estimate."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from stemkit.energy import CodeCarbon, Meter, total


class FakeTracker:
    """CodeCarbon's tracker interface: a cumulative energy that grows by a known step per stop."""

    def __init__(self, steps: list[float]) -> None:
        self.steps = list(steps)
        self.final_emissions_data = SimpleNamespace(energy_consumed=0.0)
        self.running = False

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        assert self.running, "stop without start"
        self.running = False
        self.final_emissions_data.energy_consumed += self.steps.pop(0)


def test_each_span_gets_the_energy_codecarbon_measured_over_it() -> None:
    tracker = CodeCarbon("FRA", tracker=FakeTracker([0.002, 0.0005, 0.001]))
    spans = []
    for _ in range(3):
        with Meter(codecarbon=tracker) as meter:
            sum(i * i for i in range(10_000))
        assert meter.span is not None
        spans.append(meter.span)
    # the tracker counts cumulatively; each span is its own increase
    assert [s.codecarbon_kwh for s in spans] == pytest.approx([0.002, 0.0005, 0.001])
    summed = total(spans)
    assert summed["codecarbon_kwh"] == pytest.approx(0.0035)
    assert summed["energy_kwh"] == pytest.approx(sum(s.energy_kwh for s in spans))
    record = meter.record()
    assert record["codecarbon"] == {"country_iso_code": "FRA", "reason": None}
    # one unmeasured span makes the total unknown, not smaller
    with Meter() as plain:
        pass
    assert plain.span is not None and plain.span.codecarbon_kwh is None
    assert total([*spans, plain.span])["codecarbon_kwh"] is None
    assert "codecarbon" not in plain.record()


def test_a_tracker_that_fails_says_why_and_the_work_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken(FakeTracker):
        def stop(self) -> None:
            raise RuntimeError("no power counters")

    tracker = CodeCarbon("FRA", tracker=Broken([]))
    with Meter(codecarbon=tracker) as meter:
        pass
    assert meter.span is not None and meter.span.codecarbon_kwh is None
    assert "no power counters" in str(tracker.reason) and not tracker.measuring
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # import raises ImportError
    missing = CodeCarbon("FRA")
    assert "not installed" in str(missing.reason) and missing.stop() is None


def test_separate_and_evaluate_record_codecarbon_per_song(
    tmp_path: Path, hq_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stemkit.cli.main import main
    from stemkit.outputs import MARKER

    song = hq_tree / "test" / sorted(p.name for p in (hq_tree / "test").iterdir())[0]
    out = tmp_path / "out"
    argv = ["separate", str(song / "mixture.wav"), "--model", "identity", "-o", str(out)]
    assert main([*argv, "--codecarbon", "FRA"]) == 0
    cost = json.loads((out / "mixture" / MARKER).read_text())["cost"]
    assert cost["codecarbon"]["country_iso_code"] == "FRA"
    # CodeCarbon measures this machine or says why it cannot; never a crash, never a guess
    if cost["codecarbon"]["reason"] is None:
        assert cost["codecarbon_kwh"] >= 0
        assert "CodeCarbon measured" in capsys.readouterr().err
    else:
        assert cost["codecarbon_kwh"] is None
    scores = tmp_path / "scores"
    args = ["evaluate", "--model", "irm2", "--data", str(hq_tree), "--limit", "1"]
    assert main([*args, "-o", str(scores), "--codecarbon", "FRA"]) == 0
    summary = json.loads((scores / "summary.json").read_text())["cost"]
    assert "codecarbon_kwh" in summary["separation"] and "codecarbon_kwh" in summary["scoring"]
    capsys.readouterr()
    assert main([*args, "--codecarbon", "FRA", "-j", "2"]) != 0
    assert "use -j 1" in capsys.readouterr().err
    assert main([*argv[:-2], "-o", str(tmp_path / "o2"), "--codecarbon", "FRA", "--ray"]) != 0
    assert "not with --ray" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()
    # a country CodeCarbon has no energy mix for: one line before any work, nothing written
    pytest.importorskip("codecarbon")
    assert main([*argv[:-2], "-o", str(tmp_path / "o3"), "--codecarbon", "XYZ"]) == 2
    err = capsys.readouterr().err
    assert "--codecarbon XYZ" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o3").exists()
    assert main([*args, "-o", str(tmp_path / "s3"), "--codecarbon", "XYZ"]) == 2
    assert "ISO 3166" in capsys.readouterr().err and not (tmp_path / "s3").exists()
    assert main([*argv[:-2], "-o", str(tmp_path / "o4"), "--codecarbon", "fra"]) == 0  # any case
