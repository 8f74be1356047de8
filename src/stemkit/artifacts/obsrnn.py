"""Importing the band-split RNN replication's checkpoints (oBSRNN) without its code.

The replication (Magron et al., reference/spec-notes.md, OBSRNN) trains with PyTorch Lightning
and publishes ``.ckpt`` files: one per target (``vocals.ckpt``, ``bass.ckpt``, …), or one
``separator.ckpt`` for its single-network, multi-output (SIMO) variant. Each is a pickled dict
with the module's ``state_dict`` and its constructor arguments (``hyper_parameters``, some of
them OmegaConf objects). The file is read with the restricted unpickler of
:mod:`~stemkit.artifacts.pickled_modules`: tensors and plain containers, the OmegaConf and
Lightning classes as inert records; nothing from the file is imported or run.

The replication's modules and stemkit's :class:`~stemkit.models.bsrnn.BSRNN` hold the same
tensors under other names (``BN.{k}.0`` is ``band_split.norms.{k}``, ``separator.{r}.time_net``
is ``blocks.{r}.time_model``, ``attn_conv_Q_{h}`` is ``attention.queries.{h}``, …), so the
conversion renames them and builds the model from the arguments; the weights load strictly.
Settings stemkit's model cannot hold (unidirectional sequence models, mask context, GroupNorms
of more than one group, another epsilon) are refused by name.

Example:
    >>> model = convert_obsrnn(["vocals.ckpt", "bass.ckpt", "drums.ckpt", "other.ckpt"])
    >>> model.sources
    ('vocals', 'bass', 'drums', 'other')
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stemkit.artifacts.checkpoint import load_weights, provenance, save_checkpoint, sha256_of
from stemkit.artifacts.pickled_modules import PickledModule, restricted_load
from stemkit.errors import CheckpointError, StemkitError
from stemkit.models import build
from stemkit.models.bsrnn import BSRNN

__all__ = ["convert_obsrnn", "import_obsrnn", "obsrnn_state_dict"]

#: Packages whose classes a Lightning checkpoint of the replication pickles besides tensors:
#: the hyper-parameters' OmegaConf containers and Lightning's own records.
_PACKAGES = ("omegaconf", "lightning", "lightning_fabric", "pytorch_lightning")

#: The replication's epsilon (its config's ``eps``), the one stemkit's band-split model uses.
_EPS = 1e-7

#: ``(pattern, replacement)`` from the replication's key names (one network) to stemkit's.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^BN\.(\d+)\.0\.", r"band_split.norms.\1."),
    (r"^BN\.(\d+)\.1\.", r"band_split.projections.\1."),
    (r"^separator\.(\d+)\.time_net\.main_layer\.", r"blocks.\1.time_model.model."),
    (r"^separator\.(\d+)\.band_net\.main_layer\.", r"blocks.\1.band_model.model."),
    (r"^separator\.(\d+)\.time_net\.", r"blocks.\1.time_model."),
    (r"^separator\.(\d+)\.band_net\.", r"blocks.\1.band_model."),
    (r"^separator\.(\d+)\.tac_module\.(transform|average|concat)\.0\.", r"blocks.\1.tac.\2."),
    (r"^separator\.(\d+)\.attn_block\.attn_conv_Q_(\d+)\.", r"blocks.\1.attention.queries.\2."),
    (r"^separator\.(\d+)\.attn_block\.attn_conv_K_(\d+)\.", r"blocks.\1.attention.keys.\2."),
    (r"^separator\.(\d+)\.attn_block\.attn_conv_V_(\d+)\.", r"blocks.\1.attention.values.\2."),
    (r"^separator\.(\d+)\.attn_block\.attn_concat_proj\.", r"blocks.\1.attention.output."),
    (r"^maskers\.(\d+)\.mask\.", r"maskers.\1.bands."),
)

#: The activation of the replication's TAC is one PReLU shared by its three layers, saved
#: under each layer's name; stemkit keeps it once.
_TAC_ACTIVATION = re.compile(r"^separator\.(\d+)\.tac_module\.(transform|average|concat)\.1\.")
#: The attention's layer norms name their gain and bias ``gamma`` and ``beta``.
_LAYER_NORM = re.compile(r"^(blocks\.\d+\.attention\..*\.2\.)(gamma|beta)$")
_NORM_NAMES = {"gamma": "weight", "beta": "bias"}
_STFT_WINDOW = re.compile(r"^i?stft\.transf\.window$")


def obsrnn_state_dict(state: Mapping[str, Tensor], n_fft: int) -> dict[str, Tensor]:
    """One replication network's ``state_dict`` under the names of stemkit's
    :class:`~stemkit.models.bsrnn.BandSplitNetwork`.

    Args:
        state: the ``state_dict`` of the replication's ``BSRNN`` module (``BN.*``,
            ``separator.*``, ``maskers.*``, and its STFT windows).
        n_fft: the STFT size; the saved windows must be its periodic Hann window.

    Raises:
        CheckpointError: a key of another layout, a saved window that is not the Hann window
            stemkit's STFT uses, or TAC activations that differ between a block's layers.
    """
    renamed: dict[str, Tensor] = {}
    shared: dict[str, Tensor] = {}
    hann = torch.hann_window(n_fft, dtype=torch.float64)
    for key, value in state.items():
        if _STFT_WINDOW.match(key):
            if value.shape != hann.shape or not torch.allclose(value.double(), hann, atol=1e-6):
                raise CheckpointError(f"{key} is not the periodic Hann window of {n_fft} points")
            continue
        tac = _TAC_ACTIVATION.match(key)
        if tac is not None:
            name = f"blocks.{tac.group(1)}.tac.activation.{key[tac.end() :]}"
            if name in shared and not torch.equal(shared[name], value):
                raise CheckpointError(
                    f"{key}: the TAC layers of block {tac.group(1)} have different activations; "
                    "the replication shares one"
                )
            shared[name] = value
            continue
        for pattern, replacement in _RENAMES:
            name, found = re.subn(pattern, replacement, key)
            if found:
                break
        else:
            raise CheckpointError(f"{key}: not a tensor of the replication's BSRNN")
        renamed[_LAYER_NORM.sub(lambda m: m.group(1) + _NORM_NAMES[m.group(2)], name)] = value
    return {**renamed, **shared}


def _plain(value: Any) -> Any:
    """An OmegaConf value read as an inert record, back to plain Python (others unchanged)."""
    if isinstance(value, PickledModule):
        content = value.attributes.get("_content", value.attributes.get("_val"))
        return _plain(content)
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The hyper-parameters and ``state_dict`` of one replication checkpoint."""
    payload = restricted_load(path, packages=_PACKAGES)
    if not isinstance(payload, Mapping) or not isinstance(payload.get("state_dict"), Mapping):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    hparams = payload.get("hyper_parameters")
    if not isinstance(hparams, Mapping):
        raise CheckpointError(
            f"{path}: the checkpoint has no hyper_parameters; it was not saved by the "
            "replication's training (its LightningModule saves them)"
        )
    state = payload["state_dict"]
    if not all(isinstance(value, Tensor) for value in state.values()):
        raise CheckpointError(f"{path}: its state_dict holds something other than tensors")
    return {key: _plain(value) for key, value in hparams.items()}, dict(state)


