"""Time and energy of a piece of work, as the Green Algorithms calculator estimates them.

Green Algorithms (Lannelongue, Grealey and Inouye, 2021) estimates the energy of a computation
as ``runtime × (cores × power per core × core usage + memory GB × power per GB) × PUE``, and
its carbon as that energy times the grid's carbon intensity. The constants are stated beside
every figure, so that a reader can redo the sum with their own.

Training keeps a ledger of such spans per epoch (:mod:`stemkit.train.ledger`). Separation and
evaluation measure each song with a :class:`Meter`: there the ``cores × core usage × runtime``
product is not assumed but measured, as the CPU time the process spent (all its threads), so a
separation that waits on the disk or shares the machine is not charged for cores it did not use.

Beside the estimate, :class:`CodeCarbon` runs CodeCarbon's offline tracker over the same spans
(an epoch, a song) where it can measure: RAPL or NVML counters where the machine exposes them,
its own power model elsewhere. It never touches the network, writes no files and covers the
whole machine; where it cannot run, its figure is None and it says why.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

from stemkit.errors import StemkitError

__all__ = [
    "CodeCarbon",
    "GreenAlgorithmsConstants",
    "Meter",
    "Span",
    "check_country",
    "total",
]


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
        codecarbon_kwh: CodeCarbon's measurement of the span, or None.
    """

    seconds: float
    cpu_seconds: float
    memory_gb: float
    energy_kwh: float
    carbon_g: float
    #: What CodeCarbon measured over the span (the whole machine), None when it did not.
    codecarbon_kwh: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        """The span as stored in JSON files."""
        return asdict(self)


def total(spans: list[Span] | list[dict[str, Any]]) -> dict[str, Any]:
    """Sums of the spans' times, energy and carbon (and their peak memory), as a dict.

    ``codecarbon_kwh`` is the sum of CodeCarbon's measurements when every span has one, else
    None: a total of some measured spans would under-count silently.
    """
    rows: list[dict[str, Any]] = [
        span.to_dict() if isinstance(span, Span) else span for span in spans
    ]
    sums: dict[str, Any] = {
        key: sum(float(row[key]) for row in rows)
        for key in ("seconds", "cpu_seconds", "energy_kwh", "carbon_g")
    }
    sums["memory_gb"] = max((float(row["memory_gb"]) for row in rows), default=0.0)
    measured = [row.get("codecarbon_kwh") for row in rows]
    complete = bool(measured) and all(value is not None for value in measured)
    sums["codecarbon_kwh"] = sum(float(v) for v in measured if v is not None) if complete else None
    return sums


def check_country(code: str) -> str:
    """``code`` upper-cased, if CodeCarbon has an energy mix for it (ISO 3166 alpha-3).

    Given a code it does not know, CodeCarbon's offline tracker starts anyway and logs an
    error at every span; this refuses it before any work instead. Where CodeCarbon is not
    installed (or its data cannot be read) the code is not checked: the tracker then says why
    it cannot measure.

    Raises:
        StemkitError: a code CodeCarbon does not know.
    """
    upper = code.upper()
    try:
        from codecarbon.input import DataSource

        known = DataSource().get_global_energy_mix_data()
    except Exception:  # missing or changed package: CodeCarbon reports its own reason
        return upper
    if upper not in known:
        raise StemkitError(
            f"--codecarbon {code}: not a country CodeCarbon has an energy mix for; give an "
            "ISO 3166 alpha-3 code such as USA, FRA, DEU or GBR"
        )
    return upper


