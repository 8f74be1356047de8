"""Model files: stemkit checkpoints, the bundled weights, and converters of published weights.

Below ``train/``, ``inference/`` and ``evaluation/`` and above ``models/``: separating a song
loads its weights from here without importing anything of the training stack.

- :mod:`~stemkit.artifacts.checkpoint`: the checkpoint format (save, load, verify, rebuild);
- :mod:`~stemkit.artifacts.bundled`: the weights shipped with stemkit (``weights/``);
- :mod:`~stemkit.artifacts.catalogue`: the named models, their scores and where their weights
  come from (bundled, fetchable, not fetchable);
- :mod:`~stemkit.artifacts.fetch`: download, verify, convert and cache published weights;
- :mod:`~stemkit.artifacts.resolve`: ``--model NAME|PATH`` → a model (:func:`load_model`);
- :mod:`~stemkit.artifacts.openunmix`: Open-Unmix's published per-target files → a checkpoint;
- :mod:`~stemkit.artifacts.asteroid`: asteroid's X-UMX weights → our key names;
- :mod:`~stemkit.artifacts.onnx`: a model's network as an ONNX graph, and onnxruntime as an
  engine (optional: the ``onnx`` extra).
"""

from stemkit.artifacts.bundled import BUNDLED, DEFAULT_MODEL, bundled_path
from stemkit.artifacts.catalogue import CATALOGUE, CatalogueEntry, get_entry
from stemkit.artifacts.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    sha256_of,
)
from stemkit.artifacts.resolve import load_model

__all__ = [
    "BUNDLED",
    "CATALOGUE",
    "DEFAULT_MODEL",
    "CatalogueEntry",
    "bundled_path",
    "get_entry",
    "load_checkpoint",
    "load_model",
    "model_from_checkpoint",
    "save_checkpoint",
    "sha256_of",
]
