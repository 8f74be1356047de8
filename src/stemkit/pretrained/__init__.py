"""Resolving a model name or file to a ready model, and the weights bundled with stemkit."""

from __future__ import annotations

from pathlib import Path

from stemkit.errors import StemkitError
from stemkit.models.base import SeparationModel

#: Folder holding the bundled weights and their model cards.
BUNDLED_DIR = Path(__file__).resolve().parent

#: Name of the model ``stemkit separate`` uses when none is given.
DEFAULT_MODEL = "default"

_BUNDLED = {"default": "umx-synth-small.pt"}


def bundled_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of the bundled checkpoint called ``name``."""
    if name not in _BUNDLED:
        raise StemkitError(f"no bundled model {name!r}; bundled: {', '.join(sorted(_BUNDLED))}")
    return BUNDLED_DIR / _BUNDLED[name]


def load_model(spec: str = DEFAULT_MODEL) -> SeparationModel:
    """Turn what a user typed after ``--model`` into a model in eval mode.

    Args:
        spec: a checkpoint file path; the name of a bundled model (``"default"``); or a registry
            name (``"identity"``, an oracle-free untrained architecture), built with its defaults.

    Raises:
        StemkitError: the spec is none of these.
    """
    from stemkit import models
    from stemkit.train.checkpoint import load_checkpoint, model_from_checkpoint

    path = Path(spec)
    if path.suffix in {".pt", ".pth", ".ckpt"} or path.is_file():
        return model_from_checkpoint(load_checkpoint(path), path)
    if spec in _BUNDLED:
        bundled = bundled_path(spec)
        if not bundled.is_file():
            raise StemkitError(f"the bundled model file {bundled} is missing; reinstall stemkit")
        return model_from_checkpoint(load_checkpoint(bundled), bundled)
    if spec in models.available():
        model = models.build(spec)
        assert isinstance(model, SeparationModel)
        return model.eval()
    raise StemkitError(
        f"--model {spec!r} is neither a checkpoint file, a bundled model "
        f"({', '.join(sorted(_BUNDLED))}) nor a registered model ({', '.join(models.available())})"
    )