def _arguments(hparams: Mapping[str, Any], where: str) -> dict[str, Any]:
    """stemkit's BSRNN arguments for the replication's ``BSRNN(**hparams)`` (sources aside).

    Raises:
        CheckpointError: a setting stemkit's model has no counterpart for.
    """

    def get(name: str, default: Any) -> Any:
        value = hparams.get(name, default)
        return default if value is None and default is not None else value

    def refuse(name: str, why: str) -> CheckpointError:
        return CheckpointError(f"{where}: {name}={hparams.get(name)!r}: {why}")

    if get("bidirectional", True) is not True:
        raise refuse("bidirectional", "stemkit's band-split sequence models are bidirectional only")
    if get("mask_ctxt", 0) != 0:
        raise refuse("mask_ctxt", "mask context is not part of stemkit's BSRNN")
    if get("group_num", 1) != 1:
        raise refuse("group_num", "stemkit's sequence models normalise with one group")
    if not math.isclose(float(get("eps", _EPS)), _EPS, rel_tol=1e-6):
        raise refuse("eps", f"stemkit's BSRNN uses the replication's default {_EPS}")
    stereo = {None: "mono", "naive": "naive", "tac": "tac"}.get(get("stereo", None))
    if stereo is None:
        raise refuse("stereo", "expected none, 'naive' or 'tac'")
    kinds = ("lstm", "gru", "conv")
    for name in ("time_layer", "band_layer"):
        if get(name, "lstm") not in kinds:
            raise refuse(name, f"expected one of {', '.join(kinds)}")
    return {
        "n_features": int(get("feature_dim", 128)),
        "n_layers": int(get("num_repeat", 12)),
        "fac_sep": int(get("fac_sep", 2)),
        "fac_mask": int(get("fac_mask", 4)),
        "n_fft": int(get("n_fft", 2048)),
        "n_hop": int(get("n_hop", 512)),
        "sample_rate": int(get("sample_rate", 44100)),
        "audio_channels": int(get("nb_channels", 2)),
        "seq_model": str(get("time_layer", "lstm")),
        "band_seq_model": str(get("band_layer", "lstm")),
        "stereo": stereo,
        "tac_activation": str(get("act_tac", "tanh")),
        "tac_factor": int(get("fac_tac", 3)),
        "attention_heads": int(get("n_att_head", 0)),
        "attention_dim": int(get("attn_enc_dim", 16)),
        "n_heads_seq": int(get("n_heads", 1)),
    }


