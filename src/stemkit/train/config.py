"""Training configuration: dataclasses are the one place for defaults.

The data settings (:class:`DataConfig`, :class:`SadConfig`) live in :mod:`stemkit.data.config`,
with the layer that reads them; the ledger's constants default to
:class:`~stemkit.train.ledger.GreenAlgorithmsConstants`.

A run's configuration is these defaults, merged with a YAML preset, merged with dotted
command-line overrides (``optim.lr=3e-4 data.segment=4``); the resolved result is saved as
``config.yaml`` in the run folder and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the data settings are part of a run's configuration: re-exported here
from stemkit.data.config import DataConfig as DataConfig
from stemkit.data.config import SadConfig as SadConfig
from stemkit.data.config import excerpt_seconds as excerpt_seconds
from stemkit.errors import StemkitError
from stemkit.train.ledger import GreenAlgorithmsConstants


@dataclass
class ModelConfig:
    """Which registered model to build, and its constructor arguments."""

    name: str = "umx"
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Run the model's recipe step on the full training tracks first (``model.prepare``: the
    #: input standardisation of Open-Unmix cores; nothing for most models).
    input_statistics: bool = True


@dataclass
class OptimConfig:
    """Optimiser, loss, schedule and the validation that drives early stopping.

    ``scheduler`` is ``"plateau"`` (Open-Unmix: multiply the rate by ``lr_decay_gamma`` after
    ``lr_decay_patience`` epochs without improvement of the monitored value), ``"step"``
    (BSRNN replication: multiply by ``gamma`` every ``step_size`` epochs) or ``"none"``.
    ``monitor`` is ``"valid_loss"`` (minimised) or ``"valid_usdr"`` (maximised: the validation
    tracks are separated in chunks of ``valid_segment`` seconds and scored with the MDX uSDR,
    mean over sources and tracks); early stopping, the plateau schedule and ``best.pt`` follow
    it. The effective batch is ``batch_size × accumulate``; with ``lr_scale_batch`` set, the
    learning rate is ``lr × effective batch / lr_scale_batch`` (the replication's rescaling to
    its batch of 16).
    """

    loss: str = "spectral_mse"
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_scale_batch: float | None = None
    weight_decay: float = 1e-5
    batch_size: int = 16
    accumulate: int = 1
    epochs: int = 1000
    clip_grad_norm: float | None = None
    monitor: str = "valid_loss"
    valid_segment: float | None = 10.0
    valid_overlap: float = 0.1
    patience: int = 140
    scheduler: str = "plateau"
    lr_decay_patience: int = 80
    lr_decay_gamma: float = 0.3
    step_size: int = 2
    gamma: float = 0.98


@dataclass
class LedgerConfig:
    """How a run's energy is measured: the Green Algorithms estimate always, CodeCarbon too.

    ``codecarbon`` turns on CodeCarbon's offline tracker (it never touches the network; it
    measures the machine of the first process); ``country_iso_code`` picks the grid carbon
    intensity it uses (ISO 3166-1 alpha-3, e.g. ``"FRA"``, ``"USA"``).
    """

    codecarbon: bool = True
    country_iso_code: str = "USA"
    #: Green Algorithms estimate: cores counted per machine (null: this machine's count),
    #: memory in GB, and the constants (defaults: Green Algorithms' world averages; see
    #: :class:`stemkit.train.ledger.GreenAlgorithmsConstants`).
    cores: int | None = None
    memory_gb: float = 4.0
    watts_per_core: float = GreenAlgorithmsConstants.watts_per_core
    core_usage: float = GreenAlgorithmsConstants.core_usage
    watts_per_gb_memory: float = GreenAlgorithmsConstants.watts_per_gb_memory
    pue: float = GreenAlgorithmsConstants.pue
    carbon_g_per_kwh: float = GreenAlgorithmsConstants.carbon_g_per_kwh


#: Allowed values of the string options of :class:`OptimConfig`.
CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("adam", "adamw"),
    "scheduler": ("plateau", "step", "none"),
    "monitor": ("valid_loss", "valid_usdr"),
}


#: Longest training excerpt, in seconds. The published recipes train on 3 to 11 s; a longer
#: excerpt costs memory in proportion (every activation of every layer is kept for the
#: backward pass) and is almost certainly a typo for a shorter one.
MAX_SEGMENT_SECONDS = 60.0
#: Most memory the audio of one batch may take on one process: ``batch × excerpt × rate ×
#: channels × (sources + mixture) × 4`` bytes. The activations the model keeps for the backward
#: pass are tens of times this, so a batch above it fits no single GPU; the largest published
#: recipe (Demucs: 64 excerpts of 11.25 s, 1.2 GiB) stays well within it.
MAX_BATCH_AUDIO_BYTES = 4 << 30
#: Rate and channels assumed for the estimate when the data set decides them (MUSDB: 44.1 kHz
#: stereo, the most any supported format has).
_ESTIMATE_RATE = 44100
_ESTIMATE_CHANNELS = 2

#: Numeric precisions the trainer hands to Lightning Fabric.
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
#: Distribution strategies: ``auto`` is one process, or DDP when several are launched.
STRATEGIES = ("auto", "ddp")


@dataclass
class TrainConfig:
    """Everything a run depends on; the run folder name comes from ``run_dir``.

    Devices, precision and distribution go to Lightning Fabric:

    - ``device``: the accelerator, ``"cpu"``, ``"cuda"`` (or ``"cuda:N"`` for GPU N alone),
      ``"mps"`` or ``"auto"``.
    - ``devices``: processes (one device each) on this node; ``"auto"`` takes the number
      ``torchrun --nproc_per_node`` launched (1 without torchrun), or an integer.
    - ``num_nodes``: machines taking part (``torchrun --nnodes``).
    - ``precision``: ``"32-true"``, ``"bf16-mixed"`` or ``"16-mixed"`` (autocast; mixed
      precision only pays on a GPU, on a CPU it runs but is slower).
    - ``strategy``: ``"auto"`` (DDP when there is more than one process) or ``"ddp"``.

    With ``W`` processes in all, each one draws ``optim.batch_size`` excerpts per step, so the
    global batch is ``optim.batch_size × W`` (× ``optim.accumulate``).
    """

    run_dir: str = "runs/umx"
    seed: int = 42
    device: str = "cpu"
    devices: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    strategy: str = "auto"
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def resolve_config(
    preset: str | Path | None = None, overrides: list[str] | None = None
) -> TrainConfig:
    """Merge defaults, a YAML preset and dotted overrides into a checked ``TrainConfig``.

    Raises:
        StemkitError: unknown keys, wrong types or an unreadable preset, with the offending key.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.structured(TrainConfig)
        if preset is not None:
            if not Path(preset).is_file():
                raise StemkitError(f"{preset}: no such configuration file")
            merged = OmegaConf.merge(merged, OmegaConf.load(preset))
        if overrides:
            for item in overrides:
                if "=" not in item:
                    raise StemkitError(
                        f"{item!r} is not a KEY=VALUE override (a YAML preset goes after "
                        "-c/--config)"
                    )
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        # OmegaConf's message runs over several lines (full_key, object_type): keep the first,
        # and the key it is about
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        key = getattr(error, "full_key", None)
        where = f" (key {key})" if key and str(key) not in reason else ""
        raise StemkitError(f"bad training configuration: {reason}{where}") from error
    assert isinstance(config, TrainConfig)
    _check_finite(config, "", preset)
    _check_optim(config.optim, preset)
    _check_data(config.data, preset)
    _check_ledger(config.ledger, preset)
    _check_devices(config, preset)
    _check_batch_memory(config, preset)
    return config


