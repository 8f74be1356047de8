"""The training loop: short, readable, resumable.

One run lives in one folder::

    config.yaml          the resolved configuration
    last.pt, best.pt     checkpoints (stemkit format, with checksums); ``last.pt`` carries the
                         optimiser, scheduler and history needed to resume; ``best.pt`` holds
                         the weights of the best epoch by ``optim.monitor``
    history.json/.csv    one row per epoch: losses, validation uSDR (when monitored), learning
                         rate, time, energy
    batches.csv          one row per training batch: epoch, batch, step, loss
    learning_curve.png   training and validation loss per epoch (and validation uSDR)
    tensorboard/         the same scalars, only when TensorBoard is installed

Re-running the same command in the same folder resumes from ``last.pt``. Every random draw of
an epoch derives from (seed, epoch) — the excerpts through the dataset's ``set_epoch``, the
batch order, the batch augmentation and dropout through seeds set at the start of the epoch —
so a run interrupted at any moment and resumed ends with the same weights as one that was
never interrupted (on CPU).

The loop knows models through their contract (:class:`stemkit.models.base.SeparationModel`):
``model.prepare`` before the first epoch, ``model.training_loss`` on every batch. All targets of
an Open-Unmix separator train together; its cores share no parameters, so each core sees
exactly the gradient of its own loss term, as with upstream's one-run-per-target recipe.

Lightning Fabric supplies the device, the precision and the distribution (``device``,
``devices``, ``num_nodes``, ``precision``, ``strategy`` in :class:`TrainConfig`). Under
``torchrun --nproc_per_node W`` the run is data-parallel (DDP; gloo on CPU): the epoch's
excerpts are shuffled by one permutation shared by all processes and process ``r`` takes the
items ``r, r + W, r + 2W, ...`` of it, so the global batch of a step holds exactly the items a
single process with batch ``batch_size × W`` would draw; batch norm is synchronised across
processes on GPUs (PyTorch's SyncBatchNorm does not run on CPU, where each process normalises
its own batch). Only the first process writes files. Validation runs on the first process alone and
its scores are broadcast: the validation set is a few full tracks, and scoring them in one
place keeps every number identical to a one-process run (a sharded validation would need a
length-weighted reduction of losses and of uSDR means for a small saving).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from stemkit import models
from stemkit.artifacts.checkpoint import (
    load_checkpoint,
    load_weights,
    provenance,
    save_checkpoint,
)
from stemkit.data.demucs_augment import DemucsAugment
from stemkit.data.factory import full_tracks, training_dataset
from stemkit.errors import StemkitError
from stemkit.models.base import SeparationModel
from stemkit.train.config import (
    DataConfig,
    OptimConfig,
    TrainConfig,
    config_to_dict,
    effective_lr,
    normalise_config_dict,
    save_config,
)
from stemkit.train.ledger import CostLedger, GreenAlgorithmsConstants
from stemkit.train.objectives import compute_loss
from stemkit.train.plots import learning_curve

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from lightning_fabric import Fabric

EpochCallback = Callable[[int, dict[str, Any]], None]
#: Seconds to sleep after every training batch: lets a test kill a run in mid-epoch.
BATCH_DELAY_ENV = "STEMKIT_TRAIN_BATCH_DELAY"
Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


def target_rows(stem_sources: Sequence[str], sources: Sequence[str]) -> list[int]:
    """Where each of a model's ``sources`` sits among the rows of a dataset's items.

    Raises:
        StemkitError: a source the model separates is not a stem of the dataset.
    """
    missing = [s for s in sources if s not in stem_sources]
    if missing:
        raise StemkitError(
            f"the model separates {', '.join(missing)}, which the dataset does not hold "
            f"(its stems: {', '.join(stem_sources)}); set data.sources to stems of the dataset"
        )
    return [list(stem_sources).index(s) for s in sources]


def mixture_and_targets(stems: Tensor, rows: Sequence[int]) -> tuple[Tensor, Tensor]:
    """The model's input and targets from a batch of every stem of its tracks.

    The mixture is the sum of ALL stems, not of the model's targets only: a vocals-only model
    must learn to take the vocals out of the whole song, not to copy its input.

    Args:
        stems: ``(batch, nb_stem_sources, channels, time)``, every source of each item (after
            augmentation).
        rows: the rows of the model's sources, in ``model.sources`` order (:func:`target_rows`).

    Returns:
        ``mixture`` ``(batch, channels, time)`` and ``targets`` ``(batch, nb_sources, channels,
        time)``.
    """
    mixture = stems.sum(dim=1)
    if list(rows) == list(range(stems.shape[1])):
        return mixture, stems
    return mixture, stems[:, list(rows)]


def _rows_of(dataset: Any, model: SeparationModel) -> list[int]:
    # Datasets without stem_sources hold exactly the model's sources, in its order.
    return target_rows(getattr(dataset, "stem_sources", model.sources), model.sources)


@torch.no_grad()
def validate(
    model: SeparationModel,
    dataset: Any,
    config: TrainConfig,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Validation scores over the full tracks of ``dataset``, one track at a time.

    ``valid_loss`` is the training loss, averaged over chunks of ``optim.valid_segment``
    seconds weighted by their length (one chunk per track when it is None), so that memory
    stays bounded on full-length tracks. With ``optim.monitor == "valid_usdr"`` the tracks are
    also separated with the chunked inference path (overlap ``optim.valid_overlap``) and
    ``valid_usdr`` is the MDX uSDR in dB, mean over sources and tracks. ``device`` defaults to
    ``config.device``.
    """
    from stemkit.inference import separate
    from stemkit.metrics.sdr import usdr

    optim = config.optim
    device = config.device if device is None else device
    rows = _rows_of(dataset, model)
    model.eval()
    loss_sum, loss_weight, usdrs = 0.0, 0, []
    for index in range(len(dataset)):
        stems, _ = dataset[index]  # (stem sources, channels, time): every stem of the track
        nb_samples = stems.shape[-1]
        length = nb_samples
        if optim.valid_segment is not None:
            length = max(1, round(optim.valid_segment * model.sample_rate))
        for begin, end in _chunk_bounds(nb_samples, length):
            mixture, targets = mixture_and_targets(stems[None, ..., begin:end].to(device), rows)
            loss_sum += float(compute_loss(model, mixture, targets, optim.loss)) * (end - begin)
            loss_weight += end - begin
        if optim.monitor == "valid_usdr":
            mixture, targets = mixture_and_targets(stems[None], rows)
            estimates = separate(
                model,
                mixture[0],
                segment=optim.valid_segment,
                overlap=optim.valid_overlap,
                device=device,
            )
            usdrs.append(float(usdr(targets[0].numpy(), estimates.numpy()).mean()))
    scores = {"valid_loss": loss_sum / max(loss_weight, 1)}
    if optim.monitor == "valid_usdr":
        scores["valid_usdr"] = sum(usdrs) / max(len(usdrs), 1)
    return scores


