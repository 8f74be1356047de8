"""asteroid's X-UMX weights → the ``state_dict`` keys of :class:`stemkit.models.xumx.XUMX`."""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

__all__ = ["convert_asteroid_state_dict"]

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
