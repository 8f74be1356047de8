"""The machine a command runs on: which device (``auto``: CUDA, then MPS, then CPU) and how
many CPU threads torch may use: the cores really free, unless the user says otherwise.

On a shared machine, torch's default (one intra-op thread per logical core) is a trap: when
another process holds a core, the OpenMP threads spin waiting for each other, and on a 2-core
machine a 60 s separation went from 8 s to up to 71 s with 2 threads against a steady 8 s
with 1 (reference/pitfalls.md). So the default is the number of cores this process may run on
(its CPU affinity and cgroup quota) less the ones other processes keep busy (the one-minute
load average), at least one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from stemkit.errors import StemkitError

if TYPE_CHECKING:
    import torch

__all__ = ["available_cores", "choose_threads", "resolve_device", "set_threads"]

_DEVICE_HELP = "use auto, cpu, cuda, cuda:N or mps"

#: cgroup v2 CPU quota of this process's group: "max 100000" or "<quota> <period>"
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores() -> int:
    """Cores this process may run on: CPU affinity, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def choose_threads(requested: int | None = None, *, load: float | None = None) -> int:
    """The intra-op thread count to use.

    Args:
        requested: what the user asked for (``--threads``); None chooses.
        load: the one-minute load average (read from the system when None).

    Returns:
        ``requested`` when given; else ``OMP_NUM_THREADS`` when set to a positive integer;
        else the available cores less the load of other processes, at least 1.

    Raises:
        ValueError: ``requested`` is not a positive integer.
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be a positive integer, got {requested}")
        return requested
    from_env = os.environ.get("OMP_NUM_THREADS", "")
    if from_env.isdigit() and int(from_env) > 0:
        return int(from_env)
    cores = available_cores()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    # This process is not running yet, so the whole load belongs to others; round it so that
    # a core more than half busy counts as taken.
    return max(1, cores - round(load))


def set_threads(requested: int | None = None) -> int:
    """Apply :func:`choose_threads` to torch's intra-op pool; returns the count set."""
    import torch

    threads = choose_threads(requested)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def resolve_device(spec: str = "auto") -> torch.device:
    """The torch device a user's ``--device`` names, checked to exist on this machine.

    Args:
        spec: ``"auto"`` (the first CUDA device, else Apple's MPS, else the CPU), ``"cpu"``,
            ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Raises:
        StemkitError: one line for a string that is not a device, a device type stemkit does
            not run on, CUDA or MPS missing, or a CUDA index out of range.
    """
    import torch

    text = spec.strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise StemkitError(f"--device {spec!r} is not a device; {_DEVICE_HELP}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise StemkitError(
                f"--device {spec}: no CUDA device is available here; use --device cpu (or auto)"
            )
        count = torch.cuda.device_count()
        index = 0 if device.index is None else device.index
        if index >= count:
            raise StemkitError(
                f"--device {spec}: this machine has {count} CUDA device(s), cuda:0 to "
                f"cuda:{count - 1}"
            )
        return torch.device("cuda", index)
    if device.type == "mps":
        if not _mps_available():
            raise StemkitError(
                f"--device {spec}: Apple's MPS is not available here; use --device cpu (or auto)"
            )
        return torch.device("mps")
    raise StemkitError(f"--device {spec}: stemkit does not run on {device.type}; {_DEVICE_HELP}")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