def build_optimizer(model: torch.nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """Adam or AdamW at the (batch-rescaled) learning rate of ``optim``."""
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optim.optimizer]
    return kind(model.parameters(), lr=effective_lr(optim), weight_decay=optim.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig) -> Scheduler | None:
    """The learning-rate schedule of ``optim.scheduler`` (None for ``"none"``)."""
    if optim.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=optim.step_size, gamma=optim.gamma
        )
    if optim.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max" if _maximise(optim.monitor) else "min",
            factor=optim.lr_decay_gamma,
            patience=optim.lr_decay_patience,
            cooldown=10,
        )
    return None


def train(
    config: TrainConfig,
    *,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> Path:
    """Train as ``config`` says, resuming the run in ``config.run_dir`` if one is there.

    Args:
        config: the resolved configuration.
        progress: show progress bars.
        on_epoch_end: called with (epoch, history row) after each epoch's checkpoint is saved.

    Returns:
        The path of the best checkpoint.
    """
    fabric = _fabric(config)
    fabric.launch()
    leader = fabric.is_global_zero
    progress = progress and leader
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_dict = config_to_dict(config)
    check_same_run(run_dir, config_dict)
    if leader:
        save_config(config, run_dir / "config.yaml")

    train_set = training_dataset(config.data, seed=config.seed)
    valid_set = full_tracks(config.data, "valid", seed=config.seed)
    torch.manual_seed(config.seed)
    model = models.build(
        config.model.name, sources=list(config.data.sources), **config.model.kwargs
    )
    optim = config.optim
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim)
    ledger = new_ledger(config)
    history: list[dict[str, Any]] = []
    start_epoch = 0

    last_path = run_dir / "last.pt"
    resumed: dict[str, Any] | None = None
    if last_path.is_file():
        resumed = load_checkpoint(last_path)
        state = resumed["training_state"]
        load_weights(
            model,
            resumed["state_dict"],
            last_path,
            hint="it was saved by another model configuration; choose another run folder "
            "(run_dir=...) or delete it to start over",
        )
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        history = list(state["history"])
        start_epoch = int(state["epoch"]) + 1
        ledger = CostLedger.from_dict(resumed["ledger"])
        if leader:
            logger.info("resuming %s at epoch %d", run_dir, start_epoch)
    elif config.model.input_statistics:
        # The model's recipe step (Open-Unmix: input statistics); every process computes the
        # same from the same files, so nothing needs broadcasting.
        model.prepare(full_tracks(config.data, "train", seed=config.seed), progress=progress)
    if fabric.world_size > 1 and fabric.device.type != "cpu":
        # PyTorch's SyncBatchNorm runs on accelerators only; DDP on CPU keeps per-process
        # batch statistics (models with group/layer norm are unaffected).
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # The loss runs inside the wrapped module so that DDP sees a forward for every backward.
    step_module, step_optimizer = fabric.setup(_Objective(model, optim.loss), optimizer)
    if resumed is not None:
        # After setup, so that the moments land on the parameters' device.
        optimizer.load_state_dict(resumed["training_state"]["optimizer"])
    if leader and config.ledger.codecarbon:
        ledger.use_codecarbon(config.ledger.country_iso_code)

    # Checked before the first epoch: a target the data lacks is a configuration error.
    rows = _rows_of(train_set, model)
    run_provenance = provenance(seed=config.seed, data_fingerprint=train_set.fingerprint())
    run_logger = _RunLogger(run_dir) if leader else None
    try:
        for epoch in range(start_epoch, optim.epochs):
            if _epochs_since_best(history, optim.monitor) >= optim.patience:
                break
            ledger.start()
            batch_losses: list[float] = []
            train_loss = _train_one_epoch(
                fabric,
                step_module,
                step_optimizer,
                train_set,
                config,
                epoch,
                progress,
                rows,
                batch_losses,
            )
            scores = validate(model, valid_set, config, fabric.device) if leader else {}
            if fabric.world_size > 1:
                scores = fabric.broadcast(scores, src=0)
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(scores[optim.monitor])
            elif scheduler is not None:
                scheduler.step()
            cost = ledger.stop(epoch)
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                **scores,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": cost["seconds"],
                "energy_kwh": cost["energy_kwh"],
                "codecarbon_kwh": cost["codecarbon_kwh"],
            }
            history.append(row)
            improved = _epochs_since_best(history, optim.monitor) == 0
            if leader:
                meta = dict(config=config_dict, provenance=run_provenance, ledger=ledger.to_dict())
                if improved:
                    save_checkpoint(run_dir / "best.pt", model, **meta)
                training_state = {
                    "epoch": epoch,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": None if scheduler is None else scheduler.state_dict(),
                    "history": history,
                    "best_score": row[optim.monitor] if improved else None,
                }
                save_checkpoint(last_path, model, training_state=training_state, **meta)
                assert run_logger is not None
                run_logger.log(history)
                write_batch_losses(run_dir / "batches.csv", epoch, batch_losses)
            if leader:
                logger.info("%s", _epoch_line(row, optim.monitor, improved))
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
    finally:
        ledger.close()
        if run_logger is not None:
            run_logger.close()
    return run_dir / "best.pt"


