"""Score a separator on a dataset of reference stems. Knows nothing of training.

For each track the mixture is separated with the chunked inference path and every estimated
source is compared with its reference:

* ``uSDR``: one SNR over the whole track (MDX definition), aggregated by the mean over tracks;
* ``SDR`` frames: BSS Eval v4 frame SDR on 1 s frames (equal to the frame SNR), aggregated as
  cSDR, the median over frames then the median over tracks.

The mixture itself, used as the estimate of every source, is scored alongside as the baseline a
separator has to beat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemkit.metrics.sdr import aggregate_csdr, framewise_sdr, usdr
from stemkit.metrics.store import track_document, write_json
from stemkit.models.base import SeparationModel


@dataclass
class TrackScores:
    """Scores of one track.

    Attributes:
        name: track name.
        usdr: ``{source: dB}`` of the separator.
        sdr_frames: ``{source: (nb_frames,)}`` v4 frame SDR in dB (NaN on silent frames).
        baseline_usdr: ``{source: dB}`` of the mixture taken as the estimate.
        baseline_sdr_frames: frame SDR of that baseline.
    """

    name: str
    usdr: dict[str, float]
    sdr_frames: dict[str, np.ndarray]
    baseline_usdr: dict[str, float]
    baseline_sdr_frames: dict[str, np.ndarray]


@dataclass
class Report:
    """Scores of one method over a set of tracks, with their aggregates."""

    method: str
    sources: tuple[str, ...]
    tracks: list[TrackScores] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Aggregates per source: uSDR (mean over tracks) and cSDR (median of medians)."""
        rows: dict[str, Any] = {}
        for source in self.sources:
            rows[source] = {
                "uSDR": _mean([t.usdr[source] for t in self.tracks]),
                "cSDR": aggregate_csdr([t.sdr_frames[source] for t in self.tracks]),
                "mixture_uSDR": _mean([t.baseline_usdr[source] for t in self.tracks]),
                "mixture_cSDR": aggregate_csdr(
                    [t.baseline_sdr_frames[source] for t in self.tracks]
                ),
            }
        rows["average"] = {
            key: _mean([rows[s][key] for s in self.sources])
            for key in ("uSDR", "cSDR", "mixture_uSDR", "mixture_cSDR")
        }
        return {
            "method": self.method,
            "nb_tracks": len(self.tracks),
            "metrics": {
                "uSDR": "MDX 2021 SDR per track (eps 1e-7), mean over tracks",
                "cSDR": "BSS Eval v4 SDR on 1 s frames, median over frames, median over tracks",
                "mixture_*": "the same with the mixture as the estimate of every source",
            },
            "sources": rows,
        }

    def table(self) -> str:
        """The summary as a fixed-width text table (dB)."""
        summary = self.summary()["sources"]
        header = f"{'source':<10}{'uSDR':>9}{'cSDR':>9}{'mix uSDR':>10}{'mix cSDR':>10}"
        lines = [f"{self.method} on {len(self.tracks)} track(s), scores in dB", header]
        for source in [*self.sources, "average"]:
            row = summary[source]
            lines.append(
                f"{source:<10}{row['uSDR']:>9.2f}{row['cSDR']:>9.2f}"
                f"{row['mixture_uSDR']:>10.2f}{row['mixture_cSDR']:>10.2f}"
            )
        return "\n".join(lines)


def score_track(
    name: str,
    references: np.ndarray | torch.Tensor,
    estimates: np.ndarray | torch.Tensor,
    sources: Sequence[str],
    sample_rate: int,
) -> TrackScores:
    """Score one track's estimates.

    Args:
        name: track name.
        references: ``(nb_sources, nb_channels, nb_samples)``.
        estimates: the same shape, in the same source order.
        sources: source names.
        sample_rate: rate in Hz; frames are one second long.
    """
    ref = np.asarray(references, dtype=np.float64)
    est = np.asarray(estimates, dtype=np.float64)
    mixture = np.broadcast_to(ref.sum(axis=0, keepdims=True), ref.shape)
    track_usdr = usdr(ref, est)
    base_usdr = usdr(ref, mixture)
    frames = framewise_sdr(ref, est, sample_rate, sample_rate)
    base_frames = framewise_sdr(ref, mixture, sample_rate, sample_rate)
    return TrackScores(
        name=name,
        usdr={s: float(v) for s, v in zip(sources, track_usdr, strict=True)},
        sdr_frames={s: frames[i] for i, s in enumerate(sources)},
        baseline_usdr={s: float(v) for s, v in zip(sources, base_usdr, strict=True)},
        baseline_sdr_frames={s: base_frames[i] for i, s in enumerate(sources)},
    )


def evaluate(
    model: SeparationModel,
    root: str | Path,
    subset: str = "test",
    *,
    method: str = "model",
    segment: float | None = None,
    overlap: float = 0.25,
    batch_size: int = 1,
    device: str = "cpu",
    out_dir: str | Path | None = None,
    progress: bool = False,
    limit: int | None = None,
) -> Report:
    """Separate and score every track of ``root/subset`` (MUSDB18-HQ layout).

    The mixture is the sum of the reference stems, so the scores measure separation only.
    When ``out_dir`` is given, one museval-layout JSON per track goes to
    ``out_dir/<subset>/<track>.json`` and the aggregates to ``out_dir/summary.json``.
    """
    from stemkit.audio import read_audio
    from stemkit.audio.convert import resample
    from stemkit.data.musdb import list_tracks
    from stemkit.inference import separate

    sources = tuple(model.sources)
    tracks = list_tracks(root, subset, sources=sources)[:limit]
    report = Report(method=method, sources=sources)
    for track in tracks:
        references = torch.stack(
            [
                read_audio(track.folder / f"{s}.wav", channels=model.audio_channels)[0]
                for s in sources
            ]
        )
        mixture = references.sum(dim=0)
        if track.sample_rate != model.sample_rate:
            mixture = resample(mixture, track.sample_rate, model.sample_rate)
        oracle = getattr(model, "requires_references", False)
        if oracle:
            # Oracles filter with the true stems, aligned sample by sample: whole tracks only.
            model.set_references(  # type: ignore[operator]
                torch.stack([resample(r, track.sample_rate, model.sample_rate) for r in references])
            )
        estimates = separate(
            model,
            mixture,
            segment=None if oracle else segment,
            overlap=overlap,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
        if track.sample_rate != model.sample_rate:
            estimates = resample(estimates, model.sample_rate, track.sample_rate)
        estimates = _fit_length(estimates, references.shape[-1])
        scores = score_track(track.name, references, estimates, sources, track.sample_rate)
        report.tracks.append(scores)
        if out_dir is not None:
            document = track_document(
                {s: {"SDR": scores.sdr_frames[s]} for s in sources},
                extra={"uSDR": scores.usdr, "mixture_uSDR": scores.baseline_usdr},
            )
            write_json(Path(out_dir) / subset / f"{track.name}.json", document)
    if out_dir is not None:
        write_json(Path(out_dir) / "summary.json", report.summary())
    return report


def _fit_length(estimates: torch.Tensor, nb_samples: int) -> torch.Tensor:
    """Zero-pad or trim the last axis to ``nb_samples``, as museval does with estimates."""
    missing = nb_samples - estimates.shape[-1]
    if missing > 0:
        return torch.nn.functional.pad(estimates, (0, missing))
    return estimates[..., :nb_samples]


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan
