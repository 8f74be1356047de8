"""Reading the official Open-Unmix weights: one upstream per-target file, parsed and checked.

Open-Unmix publishes one file per target (``vocals-b62c91ce.pth``, ``drums.pth``, ...), each
the ``state_dict`` of one core (reference/spec-notes.md §2.3). Two layouts exist:

* the current package (1.x): exactly the keys of :class:`stemkit.models.umx.OpenUnmix`;
* the 2019 release (v1.0.0, the ``umx``/``umxhq`` weights): the same plus a ``sample_rate``
  buffer and the STFT window stored twice (``stft.window``, ``transform.0.window``).

Everything the core needs is read off the tensor shapes: ``max_bin`` from ``input_mean``,
``nb_bins`` (hence ``n_fft``) from ``output_scale``, ``hidden_size`` and ``nb_channels`` from
``fc1.weight``, the LSTM depth and direction from its keys. The sample rate and hop size are not
in the 1.x weights: they come from the v1.0.0 ``sample_rate`` buffer, a sibling
``separator.json`` or ``<target>.json`` (upstream's training outputs), the caller, or the
upstream defaults (44100 Hz, ``n_fft // 4``), in that order of preference (the caller first).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stemkit.artifacts.checkpoint import sha256_of
from stemkit.errors import CheckpointError
from stemkit.models.umx import OpenUnmix

__all__ = [
    "ARCHITECTURE",
    "LEGACY_KEYS",
    "OpenUnmixWeights",
    "load_core",
    "load_openunmix_target",
    "read_openunmix_target",
    "target_name",
]

#: Keys of the 2019 (v1.0.0) layout that the core does not have.
LEGACY_KEYS = ("sample_rate", "stft.window", "transform.0.window")

_HASH_SUFFIX = re.compile(r"^(?P<target>.+?)-[0-9a-f]{6,}$")
#: The core's constructor arguments, all read off the tensor shapes.
ARCHITECTURE = ("nb_bins", "nb_channels", "hidden_size", "nb_layers", "unidirectional", "max_bin")


@dataclass(frozen=True)
class OpenUnmixWeights:
    """One upstream target file, read and checked.

    Attributes:
        path: the file.
        target: target name from the file name (``vocals-b62c91ce.pth`` → ``vocals``).
        layout: ``"v1.0.0"`` or ``"current"``.
        state_dict: the core's weights, legacy keys removed.
        nb_bins: output bins, ``n_fft // 2 + 1``.
        nb_channels: 1 or 2.
        hidden_size: core width.
        nb_layers: LSTM layers.
        unidirectional: causal core.
        max_bin: input bins.
        n_fft: FFT size (from ``nb_bins``; checked against the stored window and JSON).
        sample_rate: from the file or its JSON, ``None`` if neither says.
        n_hop: from the JSON, ``None`` if absent.
        bandwidth: training bandwidth in Hz from the JSON, ``None`` if absent.
        sha256: checksum of the file.
        metadata_files: the JSON files read.
    """

    path: Path
    target: str
    layout: str
    state_dict: dict[str, Tensor]
    nb_bins: int
    nb_channels: int
    hidden_size: int
    nb_layers: int
    unidirectional: bool
    max_bin: int
    n_fft: int
    sample_rate: int | None
    n_hop: int | None
    bandwidth: float | None
    sha256: str
    metadata_files: list[str] = field(default_factory=list)

    def core_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`OpenUnmix` for these weights."""
        return {name: getattr(self, name) for name in ARCHITECTURE}


def target_name(path: str | os.PathLike[str]) -> str:
    """Target name of an upstream file: the stem without torch hub's hash suffix."""
    stem = Path(path).stem
    match = _HASH_SUFFIX.match(stem)
    return match.group("target") if match else stem


def _load_state(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad pickle or zip
        raise CheckpointError(
            f"{path}: not a PyTorch weights file ({type(error).__name__}); give the .pth files "
            "of an Open-Unmix model"
        ) from error
    if isinstance(payload, dict) and str(payload.get("format", "")).startswith("stemkit-"):
        raise CheckpointError(
            f"{path}: already a stemkit checkpoint; use it directly (stemkit separate --model)"
        )
    # upstream's <target>.chkpnt training checkpoints nest the weights
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if (
        not isinstance(payload, dict)
        or not payload
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in payload.items())
    ):
        raise CheckpointError(
            f"{path}: not a state dict (a mapping of parameter names to tensors); give the "
            ".pth files of an Open-Unmix model"
        )
    return dict(payload)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable JSON ({error}); fix or remove it") from error
    if not isinstance(content, dict):
        raise CheckpointError(f"{path}: expected a JSON object; fix or remove it")
    return content