def _targets(hparams: Mapping[str, Any]) -> list[str]:
    targets = hparams.get("targets", ["vocals"])
    return [targets] if isinstance(targets, str) else [str(target) for target in targets]


def convert_obsrnn(paths: Sequence[str | os.PathLike[str]]) -> BSRNN:
    """A stemkit BSRNN holding the weights of the replication's checkpoints, in eval mode.

    Args:
        paths: one checkpoint per target (each a single-target network, all with the same
            settings; the stems come out in this order), or one multi-target (SIMO)
            checkpoint.

    Raises:
        CheckpointError: a file that is not such a checkpoint (nothing from it was run), a
            setting stemkit's model cannot hold, targets repeated or mixed with a SIMO file,
            or weights that do not fit (each named in the message).
    """
    if not paths:
        raise CheckpointError("give at least one checkpoint of the replication")
    files = [Path(path) for path in paths]
    read = [(path, *_read(path)) for path in files]
    first_path, first_hparams, _ = read[0]
    arguments = _arguments(first_hparams, str(first_path))
    simo = len(_targets(first_hparams)) > 1
    if simo and len(read) > 1:
        raise CheckpointError(
            f"{first_path}: a multi-target (SIMO) checkpoint holds every stem; give it alone"
        )
    sources: list[str] = []
    states: dict[str, Tensor] = {}
    joint = bool(first_hparams.get("joint_bandsplit", False))
    for path, hparams, state in read:
        targets = _targets(hparams)
        if not simo and len(targets) != 1:
            raise CheckpointError(f"{path}: a multi-target (SIMO) checkpoint; give it alone")
        if (
            _arguments(hparams, str(path)) != arguments
            or bool(hparams.get("joint_bandsplit", False)) != joint
        ):
            raise CheckpointError(
                f"{path}: its settings differ from {first_path}'s; stemkit's BSRNN gives every "
                "target's network the same sizes"
            )
        if set(targets) & set(sources):
            raise CheckpointError(f"{path}: target {targets[0]!r} given twice")
        network = "joint" if simo else targets[0]
        try:
            renamed = obsrnn_state_dict(state, arguments["n_fft"])
        except CheckpointError as error:
            raise CheckpointError(f"{path}: {error}") from None
        states.update({f"networks.{network}.{key}": value for key, value in renamed.items()})
        sources += targets
    other_residual = simo and bool(first_hparams.get("subtract_last_trgt", False))
    kwargs = {
        **arguments,
        "sources": sources,
        "layout": "joint" if joint and not simo else "auto",
        "simo": simo,
        "simo_other_residual": other_residual,
    }
    try:
        model = build("bsrnn", **kwargs)
    except StemkitError as error:  # settings out of range (named in the message)
        raise CheckpointError(f"{first_path}: {error}") from None
    assert isinstance(model, BSRNN)
    load_weights(
        model, states, first_path, hint="the tensors do not match the saved hyper-parameters"
    )
    return model.eval()


def import_obsrnn(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    origin: Mapping[str, Any] | None = None,
) -> Path:
    """Convert the replication's checkpoints into one stemkit checkpoint.

    Args:
        paths: see :func:`convert_obsrnn`.
        out: the checkpoint to write (with a ``.sha256`` beside it).
        origin: where the files came from, kept in the provenance.

    Raises:
        CheckpointError: see :func:`convert_obsrnn`.
    """
    model = convert_obsrnn(paths)
    record: dict[str, Any] = {
        "converted_from": "obsrnn",
        "files": [{"path": str(Path(p).resolve()), "sha256": sha256_of(p)} for p in paths],
    }
    if origin is not None:
        record["origin"] = dict(origin)
    return save_checkpoint(out, model, provenance={**provenance(), "obsrnn_import": record})
