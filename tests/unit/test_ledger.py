"""The cost ledger: Green Algorithms always, CodeCarbon where it can measure, never a crash."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from stemkit.energy import CodeCarbon
from stemkit.train.ledger import CostLedger, GreenAlgorithmsConstants


def test_green_algorithms_estimate_is_the_stated_sum() -> None:
    ledger = CostLedger(nb_cores=4, memory_gb=8.0, constants=GreenAlgorithmsConstants())
    ledger.epochs.append({"epoch": 0.0, "seconds": 3600.0, "codecarbon_kwh": None})
    totals = ledger.totals()
    watts = 4 * 12.0 * 1.0 + 8.0 * 0.3725
    assert totals["energy_kwh"] == pytest.approx(watts * 1.67 / 1000)
    assert totals["carbon_g"] == pytest.approx(totals["energy_kwh"] * 475.0)
    assert totals["core_hours"] == pytest.approx(4.0)
    assert totals["codecarbon_kwh"] is None
    two_nodes = CostLedger(nb_cores=4, memory_gb=8.0, nb_nodes=2, epochs=list(ledger.epochs))
    assert two_nodes.totals()["energy_kwh"] == pytest.approx(2 * totals["energy_kwh"])


def test_missing_codecarbon_gives_none_and_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # import raises ImportError
    ledger = CostLedger()
    ledger.use_codecarbon("FRA")
    ledger.start()
    row = ledger.stop(0)
    assert row["codecarbon_kwh"] is None and row["energy_kwh"] > 0
    assert "not installed" in str(ledger.to_dict()["codecarbon"]["reason"])


def test_a_failing_tracker_is_recorded_not_raised() -> None:
    class Broken:
        def start(self) -> None:
            raise RuntimeError("no power source")

    ledger = CostLedger(codecarbon_reason=None)
    ledger._codecarbon = CodeCarbon("FRA", tracker=Broken())
    ledger.start()
    row = ledger.stop(0)
    assert row["codecarbon_kwh"] is None
    assert "no power source" in str(ledger.codecarbon_reason)


def test_codecarbon_measures_epochs_or_says_why(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # any stray output file would land here
    ledger = CostLedger()
    ledger.use_codecarbon("FRA")
    for epoch in range(2):
        ledger.start()
        sum(i * i for i in range(200_000))
        ledger.stop(epoch)
    ledger.close()
    data = ledger.to_dict()
    values = [row["codecarbon_kwh"] for row in data["epochs"]]
    if data["codecarbon"]["reason"] is None:
        assert all(v is not None and v >= 0 for v in values)
        assert data["totals"]["codecarbon_kwh"] == pytest.approx(sum(values))
    else:
        assert data["totals"]["codecarbon_kwh"] is None
    assert list(tmp_path.iterdir()) == []
    again = CostLedger.from_dict(json.loads(json.dumps(data)))
    assert again.to_dict()["epochs"] == data["epochs"]
    assert again.totals() == data["totals"]


def test_a_ledger_saved_before_codecarbon_still_loads() -> None:
    old = {
        "nb_cores": 2,
        "memory_gb": 4.0,
        "constants": {
            "watts_per_core": 12.0,
            "core_usage": 1.0,
            "watts_per_gb_memory": 0.3725,
            "pue": 1.67,
            "carbon_g_per_kwh": 475.0,
        },
        "epochs": [{"epoch": 0.0, "seconds": 10.0, "energy_kwh": 1e-4, "carbon_g": 0.05}],
    }
    ledger = CostLedger.from_dict(old)
    assert ledger.totals()["codecarbon_kwh"] is None
    assert ledger.codecarbon_reason


def test_a_training_run_fills_the_ledger_and_history(hq_tree: Path, tmp_path: Path) -> None:
    from stemkit.artifacts.checkpoint import load_checkpoint
    from stemkit.train.config import resolve_config
    from stemkit.train.loop import train

    overrides = [f"data.root={hq_tree}", f"run_dir={tmp_path / 'run'}", "optim.epochs=1"]
    overrides += ["model.name=bsrnn", "model.input_statistics=false", "optim.loss=l1"]
    overrides += ["model.kwargs.n_features=8", "model.kwargs.n_layers=1"]
    overrides += ["model.kwargs.n_fft=256", "model.kwargs.n_hop=64"]
    overrides += ["model.kwargs.layout=[[1000,8]]", "data.segment=0.5"]
    overrides += ["data.samples_per_track=2", "optim.batch_size=4"]
    overrides += ["ledger.codecarbon=true", "ledger.country_iso_code=FRA"]
    train(resolve_config(None, overrides), progress=False)
    ledger = load_checkpoint(tmp_path / "run" / "last.pt")["ledger"]
    assert ledger["totals"]["energy_kwh"] > 0 and ledger["totals"]["wall_seconds"] > 0
    assert ledger["codecarbon"]["country_iso_code"] == "FRA"
    row = json.loads((tmp_path / "run" / "history.json").read_text())[0]
    assert row["energy_kwh"] > 0
    if row["codecarbon_kwh"] is None:
        assert ledger["codecarbon"]["reason"]
    else:
        assert row["codecarbon_kwh"] >= 0 and ledger["codecarbon"]["reason"] is None
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.suffix == ".csv") == [
        "batches.csv",
        "history.csv",
    ]


def test_the_estimate_uses_the_configured_machine_and_constants(
    hq_tree: Path, tmp_path: Path
) -> None:
    from stemkit.artifacts.checkpoint import load_checkpoint
    from stemkit.train.config import resolve_config
    from stemkit.train.loop import train

    overrides = [f"data.root={hq_tree}", f"run_dir={tmp_path / 'run'}", "optim.epochs=1"]
    overrides += ["model.kwargs.hidden_size=8", "model.kwargs.n_fft=256", "model.kwargs.n_hop=64"]
    overrides += ["data.segment=0.5", "data.samples_per_track=1", "optim.batch_size=4"]
    overrides += ["ledger.codecarbon=false", "ledger.cores=3", "ledger.memory_gb=10"]
    overrides += ["ledger.watts_per_core=5", "ledger.core_usage=0.5", "ledger.pue=2.0"]
    overrides += ["ledger.watts_per_gb_memory=0.5", "ledger.carbon_g_per_kwh=100"]
    train(resolve_config(None, overrides), progress=False)
    row = load_checkpoint(tmp_path / "run" / "last.pt")["ledger"]["epochs"][0]
    # (3 cores x 5 W x 0.5 + 10 GB x 0.5 W/GB) x PUE 2 = 25 W
    assert row["energy_kwh"] == pytest.approx(row["seconds"] / 3600 * 25.0 / 1000, rel=1e-9)
    assert row["carbon_g"] == pytest.approx(row["energy_kwh"] * 100, rel=1e-9)


@pytest.mark.parametrize(
    "override", ["ledger.cores=0", "ledger.pue=0.5", "ledger.watts_per_core=-1"]
)
def test_bad_ledger_constants_name_the_key(override: str) -> None:
    from stemkit.errors import StemkitError
    from stemkit.train.config import resolve_config

    with pytest.raises(StemkitError, match=override.split("=")[0].replace(".", r"\.")):
        resolve_config(None, [override])
