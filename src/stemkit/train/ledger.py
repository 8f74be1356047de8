"""The cost ledger: what a run cost in time and energy.

Two energy figures, side by side:

- ``energy_kwh``: the Green Algorithms estimate (Lannelongue et al. 2021), always there:
  ``runtime × (cores × power per core × usage + memory GB × power per GB) × PUE × nodes``;
  carbon is that energy times the grid's carbon intensity. The constants are stated in every
  ledger so a reader can redo the sum with their own.
- ``codecarbon_kwh``: what CodeCarbon's offline tracker measured (RAPL/NVML where the machine
  exposes them, its own power model elsewhere), or None where it could not run; the ledger
  then says why in ``codecarbon.reason``. The tracker never touches the network and writes no
  files; it covers the whole machine of the process that keeps the ledger.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from stemkit.energy import CodeCarbon, GreenAlgorithmsConstants

__all__ = ["CostLedger", "GreenAlgorithmsConstants"]


@dataclass
class CostLedger:
    """Accumulates wall time and energy per epoch.

    Each epoch row holds ``epoch``, ``seconds``, ``energy_kwh`` and ``carbon_g`` (Green
    Algorithms) and ``codecarbon_kwh`` (None when not measured).
    """

    nb_cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    memory_gb: float = 4.0
    constants: GreenAlgorithmsConstants = field(default_factory=GreenAlgorithmsConstants)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    #: Machines taking part; the estimate counts ``nb_cores`` on each.
    nb_nodes: int = 1
    #: Why CodeCarbon gave no figure (None while it measures or was never asked to).
    codecarbon_reason: str | None = "not enabled"
    country_iso_code: str | None = None
    _started: float | None = None
    _codecarbon: CodeCarbon | None = None

    def use_codecarbon(self, country_iso_code: str) -> None:
        """Measure the following epochs with CodeCarbon's offline tracker as well.

        Nothing is raised if CodeCarbon is missing or fails: the epochs get None and
        ``codecarbon_reason`` says why.
        """
        self.country_iso_code = country_iso_code
        self._codecarbon = CodeCarbon(country_iso_code)
        self.codecarbon_reason = self._codecarbon.reason

    def start(self) -> None:
        """Start timing (and measuring) a span: one epoch."""
        self._started = time.perf_counter()
        if self._codecarbon is not None:
            self._codecarbon.start()
            self.codecarbon_reason = self._codecarbon.reason

    def stop(self, epoch: int) -> dict[str, Any]:
        """Close the current span and record it for ``epoch``; returns its row."""
        if self._started is None:
            raise RuntimeError("CostLedger.stop called without start")
        seconds = time.perf_counter() - self._started
        self._started = None
        row: dict[str, Any] = {"epoch": float(epoch), "seconds": seconds, **self._energy(seconds)}
        row["codecarbon_kwh"] = None
        if self._codecarbon is not None:
            row["codecarbon_kwh"] = self._codecarbon.stop()
            self.codecarbon_reason = self._codecarbon.reason
        self.epochs.append(row)
        return row

    def close(self) -> None:
        """Stop a tracker left running by an interrupted epoch (its span is not recorded)."""
        self._started = None
        if self._codecarbon is not None:
            self._codecarbon.close()
            self._codecarbon = None

    def _energy(self, seconds: float) -> dict[str, float]:
        c = self.constants
        watts = (
            self.nb_cores * c.watts_per_core * c.core_usage + self.memory_gb * c.watts_per_gb_memory
        ) * self.nb_nodes
        kwh = seconds / 3600.0 * watts * c.pue / 1000.0
        return {"energy_kwh": kwh, "carbon_g": kwh * c.carbon_g_per_kwh}

    def totals(self) -> dict[str, Any]:
        """Sums over all recorded epochs.

        ``codecarbon_kwh`` is None unless CodeCarbon measured every epoch (a run resumed on a
        machine without it would otherwise under-count silently).
        """
        seconds = sum(row["seconds"] for row in self.epochs)
        measured = [row.get("codecarbon_kwh") for row in self.epochs]
        complete = bool(measured) and all(value is not None for value in measured)
        return {
            "wall_seconds": seconds,
            "device_hours": seconds / 3600.0,
            "core_hours": seconds / 3600.0 * self.nb_cores * self.nb_nodes,
            **self._energy(seconds),
            "codecarbon_kwh": sum(measured) if complete else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """The ledger as stored in run folders and checkpoints."""
        return {
            "method": "Green Algorithms estimate; CodeCarbon offline tracker",
            "nb_cores": self.nb_cores,
            "memory_gb": self.memory_gb,
            "nb_nodes": self.nb_nodes,
            "constants": asdict(self.constants),
            "codecarbon": {
                "country_iso_code": self.country_iso_code,
                "reason": self.codecarbon_reason,
            },
            "epochs": [dict(row) for row in self.epochs],
            "totals": self.totals(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CostLedger:
        """Rebuild a ledger saved with :meth:`to_dict` (to continue it after a resume).

        Ledgers saved before CodeCarbon was recorded read as unmeasured epochs.
        """
        codecarbon = data.get("codecarbon", {})
        return cls(
            nb_cores=int(data["nb_cores"]),
            memory_gb=float(data["memory_gb"]),
            constants=GreenAlgorithmsConstants(**data["constants"]),
            epochs=[{"codecarbon_kwh": None, **row} for row in data["epochs"]],
            nb_nodes=int(data.get("nb_nodes", 1)),
            codecarbon_reason=codecarbon.get("reason", "not recorded by this run"),
            country_iso_code=codecarbon.get("country_iso_code"),
        )
