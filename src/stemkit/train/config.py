"""Training configuration: dataclasses are the one place for defaults.

A run's configuration is these defaults, merged with a YAML preset, merged with dotted
command-line overrides (``optim.lr=3e-4 data.segment=4``); the resolved result is saved as
``config.yaml`` in the run folder and inside every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stemkit import MUSDB_SOURCES
from stemkit.errors import StemkitError


@dataclass
class DataConfig:
    """Where the stems come from and how training excerpts are drawn."""

    root: str = "data/synth"
    sources: list[str] = field(default_factory=lambda: list(MUSDB_SOURCES))
    segment: float = 6.0
    samples_per_track: int = 64
    random_mix: bool = True
    gain: list[float] = field(default_factory=lambda: [0.25, 1.25])
    channel_swap: bool = True
    valid_fraction: float = 0.15
    num_workers: int = 0


@dataclass
class ModelConfig:
    """Which registered model to build, and its constructor arguments."""

    name: str = "umx"
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Fit the input standardisation of spectrogram models on the training tracks first.
    input_statistics: bool = True


@dataclass
class OptimConfig:
    """Optimiser, loss and schedule."""

    loss: str = "spectral_mse"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 16
    epochs: int = 1000
    clip_grad_norm: float | None = None
    patience: int = 140
    lr_decay_patience: int = 80
    lr_decay_gamma: float = 0.3


@dataclass
class TrainConfig:
    """Everything a run depends on; the run folder name comes from ``run_dir``."""

    run_dir: str = "runs/umx"
    seed: int = 42
    device: str = "cpu"
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
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise StemkitError(f"bad training configuration: {error}") from error
    assert isinstance(config, TrainConfig)
    return config


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