def _fabric(config: TrainConfig) -> Fabric:
    """The Fabric of ``config``: accelerator, processes, nodes, strategy and precision."""
    from lightning_fabric import Fabric

    accelerator, devices = config.device, config.devices
    chosen: int | list[int]
    if accelerator.startswith("cuda:"):
        accelerator, chosen = "cuda", [int(accelerator.split(":", 1)[1])]
    elif devices == "auto":
        # torchrun tells each process how many it started on this node.
        chosen = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    else:
        chosen = int(devices)
    precision: Any = config.precision
    return Fabric(
        accelerator=accelerator,
        devices=chosen,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=precision,
    )


class _Objective(torch.nn.Module):
    """The model and its training loss as one module: ``forward(mixture, stems) -> loss``."""

    def __init__(self, model: SeparationModel, loss: str) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, mixture: Tensor, stems: Tensor) -> Tensor:
        return compute_loss(self.model, mixture, stems, self.loss)


def new_ledger(config: TrainConfig) -> CostLedger:
    """An empty cost ledger with the machine and the constants of ``config.ledger``."""
    costs = config.ledger
    constants = GreenAlgorithmsConstants(
        watts_per_core=costs.watts_per_core,
        core_usage=costs.core_usage,
        watts_per_gb_memory=costs.watts_per_gb_memory,
        pue=costs.pue,
        carbon_g_per_kwh=costs.carbon_g_per_kwh,
    )
    return CostLedger(
        nb_cores=costs.cores or os.cpu_count() or 1,
        memory_gb=costs.memory_gb,
        constants=constants,
        nb_nodes=config.num_nodes,
    )