class CodeCarbon:
    """CodeCarbon's offline tracker, measuring consecutive spans: ``start()``, ``stop()``.

    Nothing is raised: if CodeCarbon is missing or fails, :meth:`stop` gives None from then on
    and :attr:`reason` says why.

    Args:
        country_iso_code: the grid whose carbon intensity CodeCarbon applies (e.g. ``FRA``).
        tracker: a tracker to use instead of building CodeCarbon's (for tests).
    """

    def __init__(self, country_iso_code: str = "USA", tracker: Any = None) -> None:
        self.country_iso_code = country_iso_code
        #: Why there is no figure (None while CodeCarbon measures).
        self.reason: str | None = None
        self.tracker = tracker if tracker is not None else self._build()
        self._kwh = 0.0  # the tracker's cumulative energy at the last stop

    def _build(self) -> Any:
        try:
            from codecarbon import OfflineEmissionsTracker
        except ImportError as error:
            self.reason = f"codecarbon is not installed ({error})"
            return None
        # Its constructor logs at INFO before the log_level argument takes effect.
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        options: dict[str, Any] = dict(
            country_iso_code=self.country_iso_code,
            log_level="error",
            allow_multiple_runs=True,
            tracking_mode="machine",
        )
        try:
            try:
                # No output method: no emissions.csv, no API, no logger lines.
                return OfflineEmissionsTracker(output_methods=[], **options)
            except TypeError:  # CodeCarbon < 3 names it differently
                return OfflineEmissionsTracker(save_to_file=False, **options)
        except Exception as error:  # any failure of the tracker is recorded, never raised
            self.reason = f"CodeCarbon could not start: {error}"
            return None

    @property
    def measuring(self) -> bool:
        """Whether the tracker still runs (it has not failed)."""
        return self.tracker is not None

    def start(self) -> None:
        """Start measuring a span."""
        if self.tracker is None:
            return
        try:
            self.tracker.start()
        except Exception as error:
            self._drop(f"CodeCarbon failed to start: {error}")

    def stop(self) -> float | None:
        """End the span: the kWh CodeCarbon measured since :meth:`start`, or None."""
        if self.tracker is None:
            return None
        try:
            self.tracker.stop()
            cumulative = float(self.tracker.final_emissions_data.energy_consumed)
        except Exception as error:
            self._drop(f"CodeCarbon failed to measure: {error}")
            return None
        # The tracker keeps counting across start/stop: a span is the increase.
        kwh = cumulative - self._kwh
        self._kwh = cumulative
        return kwh if kwh >= 0 else cumulative

    def close(self) -> None:
        """Stop a tracker left running by an interrupted span (the span is not recorded)."""
        if self.tracker is not None:
            self.stop()
            self.tracker = None

    def _drop(self, reason: str) -> None:
        self.tracker = None
        self.reason = reason


class Meter:
    """Measures the span of a ``with`` block: ``with Meter() as meter: ...; meter.span``.

    Args:
        constants: the Green Algorithms constants (default: world averages).
        codecarbon: also measure the block with this tracker (``span.codecarbon_kwh``).
    """

    def __init__(
        self,
        constants: GreenAlgorithmsConstants | None = None,
        codecarbon: CodeCarbon | None = None,
    ) -> None:
        self.constants = constants or GreenAlgorithmsConstants()
        self.codecarbon = codecarbon
        self._wall = 0.0
        self._cpu = 0.0
        self.span: Span | None = None

    def __enter__(self) -> Meter:
        if self.codecarbon is not None:
            self.codecarbon.start()
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
            codecarbon_kwh=None if self.codecarbon is None else self.codecarbon.stop(),
        )

    def record(self) -> dict[str, Any]:
        """The measured span with the constants it used, for a JSON file.

        Raises:
            RuntimeError: the block has not ended yet.
        """
        if self.span is None:
            raise RuntimeError("Meter.record called before the measured block ended")
        record: dict[str, Any] = {
            **self.span.to_dict(),
            "method": "Green Algorithms estimate from the process's CPU time and peak memory",
            "constants": asdict(self.constants),
        }
        if self.codecarbon is not None:
            record["codecarbon"] = {
                "country_iso_code": self.codecarbon.country_iso_code,
                "reason": self.codecarbon.reason,
            }
        return record


def _peak_memory_gb() -> float:
    """Peak resident memory of this process in GB (``ru_maxrss`` is KiB on Linux, bytes on
    macOS); 0 where the platform has no ``resource`` module (Windows)."""
    try:
        import resource
    except ImportError:
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 30) if sys.platform == "darwin" else peak / (1 << 20)
