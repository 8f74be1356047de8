"""Self-describing checkpoints: one file that rebuilds the model and tells where it came from.

A checkpoint is a plain dictionary of tensors and built-in types, so it loads with
``torch.load(weights_only=True)``:

``format``            ``"stemkit-checkpoint/1"``
``model_name``        registry name; ``model_kwargs`` the constructor arguments
``state_dict``        the weights
``sources``, ``sample_rate``, ``audio_channels``
``config``            the resolved training configuration (may be empty)
``provenance``        git commit and dirty flag, seed, library versions, data fingerprint
``ledger``            time and energy the weights cost
``training_state``    optimiser, scheduler, epoch and RNG states, for resuming (optional)

It is written atomically (temporary file, then rename) and a ``<file>.sha256`` beside it holds
its checksum, verified on load.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

from stemkit.errors import CheckpointError
from stemkit.models.base import SeparationModel

FORMAT = "stemkit-checkpoint/1"


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``.

    A crash mid-write leaves the previous file intact, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file private (0600); give it the permissions a plain open would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | os.PathLike[str],
    model: SeparationModel,
    *,
    config: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    ledger: dict[str, Any] | None = None,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` and its metadata to ``path`` atomically, with a checksum file beside it.

    The model must come from :func:`stemkit.models.build` (it carries ``model_name`` and
    ``init_kwargs``).
    """
    if not hasattr(model, "model_name"):
        raise CheckpointError(
            "the model was not built through stemkit.models.build, so it cannot be rebuilt "
            "from a checkpoint"
        )
    payload = {
        "format": FORMAT,
        "model_name": model.model_name,
        "model_kwargs": _plain(model.init_kwargs),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "sources": list(model.sources),
        "sample_rate": int(model.sample_rate),
        "audio_channels": int(model.audio_channels),
        "config": _plain(config or {}),
        "provenance": _plain(provenance or {}),
        "ledger": _plain(ledger or {}),
    }
    if training_state is not None:
        payload["training_state"] = training_state
    path = Path(path)
    atomic_torch_save(payload, path)
    checksum = path.with_name(path.name + ".sha256")
    tmp = checksum.with_name(checksum.name + ".tmp")
    tmp.write_text(f"{sha256_of(path)}  {path.name}\n")
    os.replace(tmp, checksum)
    return path


def load_checkpoint(path: str | os.PathLike[str], *, verify: bool = True) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        verify: compare the file with the checksum beside it, when there is one.

    Raises:
        CheckpointError: missing, corrupt, tampered or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    checksum = path.with_name(path.name + ".sha256")
    if verify and checksum.is_file():
        expected = checksum.read_text().split()[0]
        if sha256_of(path) != expected:
            raise CheckpointError(
                f"{path}: checksum mismatch with {checksum.name}; the file is damaged or was "
                "modified after saving"
            )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad pickle or zip
        raise CheckpointError(f"{path}: not a readable checkpoint ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a stemkit checkpoint (expected format {FORMAT})")
    return payload


def model_from_checkpoint(payload: dict[str, Any]) -> SeparationModel:
    """Rebuild the model a loaded checkpoint describes, with its weights, in eval mode."""
    from stemkit import models

    model = models.build(payload["model_name"], **payload["model_kwargs"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    assert isinstance(model, SeparationModel)
    return model


def provenance(seed: int | None = None, data_fingerprint: str | None = None) -> dict[str, Any]:
    """Where a result comes from: code version, libraries, machine, seed and data."""
    import numpy

    from stemkit import __version__

    commit, dirty = _git_state()
    return {
        "stemkit": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "seed": seed,
        "data_fingerprint": data_fingerprint,
        "torch": str(torch.__version__),
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


def _git_state() -> tuple[str | None, bool | None]:
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, bool(status.strip())


def _plain(value: Any) -> Any:
    """Convert tuples and paths to lists and strings so ``weights_only`` loading accepts them."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value