def _int_or_none(value: Any, source: Path, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise CheckpointError(f"{source}: {key} should be an integer, got {value!r}")
    return int(value)


def read_openunmix_target(path: str | os.PathLike[str]) -> OpenUnmixWeights:
    """Read an upstream per-target weights file and infer the core's configuration.

    Args:
        path: ``<target>.pth`` of either layout; a ``separator.json`` and a ``<target>.json``
            beside it are read when present, never required.

    Raises:
        CheckpointError: the file is missing, not a state dict, lacks Open-Unmix keys, holds
            inconsistent shapes, or disagrees with its JSON; the message names the file.
    """
    path = Path(path)
    state = _load_state(path)
    target = target_name(path)
    legacy = {key: state.pop(key) for key in LEGACY_KEYS if key in state}
    required = ("input_mean", "output_scale", "fc1.weight", "lstm.weight_hh_l0")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(
            f"{path}: missing key(s) {', '.join(missing)}; this is not an Open-Unmix target "
            "file (expected the state_dict of openunmix.model.OpenUnmix)"
        )
    max_bin = state["input_mean"].numel()
    nb_bins = state["output_scale"].numel()
    fc1 = state["fc1.weight"]
    if fc1.dim() != 2 or max_bin == 0 or fc1.shape[1] % max_bin:
        raise CheckpointError(
            f"{path}: fc1.weight {tuple(fc1.shape)} does not fit input_mean of {max_bin} bins"
        )
    nb_channels = fc1.shape[1] // max_bin
    hidden_size = fc1.shape[0]
    unidirectional = not any(key.endswith("_reverse") for key in state)
    nb_layers = sum(1 for key in state if re.fullmatch(r"lstm\.weight_ih_l\d+", key))
    lstm_units = state["lstm.weight_hh_l0"].shape[-1]
    if nb_channels not in (1, 2) or lstm_units * (1 if unidirectional else 2) != hidden_size:
        raise CheckpointError(
            f"{path}: inconsistent shapes ({nb_channels} channels, hidden size {hidden_size}, "
            f"{lstm_units} LSTM units, {'uni' if unidirectional else 'bi'}directional); the "
            "file is damaged or not an Open-Unmix target"
        )
    if max_bin > nb_bins:
        raise CheckpointError(f"{path}: {max_bin} input bins exceed {nb_bins} output bins")
    n_fft = 2 * (nb_bins - 1)

    sample_rate: int | None = None
    if "sample_rate" in legacy:
        sample_rate = _int_or_none(float(legacy["sample_rate"].item()), path, "sample_rate")
    for key in ("stft.window", "transform.0.window"):
        if key in legacy and legacy[key].numel() != n_fft:
            raise CheckpointError(
                f"{path}: {key} has {legacy[key].numel()} samples but the {nb_bins} output "
                f"bins imply n_fft={n_fft}; the file is damaged"
            )

    # upstream training outputs: separator.json (nfft, nhop, sample_rate, nb_channels) and
    # <target>.json ({"args": {nfft, nhop, hidden_size, nb_channels, bandwidth, ...}})
    n_hop: int | None = None
    bandwidth: float | None = None
    metadata_files: list[str] = []
    claims: list[tuple[Path, str, Any]] = []
    separator_json = path.with_name("separator.json")
    if separator_json.is_file():
        content = _read_json(separator_json)
        metadata_files.append(str(separator_json))
        claims += [(separator_json, key, content.get(key)) for key in content]
    target_json = path.with_name(f"{target}.json")
    if target_json.is_file():
        args = _read_json(target_json).get("args", {})
        metadata_files.append(str(target_json))
        if isinstance(args, dict):
            claims += [(target_json, key, value) for key, value in args.items()]
    inferred = {"nfft": n_fft, "nb_channels": nb_channels, "hidden_size": hidden_size}
    for source, key, value in claims:
        if key in inferred and value is not None:
            if _int_or_none(value, source, key) != inferred[key]:
                raise CheckpointError(
                    f"{source}: {key}={value} but {path.name} holds weights for "
                    f"{key}={inferred[key]}; the JSON belongs to another model"
                )
        elif key == "nhop" and value is not None:
            n_hop = _int_or_none(value, source, key)
        elif key in ("sample_rate", "rate") and value is not None:
            rate = _int_or_none(value, source, key)
            if sample_rate is not None and rate != sample_rate:
                raise CheckpointError(
                    f"{source}: sample_rate {rate} but {path.name} stores {sample_rate}"
                )
            sample_rate = rate
        elif key == "bandwidth" and isinstance(value, (int, float)):
            bandwidth = float(value)

    weights = OpenUnmixWeights(
        path=path,
        target=target,
        layout="v1.0.0" if legacy else "current",
        state_dict=state,
        nb_bins=nb_bins,
        nb_channels=nb_channels,
        hidden_size=hidden_size,
        nb_layers=nb_layers,
        unidirectional=unidirectional,
        max_bin=max_bin,
        n_fft=n_fft,
        sample_rate=sample_rate,
        n_hop=n_hop,
        bandwidth=bandwidth,
        sha256=sha256_of(path),
        metadata_files=metadata_files,
    )
    # a strict load catches every missing, unexpected or mis-shaped key in one message
    load_core(OpenUnmix(**weights.core_kwargs()), weights)
    return weights


def load_core(core: OpenUnmix, weights: OpenUnmixWeights) -> OpenUnmix:
    """Load ``weights`` into ``core`` strictly; a mismatch names the file and its sizes."""
    try:
        core.load_state_dict(weights.state_dict, strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        if len(detail) > 600:
            detail = detail[:600] + " ..."
        raise CheckpointError(
            f"{weights.path}: does not match an Open-Unmix core with {weights.hidden_size} "
            f"hidden units, {weights.nb_layers} layers, {weights.max_bin}/{weights.nb_bins} "
            f"bins ({detail})"
        ) from None
    return core.eval()


def load_openunmix_target(path: str | os.PathLike[str]) -> OpenUnmix:
    """An :class:`OpenUnmix` core, in eval mode, holding the weights of an upstream file.

    Args:
        path: ``<target>.pth`` in the current or the 2019 (v1.0.0) layout.

    Raises:
        CheckpointError: see :func:`read_openunmix_target`.
    """
    weights = read_openunmix_target(path)
    return load_core(OpenUnmix(**weights.core_kwargs()), weights)
