"""asteroid's X-UMX weights → the ``state_dict`` keys of :class:`stemkit.models.xumx.XUMX`,
and a published asteroid ``.pth`` → a stemkit ``xumx`` checkpoint (:func:`import_xumx`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stemkit.errors import CheckpointError

__all__ = ["XUMX_NITER", "convert_asteroid_state_dict", "import_xumx", "xumx_from_asteroid"]

#: Wiener EM iterations asteroid's X-UMX recipe separates with (its eval.py, ``--niter 1``).
XUMX_NITER = 1

# asteroid's XUMX (asteroid/models/x_umx.py) keeps per-source layers in ModuleDicts:
# layer_enc.<src>.enc = Sequential(Linear, BatchNorm1d); layer_lstm.<src> = LSTM;
# layer_dec.<src>.dec = Sequential(Linear, BatchNorm1d, ReLU, Linear, BatchNorm1d); and the
# standardisation in a ParameterDict mean_scale.{input,output}_{mean,scale}_<src>.
_ASTEROID_LAYERS = {
    ("layer_enc", "enc.0"): "fc1",
    ("layer_enc", "enc.1"): "bn1",
    ("layer_dec", "dec.0"): "fc2",
    ("layer_dec", "dec.1"): "bn2",
    ("layer_dec", "dec.3"): "fc3",
    ("layer_dec", "dec.4"): "bn3",
}
_ASTEROID_SCALERS = ("input_mean", "input_scale", "output_mean", "output_scale")
# The STFT window is a (frozen) parameter there, shared by encoder and decoder; ours is not saved.
_ASTEROID_WINDOWS = {"encoder.0.window", "decoder.window"}


def convert_asteroid_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the keys of an asteroid ``XUMX`` ``state_dict`` to those of :class:`XUMX`.

    ``layer_enc.<s>.enc.{0,1}`` → ``target_models.<s>.{fc1,bn1}``, ``layer_lstm.<s>.*`` →
    ``target_models.<s>.lstm.*``, ``layer_dec.<s>.dec.{0,1,3,4}`` →
    ``target_models.<s>.{fc2,bn2,fc3,bn3}``, ``mean_scale.<name>_<s>`` →
    ``target_models.<s>.<name>``; the STFT windows are dropped. Build the model with the
    sources in the checkpoint's order (its ``model_args["sources"]``) and load strictly.

    Args:
        state: the ``state_dict`` (tensors keyed by asteroid names).

    Returns:
        A new dictionary with our key names and the same tensors.

    Raises:
        ValueError: a key that is not part of asteroid's X-UMX layout.
    """
    scaler = re.compile(rf"mean_scale\.({'|'.join(_ASTEROID_SCALERS)})_(.+)")
    converted: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key in _ASTEROID_WINDOWS:
            continue
        match = scaler.fullmatch(key)
        if match:
            converted[f"target_models.{match.group(2)}.{match.group(1)}"] = value
            continue
        group, _, rest = key.partition(".")
        source, _, name = rest.partition(".")
        if group == "layer_lstm" and source and name:
            converted[f"target_models.{source}.lstm.{name}"] = value
            continue
        layer, _, param = name.rpartition(".")
        target = _ASTEROID_LAYERS.get((group, layer))
        if target is None or not source:
            unknown.append(key)
            continue
        converted[f"target_models.{source}.{target}.{param}"] = value
    if unknown:
        raise ValueError(
            f"not an asteroid X-UMX state_dict: unknown keys {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''}"
        )
    return converted


def _model_args(path: Path, payload: Any) -> tuple[dict[str, Any], Mapping[str, Tensor]]:
    if not isinstance(payload, dict) or not {"state_dict", "model_args"} <= set(payload):
        found = sorted(payload)[:6] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path}: not an asteroid model file (a dict with state_dict and model_args; "
            f"found {found})"
        )
    name = payload.get("model_name", "XUMX")
    if name not in ("XUMX", "BrokenXUMX"):
        raise CheckpointError(f"{path}: holds asteroid's {name}, not XUMX")
    args, state = payload["model_args"], payload["state_dict"]
    if not isinstance(args, dict) or not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: model_args or state_dict is not a dictionary")
    return args, state