def _check_finite(node: Any, prefix: str, preset: str | Path | None) -> None:
    """Refuse NaN and infinite numbers anywhere in the options (not the model's kwargs).

    ``nan`` and ``inf`` parse as floats and pass every ``<`` check written for ordinary numbers,
    then surface much later as an endless loop, an empty batch or a huge allocation.
    """
    where = f" (in {preset} or the overrides)" if preset is not None else ""
    for item in dataclasses.fields(node):
        value = getattr(node, item.name)
        key = f"{prefix}{item.name}"
        if dataclasses.is_dataclass(value):
            _check_finite(value, f"{key}.", preset)
            continue
        numbers = value if isinstance(value, list) else [value]
        for number in numbers:
            if isinstance(number, float) and not math.isfinite(number):
                raise StemkitError(f"{key}={value}{where}: must be a finite number")


def _check_data(data: DataConfig, preset: str | Path | None) -> None:
    where = f" (in {preset} or the overrides)" if preset is not None else ""
    if not 0 < data.segment <= MAX_SEGMENT_SECONDS:
        raise StemkitError(
            f"data.segment={data.segment}{where}: give seconds > 0 and at most "
            f"{MAX_SEGMENT_SECONDS:g} (training excerpts are a few seconds long; memory grows "
            "with them)"
        )
    if data.samples_per_track < 1:
        raise StemkitError(f"data.samples_per_track={data.samples_per_track}{where}: must be >= 1")
    if data.augment not in ("none", "demucs"):
        raise StemkitError(f"data.augment={data.augment!r}{where}: choose one of none, demucs")
    if data.shift < 0:
        raise StemkitError(f"data.shift={data.shift}{where}: give seconds >= 0")
    if data.remix_group < 1:
        raise StemkitError(f"data.remix_group={data.remix_group}{where}: must be at least 1")
    if data.sample_rate is not None and data.sample_rate < 1:
        raise StemkitError(f"data.sample_rate={data.sample_rate}{where}: give Hz >= 1, or null")


