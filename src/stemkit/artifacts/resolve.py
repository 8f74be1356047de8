"""Turning what a user names after ``--model`` into a ready model."""

from __future__ import annotations

from pathlib import Path

from stemkit.artifacts.bundled import BUNDLED, DEFAULT_MODEL, bundled_path
from stemkit.artifacts.checkpoint import load_checkpoint, model_from_checkpoint
from stemkit.errors import StemkitError
from stemkit.models.base import SeparationModel


def load_model(spec: str = DEFAULT_MODEL) -> SeparationModel:
    """Turn what a user typed after ``--model`` into a model in eval mode.

    Args:
        spec: a checkpoint file path; the name of a bundled model (``"default"``); or a registry
            name (``"identity"``, an oracle, an untrained architecture), built with its defaults.

    Raises:
        StemkitError: the spec is none of these (:class:`~stemkit.errors.CheckpointError`
            when it names a file that is not a usable checkpoint).
    """
    from stemkit import models

    path = Path(spec)
    if path.suffix in {".pt", ".pth", ".ckpt"} or path.is_file():
        return model_from_checkpoint(load_checkpoint(path), path)
    if spec in BUNDLED:
        bundled = bundled_path(spec)
        if not bundled.is_file():
            raise StemkitError(f"the bundled model file {bundled} is missing; reinstall stemkit")
        return model_from_checkpoint(load_checkpoint(bundled), bundled)
    if spec in models.available():
        return models.build(spec).eval()
    raise StemkitError(
        f"--model {spec!r} is neither a checkpoint file, a bundled model "
        f"({', '.join(sorted(BUNDLED))}) nor a registered model ({', '.join(models.available())})"
    )
