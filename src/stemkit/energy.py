"""Time and energy of a piece of work, as the Green Algorithms calculator estimates them.

Green Algorithms (Lannelongue, Grealey and Inouye, 2021) estimates the energy of a computation
as ``runtime × (cores × power per core × core usage + memory GB × power per GB) × PUE``, and
its carbon as that energy times the grid's carbon intensity. The constants are stated beside
every figure, so that a reader can redo the sum with their own.

Training keeps a ledger of such spans per epoch (:mod:`stemkit.train.ledger`, which also runs
CodeCarbon). Separation and evaluation measure each song with a :class:`Meter`: there the
``cores × core usage × runtime`` product is not assumed but measured, as the CPU time the
process spent (all its threads), so a separation that waits on the disk or shares the machine
is not charged for cores it did not use.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

__all__ = ["GreenAlgorithmsConstants", "Meter", "Span", "total"]


@dataclass(frozen=True)
class GreenAlgorithmsConstants:
    """Power and carbon constants of the estimate (defaults: Green Algorithms' world averages)."""

    watts_per_core: float = 12.0
    core_usage: float = 1.0
    watts_per_gb_memory: float = 0.3725
    pue: float = 1.67
    carbon_g_per_kwh: float = 475.0

    def energy_kwh(self, core_seconds: float, memory_gb_seconds: float) -> float:
        """kWh of ``core_seconds`` of fully used cores and ``memory_gb_seconds`` of memory."""
        joules = core_seconds * self.watts_per_core + memory_gb_seconds * self.watts_per_gb_memory
        return joules * self.pue / 3.6e6


@dataclass(frozen=True)
class Span:
    """What one piece of work cost.

    Attributes:
        seconds: wall-clock time.
        cpu_seconds: CPU time of the process over the span (user and system, all threads).
        memory_gb: the process's peak resident memory so far, in GB (an upper bound for the
            span).
        energy_kwh: Green Algorithms estimate from the CPU time and the memory.
        carbon_g: the energy times the constants' carbon intensity.
    """

    seconds: float
    cpu_seconds: float
    memory_gb: float
    energy_kwh: float
    carbon_g: float

    def to_dict(self) -> dict[str, float]:
        """The span as stored in JSON files."""
        return asdict(self)


def total(spans: list[Span] | list[dict[str, float]]) -> dict[str, float]:
    """Sums of the spans' times, energy and carbon (and their peak memory), as a dict."""
    rows = [span.to_dict() if isinstance(span, Span) else span for span in spans]
    sums = {
        key: sum(float(row[key]) for row in rows)
        for key in ("seconds", "cpu_seconds", "energy_kwh", "carbon_g")
    }
    sums["memory_gb"] = max((float(row["memory_gb"]) for row in rows), default=0.0)
    return sums


class Meter:
    """Measures the span of a ``with`` block: ``with Meter() as meter: ...; meter.span``.

    Args:
        constants: the Green Algorithms constants (default: world averages).
    """

    def __init__(self, constants: GreenAlgorithmsConstants | None = None) -> None:
        self.constants = constants or GreenAlgorithmsConstants()
        self._wall = 0.0
        self._cpu = 0.0
        self.span: Span | None = None

    def __enter__(self) -> Meter:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        seconds = time.perf_counter() - self._wall
        cpu_seconds = time.process_time() - self._cpu
        memory_gb = _peak_memory_gb()
        energy = self.constants.energy_kwh(cpu_seconds, memory_gb * seconds)
        self.span = Span(
            seconds=seconds,
            cpu_seconds=cpu_seconds,
            memory_gb=memory_gb,
            energy_kwh=energy,
            carbon_g=energy * self.constants.carbon_g_per_kwh,
        )

    def record(self) -> dict[str, Any]:
        """The measured span with the constants it used, for a JSON file.

        Raises:
            RuntimeError: the block has not ended yet.
        """
        if self.span is None:
            raise RuntimeError("Meter.record called before the measured block ended")
        return {
            **self.span.to_dict(),
            "method": "Green Algorithms estimate from the process's CPU time and peak memory",
            "constants": asdict(self.constants),
        }


def _peak_memory_gb() -> float:
    """Peak resident memory of this process in GB (``ru_maxrss`` is KiB on Linux, bytes on
    macOS); 0 where the platform has no ``resource`` module (Windows)."""
    try:
        import resource
    except ImportError:
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 30) if sys.platform == "darwin" else peak / (1 << 20)