def batch_audio_bytes(config: TrainConfig) -> int:
    """Estimated bytes of the audio of one batch on one process.

    ``batch_size × excerpt samples × channels × (sources + mixture) × 4`` (float32), with
    44.1 kHz stereo where the data set decides the rate.
    """
    data = config.data
    rate = data.sample_rate or _ESTIMATE_RATE
    samples = math.ceil(excerpt_seconds(data) * rate)
    signals = len(data.sources) + 1
    return config.optim.batch_size * samples * _ESTIMATE_CHANNELS * signals * 4


def _check_batch_memory(config: TrainConfig, preset: str | Path | None) -> None:
    where = f" (in {preset} or the overrides)" if preset is not None else ""
    needed = batch_audio_bytes(config)
    if needed > MAX_BATCH_AUDIO_BYTES:
        raise StemkitError(
            f"optim.batch_size={config.optim.batch_size} x data.segment={config.data.segment}"
            f"{where}: one batch of audio alone would take {needed / 2**30:.1f} GiB (limit "
            f"{MAX_BATCH_AUDIO_BYTES / 2**30:g} GiB; the model's activations take many times "
            "more); lower data.segment or optim.batch_size and raise optim.accumulate instead"
        )


def _check_ledger(ledger: LedgerConfig, preset: str | Path | None) -> None:
    where = f" (in {preset} or the overrides)" if preset is not None else ""
    if ledger.cores is not None and ledger.cores < 1:
        raise StemkitError(f"ledger.cores={ledger.cores}{where}: must be at least 1, or null")
    for key in ("memory_gb", "watts_per_core", "core_usage", "watts_per_gb_memory"):
        if getattr(ledger, key) < 0:
            raise StemkitError(f"ledger.{key}={getattr(ledger, key)}{where}: must be >= 0")
    for key in ("pue", "carbon_g_per_kwh"):
        if getattr(ledger, key) < (1.0 if key == "pue" else 0.0):
            bound = "1 (a PUE is total over IT power)" if key == "pue" else "0"
            raise StemkitError(f"ledger.{key}={getattr(ledger, key)}{where}: must be >= {bound}")


def _check_devices(config: TrainConfig, preset: str | Path | None) -> None:
    where = f" (in {preset} or the overrides)" if preset is not None else ""
    if config.precision not in PRECISIONS:
        raise StemkitError(
            f"precision={config.precision!r}{where}: choose one of {', '.join(PRECISIONS)}"
        )
    if config.strategy not in STRATEGIES:
        raise StemkitError(
            f"strategy={config.strategy!r}{where}: choose one of {', '.join(STRATEGIES)}"
        )
    if config.devices != "auto" and not (config.devices.isdigit() and int(config.devices) > 0):
        raise StemkitError(f"devices={config.devices!r}{where}: give 'auto' or a number >= 1")
    if config.num_nodes < 1:
        raise StemkitError(f"num_nodes={config.num_nodes}{where}: must be at least 1")


def _check_optim(optim: OptimConfig, preset: str | Path | None) -> None:
    where = f" (in {preset} or the overrides)" if preset is not None else ""
    for key, allowed in CHOICES.items():
        value = getattr(optim, key)
        if value not in allowed:
            raise StemkitError(f"optim.{key}={value!r}{where}: choose one of {', '.join(allowed)}")
    positive = {"batch_size": optim.batch_size, "accumulate": optim.accumulate}
    positive["step_size"] = optim.step_size
    # No epoch to run, or early stopping before the first one, would end a run without best.pt.
    positive["epochs"] = optim.epochs
    positive["patience"] = optim.patience
    for key, number in positive.items():
        if number < 1:
            raise StemkitError(f"optim.{key}={number}{where}: must be at least 1")
    if optim.lr_scale_batch is not None and optim.lr_scale_batch <= 0:
        raise StemkitError(f"optim.lr_scale_batch={optim.lr_scale_batch}{where}: must be > 0")
    if optim.valid_segment is not None and optim.valid_segment <= 0:
        raise StemkitError(
            f"optim.valid_segment={optim.valid_segment}{where}: give seconds > 0 or null"
        )


def effective_lr(optim: OptimConfig) -> float:
    """The learning rate after the batch rescaling ``lr × batch × accumulate / lr_scale_batch``."""
    if optim.lr_scale_batch is None:
        return optim.lr
    return optim.lr * optim.batch_size * optim.accumulate / optim.lr_scale_batch


def normalise_config_dict(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a saved configuration) completed with today's defaults for missing keys.

    Lets a run folder started before an option existed be compared with today's configuration.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.create(data))
    except OmegaConfBaseException:
        return data
    result = OmegaConf.to_container(merged, resolve=True)
    assert isinstance(result, dict)
    return {str(k): v for k, v in result.items()}


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain-dictionary copy of ``config`` (for checkpoints and JSON)."""
    from omegaconf import OmegaConf

    result = OmegaConf.to_container(OmegaConf.structured(config), resolve=True)
    assert isinstance(result, dict)
    return {str(k): v for k, v in result.items()}


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML."""
    from omegaconf import OmegaConf

    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