def run_finished(config: TrainConfig) -> bool:
    """Whether the run in ``config.run_dir`` has used its epochs or stopped early."""
    last_path = Path(config.run_dir) / "last.pt"
    if not last_path.is_file():
        return False
    state = load_checkpoint(last_path)["training_state"]
    history = list(state["history"])
    return (
        int(state["epoch"]) + 1 >= config.optim.epochs
        or _epochs_since_best(history, config.optim.monitor) >= config.optim.patience
    )


def _train_one_epoch(
    fabric: Fabric,
    objective: Any,
    optimizer: Any,
    dataset: Any,
    config: TrainConfig,
    epoch: int,
    progress: bool,
    rows: Sequence[int],
    batch_losses: list[float] | None = None,
) -> float:
    """One pass over this process's share of the epoch's excerpts; returns the mean batch loss.

    Each batch's loss is appended to ``batch_losses`` when given (this process's batches).

    ``objective`` and ``optimizer`` are the Fabric-wrapped :class:`_Objective` and optimiser;
    ``rows`` are the model's targets among the stems of an item (:func:`target_rows`).
    With ``optim.accumulate`` > 1 the gradients of that many batches are averaged before each
    optimiser step (the last group of the epoch may be shorter: it is averaged over its size);
    under DDP the gradients are only exchanged on the last batch of a group.
    """
    optim = config.optim
    world = fabric.world_size
    # Seeds derived from (seed, epoch) make the epoch replayable after a resume.
    torch.manual_seed(config.seed * 100_003 + epoch)
    dataset.set_epoch(epoch)
    # One permutation (seeded by seed, epoch) for all processes; process r takes P[r::world].
    # drop_last trims the few items that would not share evenly instead of repeating some.
    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset,
        num_replicas=world,
        rank=fabric.global_rank,
        shuffle=True,
        seed=config.seed * 7919,
        drop_last=True,
    )
    sampler.set_epoch(epoch)
    loader = DataLoader(
        dataset,
        batch_size=optim.batch_size,
        sampler=sampler,
        drop_last=len(sampler) >= optim.batch_size,
        num_workers=config.data.num_workers,
    )
    augment = batch_augmentation(config.data, dataset.sample_rate)
    # Its own generator, per (seed, epoch, process): replayable, and independent of the model.
    generator = torch.Generator().manual_seed(
        (config.seed * 1_000_003 + epoch) * 1009 + fabric.global_rank
    )
    delay = float(os.environ.get(BATCH_DELAY_ENV, "0") or 0)
    objective.train()
    total, nb_batches = 0.0, len(loader)
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=not progress, leave=False)
    optimizer.zero_grad(set_to_none=True)
    for index, (stems, _) in enumerate(bar):
        group_start = index - index % optim.accumulate
        group_size = min(optim.accumulate, nb_batches - group_start)
        last_of_group = index + 1 == group_start + group_size
        stems = stems.to(fabric.device)
        if augment is not None:
            stems = augment(stems, generator)
        skip_sync = world > 1 and not last_of_group
        sync = fabric.no_backward_sync(objective) if skip_sync else contextlib.nullcontext()
        with sync:
            loss = objective(*mixture_and_targets(stems, rows))
            fabric.backward(loss / group_size)
        if last_of_group:
            if optim.clip_grad_norm:
                fabric.clip_gradients(objective, optimizer, max_norm=optim.clip_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        total += loss.item()
        if batch_losses is not None:
            batch_losses.append(loss.item())
        bar.set_postfix(loss=f"{total / (index + 1):.4f}")
        if delay:
            time.sleep(delay)
    mean = total / max(nb_batches, 1)
    if world > 1:
        reduced = fabric.all_reduce(torch.tensor(mean), reduce_op="mean")
        assert isinstance(reduced, Tensor)
        mean = float(reduced)
    return mean


def write_batch_losses(path: Path, epoch: int, losses: Sequence[float]) -> None:
    """Record the batch losses of ``epoch`` in ``path`` (CSV: epoch, batch, step, loss).

    ``batch`` counts within the epoch and ``step`` over the whole run, so that the loss can be
    plotted against batches (the Open-Unmix study's figure). Rows of ``epoch`` and later, left
    by a run interrupted after they were written, are replaced, so a resumed run keeps one row
    per batch. Under DDP only the leader's share of the batches is recorded.
    """
    kept: list[dict[str, str]] = []
    if path.is_file():
        with open(path, newline="") as handle:
            kept = [row for row in csv.DictReader(handle) if int(row["epoch"]) < epoch]
    step = int(kept[-1]["step"]) + 1 if kept else 0
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "batch", "step", "loss"])
        writer.writerows([row["epoch"], row["batch"], row["step"], row["loss"]] for row in kept)
        writer.writerows(
            [epoch, batch, step + batch, repr(float(loss))] for batch, loss in enumerate(losses)
        )
    tmp.replace(path)


