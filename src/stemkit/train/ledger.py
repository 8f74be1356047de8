"""The cost ledger: what a run cost in time and energy.

The energy figure is the Green Algorithms estimate (Lannelongue et al. 2021):
``runtime × (cores × power per core × usage + memory GB × power per GB) × PUE``, and carbon is
that energy times the grid's carbon intensity. The constants are stated in every ledger so a
reader can redo the sum with their own.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class GreenAlgorithmsConstants:
    """Power and carbon constants of the estimate (defaults: Green Algorithms' world averages)."""

    watts_per_core: float = 12.0
    core_usage: float = 1.0
    watts_per_gb_memory: float = 0.3725
    pue: float = 1.67
    carbon_g_per_kwh: float = 475.0


@dataclass
class CostLedger:
    """Accumulates wall time per epoch and turns it into energy and carbon estimates."""

    nb_cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    memory_gb: float = 4.0
    constants: GreenAlgorithmsConstants = field(default_factory=GreenAlgorithmsConstants)
    epochs: list[dict[str, float]] = field(default_factory=list)
    _started: float | None = None

    def start(self) -> None:
        """Start timing a span (one epoch)."""
        self._started = time.perf_counter()

    def stop(self, epoch: int) -> dict[str, float]:
        """Close the current span and record it for ``epoch``."""
        if self._started is None:
            raise RuntimeError("CostLedger.stop called without start")
        seconds = time.perf_counter() - self._started
        self._started = None
        row = {"epoch": float(epoch), "seconds": seconds, **self._energy(seconds)}
        self.epochs.append(row)
        return row

    def _energy(self, seconds: float) -> dict[str, float]:
        c = self.constants
        watts = (
            self.nb_cores * c.watts_per_core * c.core_usage + self.memory_gb * c.watts_per_gb_memory
        )
        kwh = seconds / 3600.0 * watts * c.pue / 1000.0
        return {"energy_kwh": kwh, "carbon_g": kwh * c.carbon_g_per_kwh}

    def totals(self) -> dict[str, float]:
        """Sums over all recorded epochs."""
        seconds = sum(row["seconds"] for row in self.epochs)
        return {
            "wall_seconds": seconds,
            "device_hours": seconds / 3600.0,
            "core_hours": seconds / 3600.0 * self.nb_cores,
            **self._energy(seconds),
        }

    def to_dict(self) -> dict[str, Any]:
        """The ledger as stored in run folders and checkpoints."""
        return {
            "method": "Green Algorithms estimate",
            "nb_cores": self.nb_cores,
            "memory_gb": self.memory_gb,
            "constants": asdict(self.constants),
            "epochs": list(self.epochs),
            "totals": self.totals(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CostLedger:
        """Rebuild a ledger saved with :meth:`to_dict` (to continue it after a resume)."""
        return cls(
            nb_cores=int(data["nb_cores"]),
            memory_gb=float(data["memory_gb"]),
            constants=GreenAlgorithmsConstants(**data["constants"]),
            epochs=[dict(row) for row in data["epochs"]],
        )
