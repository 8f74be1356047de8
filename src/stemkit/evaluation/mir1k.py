"""The MIR-1K evaluation protocol: GNSDR, GSIR and GSAR over the test singers' clips.

Each clip's mixture (the channel average) is separated whole; the scores are
``bss_eval_sources`` SDR, SIR, SAR and NSDR per clip, and their clip-length-weighted means
(spec-notes §6, §7.3). The clips and the split are read by :mod:`stemkit.data.mir1k`.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stemkit.audio.convert import resample
from stemkit.data.mir1k import MIR1K_RATE, check_sources, list_clips, read_clip, split_clips
from stemkit.models.base import SeparationModel

__all__ = ["evaluate_mir1k", "score_clip"]


def score_clip(
    references: Tensor | np.ndarray, estimates: Tensor | np.ndarray, mixture: Tensor | np.ndarray
) -> dict[str, np.ndarray]:
    """``bss_eval_sources`` scores of one clip, and its NSDR.

    Args:
        references: ``(nb_sources, nb_samples)`` true sources.
        estimates: ``(nb_sources, nb_samples)`` their estimates, same order.
        mixture: ``(nb_samples,)`` the input; it is scored as the estimate of every source.

    Returns:
        ``SDR``, ``SIR``, ``SAR`` of the estimates and ``NSDR`` = SDR − SDR(mixture), each
        ``(nb_sources,)`` in dB, in the order of ``references`` (estimates are matched to
        references by the best permutation, as mir_eval does).
    """
    from stemkit.metrics import bss_eval_sources

    mix = torch.as_tensor(mixture, dtype=torch.float64)
    ref = torch.as_tensor(references, dtype=torch.float64)
    if mix.dim() != 1 or ref.dim() != 2 or ref.shape[-1] != mix.shape[-1]:
        raise ValueError(
            f"expected references (nb_sources, nb_samples) and mixture (nb_samples,), got "
            f"{tuple(ref.shape)} and {tuple(mix.shape)}"
        )
    separated = bss_eval_sources(ref, torch.as_tensor(estimates, dtype=torch.float64))
    baseline = bss_eval_sources(ref, mix.expand_as(ref))
    return {
        "SDR": separated.sdr,
        "SIR": separated.sir,
        "SAR": separated.sar,
        "NSDR": separated.sdr - baseline.sdr,
    }


@torch.no_grad()
def _separate_clip(model: SeparationModel, mixture: Tensor, native_rate: int) -> Tensor:
    """Estimates ``(nb_model_sources, nb_samples)`` at the native rate for a mono mixture."""
    x = resample(mixture[None], native_rate, model.sample_rate)
    # a stereo model gets the mono mixture on both channels and gives back its channel mean
    x = x.expand(model.audio_channels, -1)
    device = next(iter(model.parameters()), torch.empty(0)).device
    estimates = model(x[None].to(device))[0].mean(dim=1).cpu().float()
    estimates = resample(estimates, model.sample_rate, native_rate)
    length = mixture.shape[-1]
    if estimates.shape[-1] < length:
        estimates = torch.nn.functional.pad(estimates, (0, length - estimates.shape[-1]))
    return estimates[..., :length]


def evaluate_mir1k(
    model: SeparationModel,
    root: str | PathLike[str],
    *,
    split: str = "test",
    sources: Sequence[str] = ("accompaniment", "vocals"),
    max_clips: int | None = None,
    native_rate: int | None = MIR1K_RATE,
) -> dict[str, Any]:
    """Score ``model`` on the MIR-1K protocol: GNSDR, GSIR and GSAR per source.

    Each clip's mixture (the channel average, 16 kHz) is resampled to the model's rate,
    separated whole, and the estimates resampled back; the references are half of each channel
    (the scores are scale-invariant). Per clip: :func:`score_clip`; over clips: the
    length-weighted mean (:func:`stemkit.metrics.gnsdr`).

    Args:
        model: a separation model whose ``sources`` include ``sources``; stereo models get the
            mono mixture on both channels.
        root: the MIR-1K folder.
        split: ``"test"`` (the protocol) or another split of :func:`split_clips`.
        sources: the sources scored, in the order of the returned values (the literature
            reports [accompaniment, voice]).
        max_clips: score only the first clips (by name), for quick checks.
        native_rate: as in :func:`list_clips`.

    Returns:
        ``{"GNSDR": {source: dB}, "GSIR": {...}, "GSAR": {...}, "clips": n, "seconds": total,
        "per_clip": [{"name", "nb_samples", "NSDR": {...}, "SDR": {...}, "SIR": {...},
        "SAR": {...}}, ...]}``.

    Raises:
        DatasetError: the folder does not hold the layout.
        ValueError: the model lacks a source, or a score is infinite (a perfect estimate).
    """
    from stemkit.metrics import gnsdr

    sources = check_sources(sources)
    missing = [s for s in sources if s not in model.sources]
    if missing:
        raise ValueError(
            f"the model separates {', '.join(model.sources)}, not {', '.join(missing)}"
        )
    clips = split_clips(list_clips(root, native_rate), split, valid_fraction=0.0)
    clips = clips[:max_clips] if max_clips is not None else clips
    rows = [model.sources.index(s) for s in sources]
    was_training = model.training
    model.eval()
    per_clip: list[dict[str, Any]] = []
    try:
        for clip in clips:
            references = read_clip(clip, sources)[:, 0]
            mixture = references.sum(dim=0)
            estimates = _separate_clip(model, mixture, clip.sample_rate)[rows]
            scores = score_clip(references, estimates, mixture)
            row: dict[str, Any] = {"name": clip.name, "nb_samples": clip.nb_frames}
            for metric, values in scores.items():
                row[metric] = {s: float(v) for s, v in zip(sources, values, strict=True)}
            per_clip.append(row)
    finally:
        model.train(was_training)
    lengths = np.array([row["nb_samples"] for row in per_clip], dtype=np.float64)
    result: dict[str, Any] = {}
    for metric, name in (("NSDR", "GNSDR"), ("SIR", "GSIR"), ("SAR", "GSAR")):
        values = np.array([[row[metric][s] for s in sources] for row in per_clip])
        result[name] = dict(zip(sources, (float(v) for v in gnsdr(values, lengths)), strict=True))
    result["clips"] = len(per_clip)
    result["seconds"] = float(sum(c.duration for c in clips))
    result["per_clip"] = per_clip
    return result


# --- building a MIR-1K-layout folder ----------------------------------------------------------
