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
``content_sha256``    SHA-256 of every other entry (:func:`content_sha256`)

It is written atomically (temporary file, then rename). Loading verifies the checksum inside
the file, so a copy that travelled without anything beside it is still checked; a
``<file>.sha256`` beside it holds the checksum of the file's bytes, for users and tools that
check files (``sha256sum -c``), and is verified too when present. Checkpoints written before the
inner checksum existed load only with a matching ``.sha256`` beside them;
:func:`seal_checkpoint` adds the inner checksum to such a file without touching its weights.
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

from stemkit.errors import CheckpointError, StemkitError
from stemkit.models.base import SeparationModel

FORMAT = "stemkit-checkpoint/1"
#: Entry of a checkpoint holding the checksum of all its other entries.
CONTENT_HASH_KEY = "content_sha256"


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
    ``init_kwargs``). The payload carries its own checksum (:data:`CONTENT_HASH_KEY`).
    """
    if not model.model_name:
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
    payload[CONTENT_HASH_KEY] = content_sha256(payload)
    path = Path(path)
    atomic_torch_save(payload, path)
    _write_sidecar(path)
    return path


def seal_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Add the inner checksum to a checkpoint saved before it existed, in place.

    The file must pass :func:`load_checkpoint` first (so a legacy file needs its matching
    ``.sha256`` beside it); its entries, weights included, are written back unchanged, with
    :data:`CONTENT_HASH_KEY` added, and the ``.sha256`` beside it is rewritten for the new
    bytes. A file that already has the inner checksum is left as it is.

    Returns:
        ``path``.
    """
    path = Path(path)
    payload = load_checkpoint(path)
    if CONTENT_HASH_KEY not in payload:
        payload[CONTENT_HASH_KEY] = content_sha256(payload)
        atomic_torch_save(payload, path)
        _write_sidecar(path)
    return path


def _write_sidecar(path: Path) -> None:
    """Write ``<path>.sha256`` in ``sha256sum`` format, atomically."""
    checksum = path.with_name(path.name + ".sha256")
    tmp = checksum.with_name(checksum.name + ".tmp")
    tmp.write_text(f"{sha256_of(path)}  {path.name}\n")
    os.replace(tmp, checksum)


