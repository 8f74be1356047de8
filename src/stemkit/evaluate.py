"""Score a separator on a dataset of reference stems. Knows nothing of training.

For each track the mixture (the sum of the reference stems) is separated with the chunked
inference path and every estimated source is compared with its reference:

* ``uSDR``: one SNR over the whole track (MDX definition), aggregated by the mean over tracks;
* BSS Eval v4 on 1 s frames, aggregated as cSDR (median over frames, then median over tracks).
  ``metrics="fast"`` computes the frame SDR only, which needs no distortion filters (it equals
  the frame SNR); ``metrics="full"`` runs :func:`stemkit.metrics.bsseval.bss_eval_v4` for SDR,
  ISR, SIR and SAR (same SDR, about a second more per track-minute).

The mixture itself, used as the estimate of every source, is scored alongside as the baseline a
separator has to beat.

With an output folder the evaluation is resumable: ``out/evaluation.json`` records what was
evaluated and how, each finished track is written atomically to ``out/<subset>/<track>.json``
(museval's layout), and a later run with the same settings reads those back instead of
separating the tracks again.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemkit.data.musdb import SUBSETS, Track
from stemkit.errors import StemkitError
from stemkit.metrics.bsseval import bss_eval_v4
from stemkit.metrics.report import Report, TrackScores, write_report
from stemkit.metrics.sdr import framewise_sdr, usdr
from stemkit.metrics.store import read_json, write_json
from stemkit.models.base import SeparationModel

__all__ = [
    "METRIC_MODES",
    "SETTINGS_FILE",
    "EvaluationError",
    "Report",
    "TrackScores",
    "evaluate",
    "score_track",
]

#: ``fast``: frame SDR and uSDR only; ``full``: BSS Eval v4 SDR, ISR, SIR, SAR and uSDR.
METRIC_MODES: tuple[str, ...] = ("fast", "full")

#: The file of an output folder recording the settings its scores were computed with.
SETTINGS_FILE = "evaluation.json"


class EvaluationError(StemkitError):
    """An evaluation cannot produce trustworthy scores (bad estimates, mixed settings)."""


def score_track(
    name: str,
    references: np.ndarray | torch.Tensor,
    estimates: np.ndarray | torch.Tensor,
    sources: Sequence[str],
    sample_rate: int,
    metrics: str = "fast",
) -> TrackScores:
    """Score one track's estimates.

    Args:
        name: track name.
        references: ``(nb_sources, nb_channels, nb_samples)``.
        estimates: the same shape, in the same source order.
        sources: source names.
        sample_rate: rate in Hz; frames are one second long.
        metrics: ``"fast"`` (frame SDR) or ``"full"`` (BSS Eval v4 SDR, ISR, SIR, SAR).

    Raises:
        EvaluationError: ``estimates`` hold NaN or infinite samples.
    """
    _check_mode(metrics)
    ref = np.asarray(references, dtype=np.float64)
    est = np.asarray(estimates, dtype=np.float64)
    _check_finite(f"track '{name}'", est, sources)
    mixture = np.broadcast_to(ref.sum(axis=0, keepdims=True), ref.shape)
    other: dict[str, dict[str, np.ndarray]] = {}
    if metrics == "full":
        result = bss_eval_v4(ref, est, window=sample_rate, hop=sample_rate)
        frames = result.sdr
        for metric, values in (("ISR", result.isr), ("SIR", result.sir), ("SAR", result.sar)):
            other[metric] = {s: values[i] for i, s in enumerate(sources)}
    else:
        frames = framewise_sdr(ref, est, sample_rate, sample_rate)
    base_frames = framewise_sdr(ref, mixture, sample_rate, sample_rate)
    return TrackScores(
        name=name,
        usdr={s: float(v) for s, v in zip(sources, usdr(ref, est), strict=True)},
        sdr_frames={s: frames[i] for i, s in enumerate(sources)},
        baseline_usdr={s: float(v) for s, v in zip(sources, usdr(ref, mixture), strict=True)},
        baseline_sdr_frames={s: base_frames[i] for i, s in enumerate(sources)},
        other_frames=other,
    )


def evaluate(
    model: SeparationModel,
    root: str | Path,
    subset: str = "test",
    *,
    method: str = "model",
    metrics: str = "fast",
    segment: float | None = None,
    overlap: float = 0.25,
    batch_size: int = 1,
    device: str = "cpu",
    out_dir: str | Path | None = None,
    progress: bool = False,
    limit: int | None = None,
    jobs: int = 1,
    settings: Mapping[str, Any] | None = None,
    force: bool = False,
) -> Report:
    """Separate and score every track of ``root/subset`` (MUSDB18-HQ layout).

    The mixture is the sum of the reference stems, so the scores measure separation only.
    When ``out_dir`` is given, one museval-layout JSON per track goes to
    ``out_dir/<subset>/<track>.json``, the aggregates to ``out_dir/summary.json``, a readable
    ``report.md`` and a ``scores.png`` beside them, and the settings to
    ``out_dir/evaluation.json``. Tracks already scored there with the same settings are read
    back, not separated again. Scores are rounded to 5 decimals as stored, so a resumed run
    gives the same numbers as an uninterrupted one.

    Args:
        model: the separator; its sources must all be stems of the dataset.
        root: dataset root.
        subset: ``"train"`` or ``"test"``.
        method: name of the method in reports.
        metrics: ``"fast"`` or ``"full"`` (see the module docstring).
        segment: chunk length in seconds (None: whole tracks); oracles always use whole tracks.
        overlap: chunk overlap fraction.
        batch_size: chunks per forward pass.
        device: where the model runs.
        out_dir: folder for the scores; None keeps them in memory only.
        progress: show a bar over the tracks on stderr.
        limit: score only the first ``limit`` tracks.
        jobs: worker processes (each separates and scores whole tracks with one torch thread);
            the scores do not depend on it.
        settings: more settings to record and check on resume (e.g. the checkpoint's sha256).
        force: with ``out_dir``, discard scores computed there with other settings instead of
            refusing.

    Raises:
        DatasetError: the dataset is missing, or a track lacks a source file or has stems
            of different lengths or channel counts (the message names the file).
        EvaluationError: the estimates of a track hold NaN or infinite samples, or
            ``out_dir`` holds scores computed with other settings (and ``force`` is off).
    """
    from tqdm import tqdm

    from stemkit.data.musdb import list_tracks

    _check_mode(metrics)
    if jobs < 1:
        raise EvaluationError(f"jobs must be at least 1, got {jobs}")
    sources = tuple(model.sources)
    tracks = list_tracks(root, subset, sources=sources)[:limit]
    options: dict[str, Any] = {
        "sources": sources,
        "metrics": metrics,
        "segment": segment,
        "overlap": overlap,
        "batch_size": batch_size,
        "device": device,
    }
    done: dict[str, TrackScores] = {}
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        record = _settings(model, method, metrics, segment, overlap, settings)
        resume = _claim_folder(out, record, force)
        if resume:
            done = _read_back(out / subset, tracks, sources)
    todo = [t for t in tracks if t.name not in done]

    def finish(scores: TrackScores) -> None:
        # Round-tripping through the stored document rounds exactly as a resumed run reads it.
        document = scores.to_document()
        done[scores.name] = TrackScores.from_document(scores.name, document)
        if out is not None:
            write_json(out / subset / f"{scores.name}.json", document)

    with tqdm(
        total=len(tracks), initial=len(done), desc="tracks", unit="track", disable=not progress
    ) as bar:
        if jobs == 1 or len(todo) <= 1:
            for track in todo:
                finish(_separate_and_score(model, track, **options))
                bar.update()
        else:
            _run_parallel(model, todo, options, min(jobs, len(todo)), finish, bar.update)

    report = Report(method=method, sources=sources, tracks=[done[t.name] for t in tracks])
    if out is not None:
        write_json(out / "summary.json", report.summary())
        write_report(report, out)
    return report


# --- one track --------------------------------------------------------------------------------


def _separate_and_score(
    model: SeparationModel,
    track: Track,
    *,
    sources: tuple[str, ...],
    metrics: str,
    segment: float | None,
    overlap: float,
    batch_size: int,
    device: str,
) -> TrackScores:
    from stemkit.audio import read_audio
    from stemkit.audio.convert import resample
    from stemkit.inference import separate

    references = torch.stack(
        [read_audio(track.path(s), channels=model.audio_channels)[0] for s in sources]
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
    )
    if track.sample_rate != model.sample_rate:
        estimates = resample(estimates, model.sample_rate, track.sample_rate)
    estimates = _fit_length(estimates, references.shape[-1])
    _check_finite(f"{track.folder}: track '{track.name}'", estimates.numpy(), sources)
    return score_track(track.name, references, estimates, sources, track.sample_rate, metrics)


def _check_finite(where: str, estimates: np.ndarray, sources: Sequence[str]) -> None:
    bad = [s for s, e in zip(sources, estimates, strict=True) if not np.isfinite(e).all()]
    if bad:
        raise EvaluationError(
            f"{where}: the estimates of {', '.join(bad)} hold NaN or infinite samples, so "
            "no score can be given; the model has diverged or its checkpoint is corrupt "
            "(retrain, or evaluate an earlier checkpoint)"
        )


def _fit_length(estimates: torch.Tensor, nb_samples: int) -> torch.Tensor:
    """Zero-pad or trim the last axis to ``nb_samples``, as museval does with estimates."""
    missing = nb_samples - estimates.shape[-1]
    if missing > 0:
        return torch.nn.functional.pad(estimates, (0, missing))
    return estimates[..., :nb_samples]


def _check_mode(metrics: str) -> None:
    if metrics not in METRIC_MODES:
        raise EvaluationError(f"unknown metrics mode {metrics!r}; choose one of {METRIC_MODES}")


# --- worker processes -------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(model: SeparationModel, options: dict[str, Any]) -> None:
    # Several processes share the cores: one thread each, or they thrash.
    torch.set_num_threads(1)
    _WORKER["model"] = model
    _WORKER["options"] = options


def _worker_task(track: Track) -> TrackScores:
    try:
        return _separate_and_score(_WORKER["model"], track, **_WORKER["options"])
    except StemkitError as err:
        # Subclasses with extra constructor arguments do not survive pickling back.
        raise EvaluationError(str(err)) from None


def _run_parallel(
    model: SeparationModel,
    tracks: list[Track],
    options: dict[str, Any],
    jobs: int,
    finish: Any,
    advance: Any,
) -> None:
    # spawn, not fork: a forked copy of a process that has used torch threads can deadlock.
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_init_worker, initargs=(model, options)
    )
    try:
        pending: set[Future[TrackScores]] = {executor.submit(_worker_task, t) for t in tracks}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in finished:
                finish(future.result())  # re-raises a worker's error here
                advance()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


# --- resuming ---------------------------------------------------------------------------------


def _settings(
    model: SeparationModel,
    method: str,
    metrics: str,
    segment: float | None,
    overlap: float,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    record = {
        "method": method,
        "model_name": getattr(model, "model_name", type(model).__name__),
        "model_kwargs": getattr(model, "init_kwargs", None),
        "sources": list(model.sources),
        "sample_rate": model.sample_rate,
        "metrics": metrics,
        "segment": segment,
        "overlap": overlap,
        **(extra or {}),
    }
    # as JSON would give it back (tuples become lists), so that records compare equal
    normalised: dict[str, Any] = json.loads(json.dumps(record, default=str))
    return normalised


def _claim_folder(out: Path, record: dict[str, Any], force: bool) -> bool:
    """Write ``out/evaluation.json``; True when scores already there may be reused."""
    path = out / SETTINGS_FILE
    track_files = [p for s in SUBSETS for p in (out / s).glob("*.json")]
    if path.is_file():
        try:
            previous = read_json(path)
        except (OSError, ValueError):
            previous = {}
        differing = sorted(k for k in {*previous, *record} if previous.get(k) != record.get(k))
        if not differing:
            return True
        described = "; ".join(
            f"{k}: {previous.get(k)!r} there, {record.get(k)!r} now" for k in differing
        )
    elif track_files:
        described = f"no {SETTINGS_FILE} records how they were computed"
    else:
        write_json(path, record)
        return False
    if not force:
        raise EvaluationError(
            f"{out}: this folder holds scores of another evaluation ({described}); choose "
            "another output folder, or pass --force (force=True) to discard them"
        )
    for stale in track_files:
        stale.unlink()
    write_json(path, record)
    return False


def _read_back(folder: Path, tracks: Sequence[Track], sources: tuple[str, ...]) -> dict[str, Any]:
    """The complete score files of ``tracks`` in ``folder``; others are recomputed."""
    found: dict[str, Any] = {}
    for track in tracks:
        path = folder / f"{track.name}.json"
        if not path.is_file():
            continue
        try:
            document = read_json(path)
            scores = TrackScores.from_document(track.name, document)
        except (OSError, ValueError, StemkitError):
            continue
        if "stemkit" in document and tuple(scores.sdr_frames) == sources:
            found[track.name] = scores
    return found