def xumx_from_asteroid(
    path: str | os.PathLike[str],
    *,
    niter: int = XUMX_NITER,
    softmask: bool = False,
    residual: bool = False,
    wiener_win_len: int | None = 300,
) -> Any:
    """A stemkit ``xumx`` model holding asteroid's published X-UMX weights, in eval mode.

    The file is what asteroid's recipe saves (``model.serialize()``: ``model_name``,
    ``state_dict``, ``model_args``, ``infos``). It is read through the restricted unpickler of
    :mod:`~stemkit.artifacts.pickled_modules` (tensors and plain containers only). The sizes
    come from ``model_args``; the bandwidth is the one that gives its ``max_bin``.

    Args:
        path: asteroid's ``.pth``.
        niter: Wiener EM iterations at separation time (1, as the recipe separates).
        softmask, residual, wiener_win_len: as for :func:`stemkit.models.xumx.xumx`.

    Raises:
        CheckpointError: not an asteroid X-UMX file, or settings stemkit's ``xumx`` cannot hold
            (a window length other than ``in_chan``, ``spec_power`` other than 1).
    """
    from stemkit.artifacts.openunmix.convert import _bandwidth_for
    from stemkit.artifacts.pickled_modules import restricted_load
    from stemkit.models import build

    path = Path(path)
    args, state = _model_args(path, restricted_load(path, packages=()))
    try:
        n_fft, window, power = int(args["in_chan"]), int(args["window_length"]), args["spec_power"]
        sources: Sequence[str] = [str(source) for source in args["sources"]]
        rate, hop, hidden = int(args["sample_rate"]), int(args["n_hop"]), int(args["hidden_size"])
        channels, layers = int(args["nb_channels"]), int(args["nb_layers"])
        bidirectional = bool(args["bidirectional"])
        max_bin = int(args.get("max_bin") or n_fft // 2 + 1)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: model_args lacks a usable {error}") from None
    if window != n_fft:
        raise CheckpointError(
            f"{path}: window_length {window} differs from in_chan {n_fft}; stemkit's xumx "
            "windows the whole FFT"
        )
    if power != 1:
        raise CheckpointError(f"{path}: spec_power={power}; stemkit's xumx uses magnitudes (1)")
    try:
        model = build(
            "xumx",
            sources=list(sources),
            hidden_size=hidden,
            nb_layers=layers,
            unidirectional=not bidirectional,
            bandwidth=_bandwidth_for(max_bin, rate, n_fft, [16000.0]),
            sample_rate=rate,
            audio_channels=channels,
            n_fft=n_fft,
            n_hop=hop,
            niter=niter,
            softmask=softmask,
            residual=residual,
            wiener_win_len=wiener_win_len,
        )
        converted = convert_asteroid_state_dict(state)
        model.load_state_dict(converted, strict=True)
    except (ValueError, RuntimeError) as error:
        summary = " ".join(str(error).split())
        raise CheckpointError(
            f"{path}: does not load into stemkit's xumx ({summary[:400]})"
        ) from None
    saved_window = state.get("encoder.0.window")
    # asteroid's window is torch.hann_window(window_length), periodic, as ours
    hann = torch.hann_window(n_fft)
    if saved_window is not None and not (
        saved_window.shape == hann.shape and torch.allclose(saved_window.float(), hann)
    ):
        raise CheckpointError(f"{path}: its STFT window is not the periodic Hann window")
    return model.eval()


def import_xumx(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    niter: int = XUMX_NITER,
    softmask: bool = False,
    residual: bool = False,
    wiener_win_len: int | None = 300,
    origin: Mapping[str, Any] | None = None,
) -> Path:
    """Convert asteroid's X-UMX ``.pth`` into a stemkit checkpoint; see :func:`xumx_from_asteroid`.

    Returns:
        ``out`` as a ``Path`` (a ``.sha256`` is written beside it).
    """
    from stemkit.artifacts.checkpoint import provenance, save_checkpoint, sha256_of

    model = xumx_from_asteroid(
        path, niter=niter, softmask=softmask, residual=residual, wiener_win_len=wiener_win_len
    )
    record: dict[str, Any] = {
        "converted_from": "asteroid-xumx",
        "path": str(Path(path).resolve()),
        "sha256": sha256_of(path),
    }
    if origin is not None:
        record["origin"] = dict(origin)
    return save_checkpoint(out, model, provenance={**provenance(), "xumx_import": record})
