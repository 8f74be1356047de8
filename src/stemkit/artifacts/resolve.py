"""Turning what a user names after ``--model`` into a ready model."""

from __future__ import annotations

from pathlib import Path

from stemkit.artifacts.bundled import BUNDLED, DEFAULT_MODEL, bundled_path
from stemkit.artifacts.catalogue import CATALOGUE
from stemkit.artifacts.checkpoint import load_checkpoint, model_from_checkpoint
from stemkit.errors import StemkitError
from stemkit.models.base import SeparationModel


def load_model(spec: str = DEFAULT_MODEL, *, random_weights: bool = False) -> SeparationModel:
    """Turn what a user typed after ``--model`` into a model in eval mode.

    Looked up in this order: a checkpoint file; a bundled model (``"default"``); a catalogue
    model (``"umxhq"``: the cached checkpoint, fetched and converted on first use, see
    :mod:`stemkit.artifacts.fetch`); a registry name (``"identity"``, an oracle, an untrained
    architecture), built with its defaults.

    Args:
        spec: what ``--model`` named.
        random_weights: a registry name builds the architecture with random weights even where
            the catalogue has published weights of that name (``umx``).

    Raises:
        StemkitError: the spec is none of these (:class:`~stemkit.errors.CheckpointError`
            when it names a file that is not a usable checkpoint,
            :class:`~stemkit.errors.DownloadError` when published weights cannot be fetched).
    """
    from stemkit import models

    path = Path(spec)
    if path.suffix in {".pt", ".pth", ".ckpt"} or path.is_file():
        return model_from_checkpoint(load_checkpoint(path), path)
    if random_weights and spec in models.available():
        return models.build(spec).eval()
    if spec in BUNDLED:
        bundled = bundled_path(spec)
        if not bundled.is_file():
            raise StemkitError(f"the bundled model file {bundled} is missing; reinstall stemkit")
        return model_from_checkpoint(load_checkpoint(bundled), bundled)
    if spec in CATALOGUE:
        from stemkit.artifacts.fetch import load_catalogue_model

        return load_catalogue_model(spec)
    if spec in models.available():
        return models.build(spec).eval()
    raise StemkitError(
        f"--model {spec!r} is neither a checkpoint file, a bundled model "
        f"({', '.join(sorted(BUNDLED))}), a catalogue model ({', '.join(CATALOGUE)}; "
        f"`stemkit models` lists them) nor a registered model ({', '.join(models.available())})"
    )
