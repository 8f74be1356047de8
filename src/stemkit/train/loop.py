"""The training loop: short, readable, resumable.

One run lives in one folder::

    config.yaml          the resolved configuration
    last.pt, best.pt     checkpoints (stemkit format, with checksums); ``last.pt`` carries the
                         optimiser, scheduler and history needed to resume
    history.json         one row per epoch: losses, learning rate, time, energy
    learning_curve.png   training and validation loss per epoch

Re-running the same command in the same folder resumes from ``last.pt``. Every random draw of
an epoch derives from (seed, epoch) — the excerpts through ``MusdbHQ.set_epoch``, the batch
order and dropout through seeds set at the start of the epoch — so a run interrupted at any
moment and resumed ends with the same weights as one that was never interrupted (on CPU).

All targets of a ``Separator`` train together; their cores share no parameters, so each core
sees exactly the gradient of its own loss term, as with upstream's one-run-per-target recipe.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from stemkit import models
from stemkit.dsp.stft import magnitude
from stemkit.errors import StemkitError
from stemkit.losses import (
    l1_loss,
    mse_loss,
    multi_domain_loss,
    sisdr_loss,
    tf_l1_loss,
    usdr_loss,
)
from stemkit.models.base import SeparationModel
from stemkit.models.bsrnn import BSRNN
from stemkit.models.umx import OpenUnmix
from stemkit.separator import Separator
from stemkit.train.checkpoint import (
    load_checkpoint,
    provenance,
    save_checkpoint,
)
from stemkit.train.config import TrainConfig, config_to_dict, save_config
from stemkit.train.ledger import CostLedger
from stemkit.train.plots import learning_curve

EpochCallback = Callable[[int, dict[str, Any]], None]


#: Losses the trainer knows, and what each compares.
LOSSES = {
    "spectral_mse": "magnitude MSE (Open-Unmix recipe; spectrogram models)",
    "multi_domain": "X-UMX: magnitude MSE + 10 × weighted SDR, over all 2^N-2 source subsets",
    "tf_l1": "BSRNN t+tf: L1 on waveform + L1 on real and imaginary STFT parts",
    "l1": "L1 on waveforms",
    "mse": "MSE on waveforms",
    "usdr": "negative uSDR (MDX definition) on waveforms",
    "sisdr": "negative SI-SDR on waveforms",
}


def compute_loss(model: SeparationModel, mixture: Tensor, stems: Tensor, loss: str) -> Tensor:
    """The training loss of ``model`` on one batch.

    Args:
        model: the model being trained.
        mixture: ``(batch, channels, time)``.
        stems: ``(batch, sources, channels, time)``, the targets in ``model.sources`` order.
        loss: a key of :data:`LOSSES`.
    """
    if loss in ("spectral_mse", "multi_domain"):
        if not isinstance(model, Separator):
            raise StemkitError(f"loss {loss!r} needs a spectrogram model, not {model.model_name}")
        mix_stft = model.mixture_spectrogram(mixture)
        estimates = model.forward_magnitudes(magnitude(mix_stft, mono=model.nb_channels == 1))
        targets = model.magnitudes(stems)
        if loss == "spectral_mse":
            return mse_loss(estimates, targets)
        # Time-domain estimates with the mixture phase: the Wiener filter is not trained through.
        phase = mix_stft / mix_stft.abs().clamp_min(1e-8)
        waveforms = model.istft(estimates * phase.unsqueeze(1), length=mixture.shape[-1])
        return multi_domain_loss(estimates, targets, waveforms, stems, mixture)
    if loss == "tf_l1":
        if not isinstance(model, BSRNN):
            raise StemkitError(f"loss 'tf_l1' needs a band-split model, not {model.model_name}")
        waveforms, spectrograms = model.forward_with_spec(mixture)
        return tf_l1_loss(waveforms, stems, spectrograms, model.stft(stems))
    waveform_losses: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
        "l1": l1_loss,
        "mse": mse_loss,
        "usdr": usdr_loss,
        "sisdr": sisdr_loss,
    }
    if loss in waveform_losses:
        return waveform_losses[loss](model(mixture), stems)
    raise StemkitError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")


@torch.no_grad()
def fit_input_statistics(model: Separator, dataset: Any, progress: bool = False) -> None:
    """Fit the input standardisation of each spectrogram core on full training mixtures.

    As in the Open-Unmix recipe: mean and standard deviation per frequency bin over every frame
    of the channel-averaged mixture magnitude of every training track, without augmentation.
    """
    total: Tensor | None = None
    total_sq: Tensor | None = None
    count = 0
    for index in tqdm(range(len(dataset)), desc="input statistics", disable=not progress):
        stems, _ = dataset[index]
        mag = model.magnitudes(stems.sum(dim=0, keepdim=True).to(torch.float32))
        frames = mag.mean(dim=1)[0].double()  # (nb_bins, nb_frames)
        total = frames.sum(dim=1) if total is None else total + frames.sum(dim=1)
        squares = (frames**2).sum(dim=1)
        total_sq = squares if total_sq is None else total_sq + squares
        count += frames.shape[1]
    if total is None or total_sq is None or count < 2:
        raise StemkitError("no training audio to fit the input statistics on")
    mean = total / count
    # Population standard deviation, as sklearn's StandardScaler in the reference recipe.
    std = (total_sq / count - mean**2).clamp_min(0.0).sqrt()
    for core in model.target_models.values():
        assert isinstance(core, OpenUnmix)
        core.set_statistics(mean.float(), std.float())


@torch.no_grad()
def validate(model: SeparationModel, dataset: Any, loss: str, device: str) -> float:
    """Mean loss over the full validation tracks, one track at a time."""
    model.eval()
    values = []
    for index in range(len(dataset)):
        stems, _ = dataset[index]
        stems = stems.unsqueeze(0).to(device)
        values.append(float(compute_loss(model, stems.sum(dim=1), stems, loss)))
    return sum(values) / max(len(values), 1)


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
    from stemkit.data.musdb import MusdbHQ

    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_dict = config_to_dict(config)
    _check_same_run(run_dir, config_dict)
    save_config(config, run_dir / "config.yaml")

    data = config.data
    if len(data.gain) != 2:
        raise StemkitError(f"data.gain must be [low, high], got {data.gain}")
    train_set = MusdbHQ(
        data.root,
        split="train",
        sources=data.sources,
        segment=data.segment,
        samples_per_track=data.samples_per_track,
        random_mix=data.random_mix,
        gain=(data.gain[0], data.gain[1]),
        channel_swap=data.channel_swap,
        seed=config.seed,
        valid_fraction=data.valid_fraction,
    )
    valid_set = _full_tracks(config, "valid")

    torch.manual_seed(config.seed)
    model = models.build(config.model.name, sources=list(data.sources), **config.model.kwargs)
    assert isinstance(model, SeparationModel)
    model.to(config.device)
    optim = config.optim
    optimizer = torch.optim.Adam(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=optim.lr_decay_gamma, patience=optim.lr_decay_patience, cooldown=10
    )
    ledger = CostLedger()
    history: list[dict[str, Any]] = []
    best_loss = math.inf
    start_epoch = 0

    last_path = run_dir / "last.pt"
    if last_path.is_file():
        payload = load_checkpoint(last_path)
        state = payload["training_state"]
        model.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = list(state["history"])
        best_loss = float(state["best_loss"])
        start_epoch = int(state["epoch"]) + 1
        ledger = CostLedger.from_dict(payload["ledger"])
        if progress:
            print(f"resuming {run_dir} at epoch {start_epoch}")
    elif config.model.input_statistics and isinstance(model, Separator):
        fit_input_statistics(model, _full_tracks(config, "train"), progress=progress)

    run_provenance = provenance(seed=config.seed, data_fingerprint=train_set.fingerprint())
    epochs_without_improvement = _epochs_since_best(history)
    for epoch in range(start_epoch, optim.epochs):
        if epochs_without_improvement >= optim.patience:
            break
        ledger.start()
        train_loss = _train_one_epoch(model, optimizer, train_set, config, epoch, progress)
        valid_loss = validate(model, valid_set, optim.loss, config.device)
        scheduler.step(valid_loss)
        cost = ledger.stop(epoch)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "valid_loss": valid_loss,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": cost["seconds"],
            "energy_kwh": cost["energy_kwh"],
        }
        history.append(row)
        improved = valid_loss < best_loss
        if improved:
            best_loss = valid_loss
        epochs_without_improvement = _epochs_since_best(history)
        meta = dict(config=config_dict, provenance=run_provenance, ledger=ledger.to_dict())
        if improved:
            save_checkpoint(run_dir / "best.pt", model, **meta)
        training_state = {
            "epoch": epoch,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "history": history,
            "best_loss": best_loss,
        }
        save_checkpoint(last_path, model, training_state=training_state, **meta)
        (run_dir / "history.json").write_text(json.dumps(history, indent=2))
        learning_curve(history, run_dir / "learning_curve.png")
        if progress:
            print(
                f"epoch {epoch}: train {train_loss:.5f} valid {valid_loss:.5f}"
                f"{' (best)' if improved else ''} [{cost['seconds']:.1f} s]"
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    return run_dir / "best.pt"


def _train_one_epoch(
    model: SeparationModel,
    optimizer: torch.optim.Optimizer,
    dataset: Any,
    config: TrainConfig,
    epoch: int,
    progress: bool,
) -> float:
    # Seeds derived from (seed, epoch) make the epoch replayable after a resume.
    torch.manual_seed(config.seed * 100_003 + epoch)
    dataset.set_epoch(epoch)
    loader = DataLoader(
        dataset,
        batch_size=config.optim.batch_size,
        shuffle=True,
        drop_last=len(dataset) >= config.optim.batch_size,
        num_workers=config.data.num_workers,
        generator=torch.Generator().manual_seed(config.seed * 7919 + epoch),
    )
    model.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=not progress, leave=False)
    for stems, _ in bar:
        stems = stems.to(config.device)
        loss = compute_loss(model, stems.sum(dim=1), stems, config.optim.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.optim.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_grad_norm)
        optimizer.step()
        total += loss.item()
        count += 1
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)


def _full_tracks(config: TrainConfig, split: str) -> Any:
    """Whole tracks of ``split``, unaugmented (validation, input statistics)."""
    from stemkit.data.musdb import MusdbHQ

    return MusdbHQ(
        config.data.root,
        split=split,
        sources=config.data.sources,
        segment=None,
        seed=config.seed,
        valid_fraction=config.data.valid_fraction,
    )


def _epochs_since_best(history: list[dict[str, Any]]) -> int:
    if not history:
        return 0
    losses = [row["valid_loss"] for row in history]
    best = losses.index(min(losses))
    return len(losses) - 1 - best


def _check_same_run(run_dir: Path, config: dict[str, Any]) -> None:
    """Refuse to resume a run folder that was started with another configuration."""
    saved = run_dir / "last.pt"
    if not saved.is_file():
        return
    previous = load_checkpoint(saved)["config"]
    # The epoch budget may grow between runs; anything else changes what the run means.
    strip = lambda c: {**c, "optim": {k: v for k, v in c["optim"].items() if k != "epochs"}}  # noqa: E731
    if strip(previous) != strip(config):
        raise StemkitError(
            f"{run_dir} holds a run with a different configuration; choose another run folder "
            "(run_dir=...) or delete it to start over"
        )
