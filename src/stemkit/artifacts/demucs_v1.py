"""The Demucs v1 release's pickled models (Demucs and Conv-TasNet) → stemkit checkpoints.

The release (facebookresearch/demucs before the 2020-01-31 "new pickling") published
``demucs.th``, ``demucs_extra.th``, ``tasnet.th`` and ``tasnet_extra.th`` as ``torch.save`` of
whole models: ``demucs.model.Demucs`` and ``demucs.tasnet.ConvTasNet``. They are read with
:func:`~stemkit.artifacts.pickled_modules.read_pickled_module` (no code from the file runs, no
demucs needed), the constructor arguments are taken from the saved attributes and the tensor
shapes, and the weights load strictly into stemkit's ``demucs`` or ``convtasnet``.

What the file records, and what is inferred:

* Demucs saves ``sources`` (a count), ``audio_channels``, ``channels`` (the first layer's),
  ``depth``, ``kernel_size``, ``stride``, ``context`` and ``upsample``; ``growth`` comes from the
  encoder widths, ``lstm_layers`` from the LSTM, ``glu``/``rewrite`` from the layer types.
* Conv-TasNet saves ``N, L, B, H, P, X, R, C``, ``norm_type``, ``causal`` and
  ``mask_nonlinear``; ``audio_channels`` comes from the encoder's weight.
* Neither records the sample rate (44.1 kHz, what ``separate.py`` resamples to) nor the stem
  names: four sources are ``drums, bass, other, vocals`` (``separate.py``'s order).

How stemkit runs them, against the release's ``separate.py`` (shifts 0):

* both standardise the input by its mono mean and standard deviation, as ``separate.py`` does
  (``normalize=True``), but inside the model: stemkit's separation standardises each chunk
  (15 s, overlapping) by its own statistics where ``separate.py`` standardises the whole track
  once; stemkit adds 1e-5 to the standard deviation (silence);
* Demucs: the same centred padding to ``valid_length`` and centre trim as its ``apply_model``;
* Conv-TasNet: as upstream, the last partial frame is dropped and its ``< L / 2`` output
  samples are silent (``pad_end=False``; stemkit's default pads to a whole frame, which changes
  every global layer norm's statistics by one frame);
* upstream splits a song into independent 10 s chunks; stemkit's separation chunks with
  overlap-add (its own ``--segment`` and ``--overlap`` settings).

Variants the release's code could build but stemkit's architectures cannot hold are refused
with a :class:`~stemkit.errors.CheckpointError` naming the option: Demucs with
``upsample=True``, ``rewrite=False`` or ``glu=False``; Conv-TasNet with a norm other than gLN,
``causal=True`` or a mask non-linearity other than ReLU. The four published files use none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stemkit.artifacts.checkpoint import provenance, save_checkpoint, sha256_of
from stemkit.artifacts.pickled_modules import (
    PickledModule,
    module_state_dict,
    named_children,
    read_pickled_module,
)
from stemkit.errors import CheckpointError
from stemkit.models.base import SeparationModel

__all__ = ["DEMUCS_V1_SOURCES", "V1_SAMPLE_RATE", "convert_demucs_v1", "import_demucs_v1"]

#: The release's source order (``separate.py``'s ``source_names``).
DEMUCS_V1_SOURCES = ("drums", "bass", "other", "vocals")
#: The rate ``separate.py`` resamples every track to; the files do not record it.
V1_SAMPLE_RATE = 44100

_DEMUCS = "demucs.model.Demucs"
_TASNET = "demucs.tasnet.ConvTasNet"


def _children(module: PickledModule) -> dict[str, PickledModule]:
    return dict(named_children(module))


def _attribute(module: PickledModule, name: str, kind: type | tuple[type, ...]) -> Any:
    value = module.attributes.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise CheckpointError(f"{module.class_path} has no usable {name!r} ({value!r})")
    return value


def _source_names(count_or_names: Any, given: Sequence[str] | None, where: str) -> list[str]:
    if isinstance(count_or_names, (list, tuple)):
        names = [str(name) for name in count_or_names]
    elif isinstance(count_or_names, int) and not isinstance(count_or_names, bool):
        if given is None and count_or_names != len(DEMUCS_V1_SOURCES):
            raise CheckpointError(
                f"{where} separates {count_or_names} sources and does not name them; name them "
                "in order (--sources NAME...)"
            )
        names = list(given) if given is not None else list(DEMUCS_V1_SOURCES)
    else:
        raise CheckpointError(f"{where}: unreadable sources {count_or_names!r}")
    if given is not None and len(given) != len(names):
        raise CheckpointError(f"{where} has {len(names)} sources, {len(given)} names given")
    return list(given) if given is not None else names


def _demucs_arguments(root: PickledModule, sources: Sequence[str] | None) -> dict[str, Any]:
    """stemkit ``demucs`` constructor arguments for a pickled ``demucs.model.Demucs``."""
    where = root.class_path
    if root.attributes.get("upsample"):
        raise CheckpointError(
            f"{where} uses upsample=True (linear upsampling, convolutions and a final 1x1 "
            "convolution instead of transposed convolutions); stemkit's demucs has transposed "
            "convolutions only"
        )
    children = _children(root)
    encoder = list(named_children(children["encoder"])) if "encoder" in children else []
    if not encoder:
        raise CheckpointError(f"{where} has no encoder layers")
    first = [child.name for _, child in named_children(encoder[0][1])]
    if first != ["Conv1d", "ReLU", "Conv1d", "GLU"]:
        option = (
            "glu=False (ReLU after the 1x1 convolutions)"
            if first[2:3] == ["Conv1d"]
            else ("rewrite=False (no 1x1 convolution per encoder layer)")
        )
        raise CheckpointError(
            f"{where} encoder layers are {'+'.join(first)}: {option}; stemkit's demucs has "
            "Conv1d+ReLU+Conv1d(1x1)+GLU only"
        )
    widths = []
    for _, layer in encoder:
        conv = _children(layer)["0"]
        weight = conv.attributes["_parameters"]["weight"]
        widths.append(int(weight.shape[0]))
    growth = widths[1] / widths[0] if len(widths) > 1 else 2.0
    expected = [widths[0]]
    for _ in widths[1:]:
        expected.append(int(growth * expected[-1]))
    if expected != widths:
        raise CheckpointError(
            f"{where} encoder widths {widths} do not grow by one factor; stemkit's demucs "
            "multiplies the width by the same growth at every layer"
        )
    channels = _attribute(root, "channels", int)
    if channels != widths[0]:
        raise CheckpointError(f"{where}: channels={channels} but the first layer has {widths[0]}")
    lstm_layers = 0
    if "lstm" in children:
        lstm = _children(children["lstm"]).get("lstm")
        if lstm is None or not lstm.attributes.get("bidirectional", False):
            raise CheckpointError(f"{where}: the bottleneck is not a bidirectional LSTM")
        lstm_layers = _attribute(lstm, "num_layers", int)
    depth = _attribute(root, "depth", int)
    if depth != len(widths):
        raise CheckpointError(f"{where}: depth={depth} but {len(widths)} encoder layers")
    return {
        "sources": _source_names(root.attributes.get("sources"), sources, where),
        "audio_channels": _attribute(root, "audio_channels", int),
        "sample_rate": V1_SAMPLE_RATE,
        "channels": channels,
        "depth": depth,
        "growth": growth,
        "kernel": _attribute(root, "kernel_size", int),
        "stride": _attribute(root, "stride", int),
        "context": _attribute(root, "context", int),
        "lstm_layers": lstm_layers,
        "rescale": None,
        "normalize": True,
    }


def _tasnet_arguments(root: PickledModule, sources: Sequence[str] | None) -> dict[str, Any]:
    """stemkit ``convtasnet`` constructor arguments for a pickled ``demucs.tasnet.ConvTasNet``."""
    where = root.class_path
    refused = []
    if root.attributes.get("norm_type", "gLN") != "gLN":
        refused.append(f"norm_type={root.attributes['norm_type']!r} (stemkit: gLN)")
    if root.attributes.get("causal", False):
        refused.append("causal=True (stemkit: non-causal, centred dilated convolutions)")
    if root.attributes.get("mask_nonlinear", "relu") != "relu":
        refused.append(f"mask_nonlinear={root.attributes['mask_nonlinear']!r} (stemkit: relu)")
    if refused:
        raise CheckpointError(
            f"{where} has {', '.join(refused)}; stemkit's convtasnet cannot hold it"
        )
    encoder = _children(root).get("encoder")
    conv = _children(encoder).get("conv1d_U") if encoder is not None else None
    if conv is None:
        raise CheckpointError(f"{where} has no encoder.conv1d_U")
    audio_channels = int(conv.attributes["_parameters"]["weight"].shape[1])
    sizes = {key: _attribute(root, key, int) for key in ("N", "L", "B", "H", "P", "X", "R")}
    count = _attribute(root, "C", int)
    return {
        "sources": _source_names(count, sources, where),
        "audio_channels": audio_channels,
        "sample_rate": V1_SAMPLE_RATE,
        **sizes,
        "normalize": True,
        "pad_end": False,
    }


def _tasnet_state(state: Mapping[str, Tensor], repeats: int, blocks: int) -> dict[str, Tensor]:
    """Rename upstream Conv-TasNet keys to stemkit's (and drop the norms' singleton axes).

    ``encoder.conv1d_U`` → ``encoder``; ``separator.network.{0,1}`` → ``separator.{0,1}`` (cLN
    ``gamma``/``beta`` → ``weight``/``bias``); block ``r, x`` at ``separator.network.2.r.x`` →
    ``separator.(2 + r X + x)``, its ``net.{0,1,2}`` kept, ``net.3.net.{0,1,2,3}`` (the depthwise
    separable part) → ``net.{3,4,5,6}``; ``separator.network.3`` → ``separator.(2 + R X)``;
    ``decoder.basis_signals`` → ``decoder``.
    """
    renamed: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        parts = key.split(".")
        if parts[:2] == ["encoder", "conv1d_U"]:
            new = ["encoder", *parts[2:]]
        elif parts[:2] == ["decoder", "basis_signals"]:
            new = ["decoder", *parts[2:]]
        elif parts[:2] == ["separator", "network"] and len(parts) == 4 and parts[2] != "2":
            index = {"0": 0, "1": 1, "3": 2 + repeats * blocks}.get(parts[2])
            if index is None:
                unknown.append(key)
                continue
            new = ["separator", str(index), *parts[3:]]
        elif (
            parts[:3] == ["separator", "network", "2"]
            and len(parts) >= 8
            and all(part.isdigit() for part in parts[3:5])
        ):
            block = 2 + int(parts[3]) * blocks + int(parts[4])
            rest = parts[5:]
            if rest[:3] == ["net", "3", "net"]:
                rest = ["net", str(3 + int(rest[3])), *rest[4:]]
            new = ["separator", str(block), *rest]
        else:
            unknown.append(key)
            continue
        name = new[-1]
        if name in ("gamma", "beta"):  # (1, channels, 1) affine of upstream's cLN / gLN
            new[-1] = "weight" if name == "gamma" else "bias"
            value = value.reshape(-1)
        renamed[".".join(new)] = value
    if unknown:
        raise CheckpointError(f"unexpected Conv-TasNet weights {unknown[:4]}")
    return renamed


def convert_demucs_v1(
    path: str | os.PathLike[str], *, sources: Sequence[str] | None = None
) -> SeparationModel:
    """A stemkit model holding the weights of a Demucs v1 release file, in eval mode.

    Args:
        path: ``demucs.th``, ``demucs_extra.th``, ``tasnet.th`` or ``tasnet_extra.th`` (or a
            file of the same kind).
        sources: stem names, in the file's output order; default ``drums, bass, other,
            vocals`` for four sources.

    Returns:
        A ``demucs`` or ``convtasnet`` model (``init_kwargs`` set), weights loaded strictly.

    Raises:
        CheckpointError: the file is not a pickled v1 Demucs or Conv-TasNet, asks for anything
            beyond tensors and module classes (nothing was run), or uses an option stemkit's
            architecture cannot hold (named in the message).
    """
    from stemkit.models import build

    root = read_pickled_module(path)
    if root.class_path not in (_DEMUCS, _TASNET):
        raise CheckpointError(
            f"{path}: holds a {root.class_path}, not a Demucs v1 model ({_DEMUCS} or {_TASNET})"
        )
    try:
        state = module_state_dict(root)
        if root.class_path == _DEMUCS:
            name, kwargs = "demucs", _demucs_arguments(root, sources)
        else:
            name, kwargs = "convtasnet", _tasnet_arguments(root, sources)
            state = _tasnet_state(state, kwargs["R"], kwargs["X"])
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    except (KeyError, AttributeError, IndexError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{path}: a {root.class_path} without the release's layout ({error!r} missing or "
            "malformed)"
        ) from None
    try:
        # sizes only: the weights come from the file, so nothing is allocated twice
        with torch.device("meta"):
            model = build(name, **kwargs)
        model.load_state_dict(state, strict=True, assign=True)
    except (ValueError, RuntimeError) as error:
        summary = " ".join(str(error).split())
        raise CheckpointError(
            f"{path}: the weights do not fit stemkit's {name} built from the file's settings "
            f"({summary[:400]})"
        ) from None
    leftover = [k for k, v in [*model.named_parameters(), *model.named_buffers()] if v.is_meta]
    if leftover:  # pragma: no cover - strict loading fills every parameter and buffer
        raise CheckpointError(f"{path}: no weights for {leftover[:4]}")
    return model.eval()


def import_demucs_v1(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    sources: Sequence[str] | None = None,
    origin: Mapping[str, Any] | None = None,
) -> Path:
    """Convert a Demucs v1 release file into a stemkit checkpoint.

    Args:
        path: the release's ``.th`` file.
        out: the checkpoint to write (with a ``.sha256`` beside it).
        sources: stem names; see :func:`convert_demucs_v1`.
        origin: where the file came from (catalogue name, URL), kept in the provenance.

    Returns:
        ``out`` as a ``Path``.

    Raises:
        CheckpointError: see :func:`convert_demucs_v1`.
    """
    model = convert_demucs_v1(path, sources=sources)
    record: dict[str, Any] = {
        "converted_from": "demucs-v1",
        "path": str(Path(path).resolve()),
        "sha256": sha256_of(path),
        "assumed": [f"sample_rate={V1_SAMPLE_RATE}"]
        + ([] if sources is not None else ["sources=" + ",".join(model.sources)]),
    }
    if origin is not None:
        record["origin"] = dict(origin)
    return save_checkpoint(out, model, provenance={**provenance(), "demucs_v1_import": record})