def batch_augmentation(data: DataConfig, sample_rate: int) -> DemucsAugment | None:
    """The batch augmentation ``data.augment`` names, at ``sample_rate`` (None for "none")."""
    if data.augment != "demucs":
        return None
    return DemucsAugment(shift=round(data.shift * sample_rate), group_size=data.remix_group)


def _chunk_bounds(nb_samples: int, length: int) -> list[tuple[int, int]]:
    """Consecutive ``(begin, end)`` of ``length`` samples; a tail under half is merged."""
    bounds = [(begin, min(begin + length, nb_samples)) for begin in range(0, nb_samples, length)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < length // 2:
        bounds[-2:] = [(bounds[-2][0], nb_samples)]
    return bounds


def _maximise(monitor: str) -> bool:
    return monitor == "valid_usdr"


def _epochs_since_best(history: list[dict[str, Any]], monitor: str = "valid_loss") -> int:
    if not history:
        return 0
    values = [row[monitor] for row in history]
    best = values.index(max(values) if _maximise(monitor) else min(values))
    return len(values) - 1 - best


def _epoch_line(row: dict[str, Any], monitor: str, improved: bool) -> str:
    usdr = f" uSDR {row['valid_usdr']:.2f} dB" if "valid_usdr" in row else ""
    return (
        f"epoch {row['epoch']}: train {row['train_loss']:.5f} valid {row['valid_loss']:.5f}"
        f"{usdr}{' (best ' + monitor + ')' if improved else ''} [{row['seconds']:.1f} s]"
    )


class _RunLogger:
    """Writes the history as JSON and CSV, the learning curve, and TensorBoard scalars.

    TensorBoard is used only when ``torch.utils.tensorboard`` imports (it needs the optional
    ``tensorboard`` package); otherwise it is skipped without a word.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._writer: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, history: list[dict[str, Any]]) -> None:
        """Rewrite the history files with ``history`` and log its last row to TensorBoard."""
        (self.run_dir / "history.json").write_text(json.dumps(history, indent=2))
        columns = list(dict.fromkeys(key for row in history for key in row))
        with open(self.run_dir / "history.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(history)
        learning_curve(history, self.run_dir / "learning_curve.png")
        if self._writer is not None:
            row = history[-1]
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float):
                    self._writer.add_scalar(key, value, row["epoch"])
            self._writer.flush()

    def close(self) -> None:
        """Close the TensorBoard writer, if any."""
        if self._writer is not None:
            self._writer.close()


def check_same_run(run_dir: Path, config: dict[str, Any]) -> None:
    """Refuse to resume a run folder that was started with another configuration.

    Raises:
        StemkitError: ``run_dir/last.pt`` was saved with a different configuration (other than
            the epoch budget, which may grow between runs).
    """
    saved = run_dir / "last.pt"
    if not saved.is_file():
        return
    previous = normalise_config_dict(load_checkpoint(saved)["config"])

    def strip(c: dict[str, Any]) -> dict[str, Any]:
        return {**c, "optim": {k: v for k, v in c["optim"].items() if k != "epochs"}}

    if strip(previous) != strip(normalise_config_dict(config)):
        raise StemkitError(
            f"{run_dir} holds a run with a different configuration; choose another run folder "
            "(run_dir=...) or delete it to start over"
        )