def content_sha256(payload: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's entries other than :data:`CONTENT_HASH_KEY`, as hex.

    The entries are serialised canonically rather than hashed as pickled bytes, so the checksum
    depends only on what was saved: tensors by dtype, shape and raw bytes, dictionaries in
    sorted key order, numbers exactly. It therefore survives a re-save of the same content and
    can be checked on the loaded dictionary itself.
    """
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in payload.items() if k != CONTENT_HASH_KEY})
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    """Add ``value`` to ``digest`` as a type tag and length-prefixed content.

    Tags and lengths keep the encoding unambiguous: no two different values give the same bytes
    (``"1"`` and ``1``, or ``["ab"]`` and ``["a", "b"]``).
    """

    def token(tag: str, text: str = "") -> None:
        data = text.encode()
        digest.update(f"{tag}{len(data)}:".encode())
        digest.update(data)

    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().resolve_conj().resolve_neg().contiguous()
        token("T", f"{tensor.dtype}{tuple(tensor.shape)}")
        # Reinterpreted as bytes, every dtype (bfloat16 included) hashes without conversion.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        token("D", str(len(value)))
        for key in sorted(value, key=lambda k: (type(k).__name__, str(k))):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        token("L", str(len(value)))
        for item in value:
            _feed(digest, item)
    elif value is None:
        token("N")
    elif isinstance(value, bool):  # before int: bool is a subclass of int
        token("B", str(value))
    elif isinstance(value, int):
        token("I", str(value))
    elif isinstance(value, float):
        token("F", value.hex())  # exact, and defined for nan and inf
    elif isinstance(value, str):
        token("S", value)
    elif isinstance(value, bytes):
        token("Y", value.hex())
    else:  # anything else weights_only loading admits (torch.dtype, torch.Size, ...)
        token("R", f"{type(value).__qualname__}:{value!r}")


def load_checkpoint(path: str | os.PathLike[str], *, verify: bool = True) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        verify: check the checksum stored inside the file, and the ``.sha256`` beside it when
            there is one. A file without the inner checksum (saved by an older stemkit) then
            needs its ``.sha256`` beside it.

    Raises:
        CheckpointError: missing, corrupt, tampered, unverifiable or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    checksum = path.with_name(path.name + ".sha256")
    sidecar_matches = False
    if verify and checksum.is_file():
        fields = checksum.read_text().split()
        if not fields or sha256_of(path) != fields[0]:
            raise CheckpointError(
                f"{path}: checksum mismatch with {checksum.name}; the file is damaged or was "
                "modified after saving"
            )
        sidecar_matches = True
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad pickle or zip
        raise CheckpointError(f"{path}: not a readable checkpoint ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a stemkit checkpoint (expected format {FORMAT})")
    if verify:
        _verify_content(path, payload, sidecar_matches)
    return payload


def _verify_content(path: Path, payload: dict[str, Any], sidecar_matches: bool) -> None:
    """Check the inner checksum; a legacy file without one must have had a matching sidecar."""
    stored = payload.get(CONTENT_HASH_KEY)
    if stored is None:
        if not sidecar_matches:
            raise CheckpointError(
                f"{path}: holds no checksum of its own (saved by an older stemkit) and has no "
                f"{path.name}.sha256 beside it, so damage cannot be ruled out; copy its .sha256 "
                "file next to it (then stemkit.artifacts.checkpoint.seal_checkpoint adds the inner "
                "checksum)"
            )
        return
    try:
        actual = content_sha256(payload)
    except Exception as error:  # an entry of a type the canonical form cannot take
        raise CheckpointError(f"{path}: content cannot be checked ({error})") from error
    if actual != stored:
        raise CheckpointError(
            f"{path}: content does not match the checksum stored inside it; the file is "
            "damaged or was modified after saving"
        )


def model_from_checkpoint(
    payload: dict[str, Any], path: str | os.PathLike[str] | None = None
) -> SeparationModel:
    """Rebuild the model a loaded checkpoint describes, with its weights, in eval mode.

    The registered model ``model_name`` is built from ``model_kwargs`` and must take the stored
    weights exactly: same names, same shapes, nothing missing or left over. Weights of another
    architecture or size under this name are refused rather than half loaded.

    Args:
        payload: a dictionary from :func:`load_checkpoint`.
        path: the file it came from, named in errors.

    Raises:
        CheckpointError: the model cannot be built, or the weights do not fit it.
    """
    from stemkit import models

    where = str(path) if path is not None else "checkpoint"
    name, kwargs = payload.get("model_name"), payload.get("model_kwargs")
    state = payload.get("state_dict")
    if not isinstance(name, str) or not isinstance(kwargs, dict) or not isinstance(state, dict):
        raise CheckpointError(f"{where}: lacks the model name, arguments or weights")
    try:
        model = models.build(name, **kwargs)
    except StemkitError as error:  # an unknown name
        raise CheckpointError(f"{where}: {error}") from error
    except (TypeError, ValueError, RuntimeError) as error:  # arguments the model does not take
        raise CheckpointError(
            f"{where}: cannot build model {name!r} from its stored arguments {kwargs} ({error})"
        ) from error
    load_weights(
        model,
        state,
        path,
        hint=f"built from its stored arguments {kwargs}; the file is damaged or its model name "
        "or arguments were changed",
    )
    stored = (payload.get("sources"), payload.get("sample_rate"), payload.get("audio_channels"))
    built = (list(model.sources), int(model.sample_rate), int(model.audio_channels))
    if stored != built:
        raise CheckpointError(
            f"{where}: describes sources, rate and channels {stored} but its model has {built}"
        )
    model.eval()
    return model


def load_weights(
    model: SeparationModel,
    state: dict[str, Any],
    path: str | os.PathLike[str] | None = None,
    *,
    hint: str = "the file was saved for another model or configuration",
) -> None:
    """Load ``state`` into ``model`` strictly, or say in one line why it does not fit.

    Args:
        model: the model to fill.
        state: a ``state_dict`` read from a checkpoint.
        path: the file it came from, named in errors.
        hint: what the mismatch likely means, appended to the error.

    Raises:
        CheckpointError: names missing, unexpected or reshaped weights, and the file.
    """
    where = str(path) if path is not None else "checkpoint"
    problem = _state_mismatch(model.state_dict(), state)
    if problem is None:
        try:
            model.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, ValueError) as error:
            problem = str(error).splitlines()[0]
    if problem is not None:
        name = model.model_name or type(model).__name__
        raise CheckpointError(f"{where}: its weights do not fit model {name!r} ({problem}); {hint}")


def _state_mismatch(expected: dict[str, Any], found: dict[str, Any]) -> str | None:
    """One line on how ``found`` differs from ``expected`` in names and shapes, or None."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [
        f"{k}: {_shape(found[k])} in the file, {_shape(expected[k])} in the model"
        for k in expected
        if k in found and _shape(found[k]) != _shape(expected[k])
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
    if reshaped:
        parts.append(f"{len(reshaped)} of another shape, e.g. {reshaped[0]}")
    return "; ".join(parts) or None


def _shape(value: Any) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


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
