"""Run one function over many items on a Ray cluster, with a model loaded once per worker.

:func:`run` starts one actor per worker (one per GPU where the cluster has GPUs and the work
asks for them, else one per ``worker_cpus`` CPUs); each actor calls a *factory* once, which
loads the model and returns the per-item function, then applies it to the items it is sent,
one at a time. Results come back to the driver as they finish, in any order, through a
callback, which is where the caller records them (the manifest, the per-track scores).

Faults:

- An item whose function raises is a failure with the exception's message; it is not retried
  (a song that cannot be decoded will not decode on the next try) and the job goes on.
- A worker process that dies (killed, out of memory, node lost) is restarted by Ray, which
  loads the model again and retries the item it held (``max_task_retries``); an item whose
  worker died ``retries + 1`` times is a failure (``"its worker died …"``) and the job goes on
  on the restarted worker. The item's function must therefore tolerate a second run after a
  first one that died half-way; the stem-folder writer does (:mod:`stemkit.outputs`).

Ray is imported here only, so that importing stemkit never pays for it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from stemkit.errors import StemkitError

__all__ = ["Cluster", "Failure", "connect", "run"]

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Cluster:
    """Where and how wide a job runs.

    Attributes:
        address: ``None`` starts a local Ray cluster on this machine (all its cores and GPUs)
            for the job; ``"auto"`` joins the cluster already running here (``ray start``);
            ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` joins that one.
        workers: actors to start; None: one per ``worker_gpus`` GPUs when ``use_gpus`` and
            the cluster has GPUs, else one per ``worker_cpus`` CPUs of the cluster.
        worker_cpus: CPUs each worker reserves (and the torch threads Ray gives it).
        worker_gpus: GPUs each worker reserves where there are GPUs; a fraction (0.25) puts
            several workers on one GPU, so that one decodes and encodes on the CPU while
            another runs its model.
        use_gpus: reserve one GPU per worker when the cluster has GPUs (False for ``--device
            cpu``).
        retries: times an item is retried after its worker died.
    """

    address: str | None = None
    workers: int | None = None
    worker_cpus: float = 1.0
    worker_gpus: float = 1.0
    use_gpus: bool = True
    retries: int = 2

    def __post_init__(self) -> None:
        # named as the command line names them: the commands pass their options through
        if self.workers is not None and self.workers < 1:
            raise StemkitError(f"--workers must be at least 1, got {self.workers}")
        if self.worker_cpus <= 0 or self.worker_gpus <= 0:
            raise StemkitError("--worker-cpus and --worker-gpus must be above 0")
        if self.retries < 0:
            raise StemkitError(f"--retries must be 0 or more, got {self.retries}")


@dataclass(frozen=True)
class Failure:
    """An item that failed: its reason in one line (no traceback)."""

    reason: str


class Worker(Generic[ItemT, ResultT]):
    """The actor: holds what the factory built (the model) for every item it is sent."""

    def __init__(self, factory: Callable[[], Callable[[ItemT], ResultT]]) -> None:
        self.function: Callable[[ItemT], ResultT] | None = None
        self.error: str | None = None
        try:
            self.function = factory()
        except StemkitError as error:
            # Kept, not raised: the driver reports it as the command's own error in one line.
            self.error = str(error)

    def ready(self) -> tuple[str, str | None]:
        """``"host:pid"`` of the worker process, and why its factory failed (None: it did not)."""
        return f"{socket.gethostname()}:{os.getpid()}", self.error

    def apply(self, item: ItemT) -> ResultT:
        """The factory's function applied to ``item``."""
        assert self.function is not None, self.error
        return self.function(item)


def connect(address: str | None) -> bool:
    """Join or start the cluster; True when this call started (and the caller must stop) it.

    A process already connected (e.g. a test's cluster) keeps its connection.

    Raises:
        StemkitError: Ray is not installed, or the cluster cannot be reached.
    """
    try:
        import ray
    except ImportError:
        raise StemkitError(
            "--ray needs Ray: pip install 'stemkit[cluster]' (or ray) on every node"
        ) from None
    if ray.is_initialized():
        return False
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=True,
        )
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = "a local Ray cluster" if address is None else f"the Ray cluster at {address}"
        raise StemkitError(f"cannot start or join {where}: {error}") from None
    return address is None


def run(
    items: Sequence[ItemT],
    factory: Callable[[], Callable[[ItemT], ResultT]],
    on_result: Callable[[ItemT, ResultT | Failure], object],
    cluster: Cluster,
) -> int:
    """Apply ``factory()`` to every item on the connected cluster (see :func:`connect`).

    Args:
        items: the work, in the order it is handed out.
        factory: called once in every worker (and again after a worker restarts); returns the
            function applied to each item. Both must pickle (module-level functions,
            :func:`functools.partial`).
        on_result: called in this process for every item as its result arrives, with the
            result or a :class:`Failure`.
        cluster: how many workers, of which size.

    Returns:
        The number of workers used.
    """
    import ray
    from ray.exceptions import ActorDiedError, RayActorError, RayTaskError

    if not items:
        return 0
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if cluster.use_gpus else 0
    count = cluster.workers
    if count is None and gpus:
        count = max(1, int(gpus / cluster.worker_gpus))
    elif count is None:
        count = max(1, int(resources.get("CPU", 1) // cluster.worker_cpus))
    count = max(1, min(count, len(items)))
    actor: Any = ray.remote(Worker).options(
        num_cpus=cluster.worker_cpus,
        num_gpus=cluster.worker_gpus if gpus else 0,
        # A dead worker is started again (its model loaded again) however often it dies; each
        # item bounds its own retries.
        max_restarts=-1,
        max_task_retries=cluster.retries,
    )
    actors: list[Any] = [actor.remote(factory) for _ in range(count)]
    try:
        states = ray.get([worker.ready.remote() for worker in actors])
    except BaseException:
        for worker in actors:
            ray.kill(worker, no_restart=True)
        raise
    errors = [error for _, error in states if error is not None]
    if errors:
        for worker in actors:
            ray.kill(worker, no_restart=True)
        raise StemkitError(errors[0])
    logger.debug("workers: %s", ", ".join(where for where, _ in states))
    logger.info(
        "%d worker(s) on Ray (%g CPU%s each)",
        count,
        cluster.worker_cpus,
        f" and {cluster.worker_gpus:g} GPU" if gpus else "",
    )
    queue = deque(items)
    running: dict[Any, tuple[Any, ItemT]] = {}

    def give(worker: Any) -> None:
        if queue:
            item = queue.popleft()
            running[worker.apply.remote(item)] = (worker, item)

    for worker in actors:
        give(worker)
    try:
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            worker, item = running.pop(ready[0])
            result: Any
            try:
                result = ray.get(ready[0])
            except RayTaskError as error:
                cause = error.cause if error.cause is not None else error
                result = Failure(str(cause).strip().splitlines()[-1] if str(cause) else repr(cause))
            except (ActorDiedError, RayActorError) as error:
                result = Failure(
                    f"its worker died {cluster.retries + 1} time(s) while on it "
                    f"({type(error).__name__})"
                )
                logger.debug("worker died: %s", error)
            on_result(item, result)
            give(worker)
    finally:
        for worker in actors:
            ray.kill(worker, no_restart=True)
    return count
