"""Writing the official Open-Unmix weights as one stemkit checkpoint.

The per-target files are read by :mod:`stemkit.artifacts.openunmix.files`; this module checks
that they belong together, fills in what they do not record (sample rate, hop size) and saves
a ``umx`` checkpoint whose provenance names every file and its checksum.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stemkit.artifacts.checkpoint import provenance, save_checkpoint
from stemkit.artifacts.openunmix.files import (
    ARCHITECTURE,
    load_core,
    read_openunmix_target,
)
from stemkit.dsp.stft import bandwidth_to_max_bin
from stemkit.errors import CheckpointError, StemkitError
from stemkit.models.spectral import Separator
from stemkit.models.umx import OpenUnmix

__all__ = ["DEFAULT_SAMPLE_RATE", "import_openunmix"]

#: Upstream defaults for what the weights do not record.
DEFAULT_SAMPLE_RATE = 44100


def _bandwidth_for(max_bin: int, sample_rate: int, n_fft: int, hints: Sequence[float]) -> float:
    """A bandwidth in Hz that ``umx`` turns back into ``max_bin`` (a round one if possible)."""
    candidates = [*hints, 16000.0, (max_bin - 0.5) * sample_rate / n_fft]
    for bandwidth in candidates:
        if bandwidth_to_max_bin(sample_rate, n_fft, bandwidth) == max_bin:
            return float(bandwidth)
    raise CheckpointError(  # pragma: no cover - the last candidate always fits
        f"no bandwidth gives max_bin={max_bin} at {sample_rate} Hz with n_fft={n_fft}"
    )


def _agreed(values: list[tuple[Path, int | None]], what: str) -> int | None:
    known = [(path, value) for path, value in values if value is not None]
    for path, value in known[1:]:
        if value != known[0][1]:
            raise CheckpointError(
                f"{path}: {what} {value} differs from {known[0][1]} in {known[0][0]}; the files "
                "come from different models"
            )
    return known[0][1] if known else None


def import_openunmix(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    targets: Sequence[str] | None = None,
    niter: int = 1,
    softmask: bool = False,
    residual: bool = False,
    wiener_win_len: int | None = 300,
    sample_rate: int | None = None,
    n_hop: int | None = None,
    origin: Mapping[str, Any] | None = None,
) -> Path:
    """Turn upstream per-target files into one stemkit ``umx`` checkpoint.

    Args:
        paths: one ``.pth`` per target, all from the same model (same sizes).
        out: the checkpoint to write (with a ``.sha256`` beside it).
        targets: stem names, one per path; default: from the file names.
        niter: Wiener EM iterations at separation time (1, as upstream separates; 0 to
            stream).
        softmask: ratio-mask initial estimates.
        residual: add a ``"residual"`` stem (mixture minus the targets).
        wiener_win_len: frames per Wiener block, ``None`` for whole tracks.
        sample_rate: overrides what the files say; default: the files, else 44100.
        n_hop: overrides what the JSON says; default: the JSON, else ``n_fft // 4``.
        origin: where the files came from (a catalogue name, URLs), kept in the provenance
            under ``"origin"``.

    Returns:
        ``out`` as a ``Path``.

    Raises:
        CheckpointError: a file is bad or disagrees with the others; the message names it.
        StemkitError: bad names or options.
    """
    from stemkit.models import build

    if not paths:
        raise StemkitError("give at least one Open-Unmix target file (.pth)")
    all_weights = [read_openunmix_target(path) for path in paths]
    names = list(targets) if targets is not None else [w.target for w in all_weights]
    if len(names) != len(all_weights):
        raise StemkitError(f"{len(names)} target name(s) for {len(all_weights)} file(s)")
    if len(set(names)) != len(names):
        raise StemkitError(
            f"target names must be unique, got {', '.join(names)}; name them with --targets"
        )
    if niter > 0 and len(names) < 2 and not residual:
        raise StemkitError(
            "Wiener EM needs at least two stems: import more targets, add the residual stem, "
            "or separate with niter 0"
        )
    first = all_weights[0]
    for weights in all_weights[1:]:
        for name in ARCHITECTURE:
            if getattr(weights, name) != getattr(first, name):
                raise CheckpointError(
                    f"{weights.path}: {name} {getattr(weights, name)} differs from "
                    f"{getattr(first, name)} in {first.path}; all targets of one model must "
                    "share their sizes"
                )

    assumed: list[str] = []
    rate = sample_rate or _agreed([(w.path, w.sample_rate) for w in all_weights], "sample rate")
    if rate is None:
        rate = DEFAULT_SAMPLE_RATE
        assumed.append(f"sample_rate={rate}")
    hop = n_hop or _agreed([(w.path, w.n_hop) for w in all_weights], "hop size")
    if hop is None:
        hop = first.n_fft // 4
        assumed.append(f"n_hop={hop}")
    hints = [w.bandwidth for w in all_weights if w.bandwidth is not None]
    bandwidth = _bandwidth_for(first.max_bin, rate, first.n_fft, hints)

    try:
        model = build(
            "umx",
            sources=names,
            hidden_size=first.hidden_size,
            nb_layers=first.nb_layers,
            unidirectional=first.unidirectional,
            sample_rate=rate,
            audio_channels=first.nb_channels,
            n_fft=first.n_fft,
            n_hop=hop,
            bandwidth=bandwidth,
            niter=niter,
            softmask=softmask,
            residual=residual,
            wiener_win_len=wiener_win_len,
        )
    except ValueError as error:  # an option out of range, e.g. a hop larger than n_fft
        raise StemkitError(f"cannot build the umx model: {error}") from None
    assert isinstance(model, Separator)
    for name, weights in zip(names, all_weights, strict=True):
        core = model.target_models[name]
        assert isinstance(core, OpenUnmix)
        load_core(core, weights)
    model.eval()
    record: dict[str, Any] = {
        "converted_from": "openunmix",
        "assumed": assumed,
        "files": [
            {
                "path": str(w.path.resolve()),
                "target": name,
                "layout": w.layout,
                "sha256": w.sha256,
                "metadata": w.metadata_files,
            }
            for name, w in zip(names, all_weights, strict=True)
        ],
    }
    if origin is not None:
        record["origin"] = dict(origin)
    return save_checkpoint(out, model, provenance={**provenance(), "openunmix_import": record})
