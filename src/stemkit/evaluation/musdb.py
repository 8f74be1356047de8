"""Score a separator on a dataset of reference stems. Knows nothing of training.

For each track the mixture is separated with the chunked inference path and every estimated
source is compared with its reference. The mixture is the track's own mixture file (MUSDB18's
decoded mixture is not exactly the sum of its decoded stems), or the sum of ALL its stems where
it has none, whatever subset of sources the model separates: a vocals-only model is scored on
the whole song, never on the vocals alone. A track at another rate than the model's is resampled
to the model's rate for separation and the estimates back to the track's, so that scores are
always taken at the dataset's rate and length. The dataset is a MUSDB18-HQ-layout folder of WAV
stems, or the compressed MUSDB18 release (``<root>/<subset>/<track>.stem.mp4``, decoded with
ffmpeg stream by stream: :func:`track_lister`).

Scores:

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
separating the tracks again. The record identifies the dataset too (its resolved root and a
cheap content fingerprint of every track of the subset), and every track file carries its
track's fingerprint: another dataset with the same track names (every generated set has them)
is refused, and a track file whose audio changed is scored again, so that old numbers are never
passed off as new.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from stemkit.data.musdb import MIXTURE, SUBSETS, Track, TrackLister
from stemkit.energy import CodeCarbon, Meter, total
from stemkit.errors import DatasetError, StemkitError
from stemkit.metrics.bsseval import bss_eval_v4
from stemkit.metrics.report import Report, TrackScores, write_report
from stemkit.metrics.sdr import framewise_sdr, usdr
from stemkit.metrics.store import read_json, write_json
from stemkit.models.base import SeparationModel

if TYPE_CHECKING:
    from stemkit.cluster.pool import Cluster

__all__ = [
    "METRIC_MODES",
    "SETTINGS_FILE",
    "EvaluationError",
    "Report",
    "TrackScores",
    "dataset_record",
    "evaluate",
    "score_track",
    "track_fingerprint",
    "track_lister",
]

#: ``fast``: frame SDR and uSDR only; ``full``: BSS Eval v4 SDR, ISR, SIR, SAR and uSDR.
METRIC_MODES: tuple[str, ...] = ("fast", "full")

#: The file of an output folder recording the settings its scores were computed with.
SETTINGS_FILE = "evaluation.json"

#: The key, in a track file's ``stemkit`` object, of the fingerprint of the audio it scores.
TRACK_FINGERPRINT = "track_fingerprint"


class EvaluationError(StemkitError):
    """An evaluation cannot produce trustworthy scores (bad estimates, mixed settings)."""


def score_track(
    name: str,
    references: np.ndarray | torch.Tensor,
    estimates: np.ndarray | torch.Tensor,
    sources: Sequence[str],
    sample_rate: int,
    metrics: str = "fast",
    mixture: np.ndarray | torch.Tensor | None = None,
) -> TrackScores:
    """Score one track's estimates.

    Args:
        name: track name.
        references: ``(nb_sources, nb_channels, nb_samples)``.
        estimates: the same shape, in the same source order.
        sources: source names.
        sample_rate: rate in Hz; frames are one second long.
        metrics: ``"fast"`` (frame SDR) or ``"full"`` (BSS Eval v4 SDR, ISR, SIR, SAR).
        mixture: ``(nb_channels, nb_samples)``, the track's mixture, scored as the estimate of
            every source (the baseline). ``None``: the sum of ``references``, right only when
            they are every source of the track.

    Raises:
        EvaluationError: ``estimates`` hold NaN or infinite samples, or ``mixture`` has another
            shape than one reference.
    """
    _check_mode(metrics)
    # float32 stays float32: the metrics upcast a piece at a time (no 680 MB float64 copies of
    # a 4-minute track)
    ref, est = _samples(references), _samples(estimates)
    _check_finite(f"track '{name}'", est, sources)
    mix = ref.sum(axis=0, dtype=np.float64) if mixture is None else _samples(mixture)
    if mix.shape != ref.shape[1:]:
        raise EvaluationError(
            f"track '{name}': the mixture is {mix.shape} but each reference is {ref.shape[1:]} "
            "(channels, samples)"
        )
    mixture = np.broadcast_to(mix[None], ref.shape)
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
    window: str = "linear",
    out_dir: str | Path | None = None,
    progress: bool = False,
    limit: int | None = None,
    jobs: int = 1,
    settings: Mapping[str, Any] | None = None,
    force: bool = False,
    valid_fraction: float = 0.15,
    codecarbon: CodeCarbon | None = None,
    cluster: Cluster | None = None,
) -> Report:
    """Separate and score every track of ``root/subset`` (MUSDB18-HQ or MUSDB18 layout).

    The mixture separated (and scored as the baseline) is each track's ``mixture.wav``, or the
    sum of all its stems where it has none, whatever subset of sources ``model`` separates.
    When ``out_dir`` is given, one museval-layout JSON per track goes to
    ``out_dir/<subset>/<track>.json``, the aggregates to ``out_dir/summary.json``, a readable
    ``report.md`` and a ``scores.png`` beside them, and the settings to
    ``out_dir/evaluation.json``. Tracks already scored there with the same settings are read
    back, not separated again. Scores are rounded to 5 decimals as stored, so a resumed run
    gives the same numbers as an uninterrupted one.

    Args:
        model: the separator; its sources must all be stems of the dataset.
        root: dataset root.
        subset: ``"train"``, ``"test"``, or ``"valid"``: the validation split of the train
            subset that training monitors (the 14 official MUSDB18 validation tracks where
            present, see :func:`~stemkit.data.musdb.split_tracks`).
        method: name of the method in reports.
        metrics: ``"fast"`` or ``"full"`` (see the module docstring).
        segment: chunk length in seconds (None: whole tracks); oracles always use whole tracks.
        overlap: chunk overlap fraction.
        window: cross-fade across chunk overlaps (:data:`stemkit.inference.WINDOWS`).
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
        valid_fraction: with ``subset="valid"`` on a folder without the official validation
            tracks, the share of the train subset held out (the training run's
            ``data.valid_fraction``).
        codecarbon: also measure each track's separation and scoring with this tracker
            (``jobs=1`` only: a tracker measures the machine from one process).
        cluster: score the tracks as tasks of Ray workers (each holding the model, one torch
            thread per CPU it reserves) on the cluster the process is connected to
            (:func:`stemkit.cluster.pool.connect`); ``jobs`` is then ignored. The per-track
            files and the scores are the same as without.

    Raises:
        DatasetError: the dataset is missing, or a track lacks a source file or has stems
            of different lengths or channel counts (the message names the file).
        EvaluationError: the estimates of a track hold NaN or infinite samples, or
            ``out_dir`` holds scores computed with other settings or of another dataset (and
            ``force`` is off).
    """
    from tqdm import tqdm

    from stemkit.data.musdb import load_split

    _check_mode(metrics)
    if jobs < 1:
        raise EvaluationError(f"jobs must be at least 1, got {jobs}")
    if limit is not None and limit < 1:
        raise EvaluationError(f"limit must be at least 1 track, got {limit}")
    from stemkit.inference import check_settings

    try:  # before any track is read or separated
        check_settings(segment, overlap, batch_size, 0, window)
    except ValueError as error:
        raise EvaluationError(str(error)) from None
    sources = tuple(model.sources)
    lister = track_lister(root)
    if subset == "valid":
        listed = load_split(root, "valid", sources, valid_fraction, lister=lister)
    else:
        listed = lister(root, subset, sources)
    tracks = listed[:limit]
    options: dict[str, Any] = {
        "sources": sources,
        "metrics": metrics,
        "segment": segment,
        "overlap": overlap,
        "batch_size": batch_size,
        "device": device,
        "window": window,
    }
    done: dict[str, TrackScores] = {}
    out = Path(out_dir) if out_dir is not None else None
    identities: dict[str, str] = {}
    if out is not None:
        # Every listed track, not only the first ``limit``: raising the limit later resumes.
        identities = {t.name: track_fingerprint(t, sources) for t in listed}
        extra = dict(settings or {})
        if window != "linear":  # recorded only when not the default, so old folders resume
            extra["window"] = window
        record = _settings(model, method, metrics, segment, overlap, extra)
        record["dataset"] = dataset_record(root, subset, identities)
        resume = _claim_folder(out, record, force)
        if resume:
            done = _read_back(out / subset, tracks, sources, identities)
    todo = [t for t in tracks if t.name not in done]

    def finish(scores: TrackScores) -> None:
        # Round-tripping through the stored document rounds exactly as a resumed run reads it.
        document = scores.to_document()
        done[scores.name] = TrackScores.from_document(scores.name, document)
        if out is not None:
            # Ties the numbers to the audio they were computed from (see _read_back).
            document.setdefault("stemkit", {})[TRACK_FINGERPRINT] = identities[scores.name]
            write_json(out / subset / f"{scores.name}.json", document)

    with tqdm(
        total=len(tracks), initial=len(done), desc="tracks", unit="track", disable=not progress
    ) as bar:
        if cluster is not None and todo:
            _run_on_cluster(model, todo, options, cluster, finish, bar.update)
        elif jobs == 1 or len(todo) <= 1:
            for track in todo:
                finish(_separate_and_score(model, track, **options, codecarbon=codecarbon))
                bar.update()
        else:
            _run_parallel(model, todo, options, min(jobs, len(todo)), finish, bar.update)

    scored = [done[t.name] for t in tracks]
    report = Report(method=method, sources=sources, tracks=scored, cost=cost_totals(scored))
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
    window: str = "linear",
    codecarbon: CodeCarbon | None = None,
) -> TrackScores:
    from stemkit.inference import separate

    channels = model.audio_channels
    # (nb_sources, nb_channels, nb_samples) at the track's rate: the scores are taken there.
    references = torch.stack([_read_stem(track, s, channels) for s in sources])
    mixture = _track_mixture(track, channels)
    model_mixture = _resample_stems(mixture[None], track.sample_rate, model.sample_rate)[0]
    oracle = model.requires_references
    if oracle:
        # Oracles filter with the true stems, aligned sample by sample: whole tracks only. A
        # model of some of the sources also needs the rest of the track, or its masks would
        # give it the whole mixture.
        others = [s for s in track.stems() if s not in sources]
        rest = None
        if others:
            rest = torch.stack([_read_stem(track, s, channels) for s in others]).sum(dim=0)
            rest = _resample_stems(rest[None], track.sample_rate, model.sample_rate)[0]
        model.set_references(
            _resample_stems(references, track.sample_rate, model.sample_rate), rest=rest
        )
    with Meter(codecarbon=codecarbon) as separation:
        estimates = separate(
            model,
            model_mixture,
            segment=None if oracle else segment,
            overlap=overlap,
            batch_size=batch_size,
            device=device,
            window=window,
        )
    estimates = _resample_stems(estimates, model.sample_rate, track.sample_rate)
    estimates = _fit_length(estimates, references.shape[-1])
    _check_finite(f"{track.folder}: track '{track.name}'", estimates.numpy(), sources)
    with Meter(codecarbon=codecarbon) as scoring:
        scores = score_track(
            track.name, references, estimates, sources, track.sample_rate, metrics, mixture=mixture
        )
    scores.cost = {
        "audio_seconds": references.shape[-1] / track.sample_rate,
        "separation": separation.record(),
        "scoring": scoring.record(),
    }
    return scores


def cost_totals(tracks: Sequence[TrackScores]) -> dict[str, Any]:
    """What separating and scoring ``tracks`` cost in all, from their measured spans; empty
    when a track's cost was not measured (scores from an older stemkit, or museval's).

    ``real_time_factor`` is the audio's duration over the separation's wall time (above 1:
    faster than real time).
    """
    if not tracks or not all(t.cost for t in tracks):
        return {}
    audio = sum(float(t.cost["audio_seconds"]) for t in tracks)
    separation = total([t.cost["separation"] for t in tracks])
    scoring = total([t.cost["scoring"] for t in tracks])
    return {
        "audio_seconds": audio,
        "separation": separation,
        "scoring": scoring,
        "real_time_factor": audio / separation["seconds"] if separation["seconds"] else None,
        "method": tracks[0].cost["separation"]["method"],
        "constants": tracks[0].cost["separation"]["constants"],
    }


def track_lister(root: str | Path) -> TrackLister:
    """The track lister of the MUSDB layout ``root`` holds.

    ``.stem.mp4`` files (the compressed MUSDB18 release, which the Open-Unmix study scored)
    are listed by :func:`~stemkit.data.stems_mp4.list_stem_tracks`; anything else by the
    MUSDB18-HQ WAV lister, whose errors explain a wrong layout.
    """
    from stemkit.data.factory import detect_format
    from stemkit.data.musdb import list_tracks

    if detect_format(root) == "musdb_stems":
        from stemkit.data.stems_mp4 import MusdbStems

        return MusdbStems.list_tracks
    return list_tracks


def _read_stem(track: Track, stem: str, channels: int) -> torch.Tensor:
    """``(channels, nb_samples)`` of one stem of ``track`` at the track's rate."""
    path = track.path(stem)
    if path.suffix.lower() == ".wav":
        from stemkit.audio import read_audio

        return read_audio(path, channels=channels)[0]
    # A container of several stems (.stem.mp4): the track decodes the stem's stream itself.
    from stemkit.audio.convert import match_channels

    audio = torch.from_numpy(track.read(stem, 0, track.nb_frames))
    try:
        return match_channels(audio, channels)
    except ValueError as error:
        raise DatasetError(f"{path}: stream '{stem}': {error}") from error


def _track_mixture(track: Track, channels: int) -> torch.Tensor:
    """The track's mixture ``(channels, nb_samples)``: its mixture file, else all stems summed.

    Never the sum of the model's sources only: for a model of a subset of the sources that
    would hand it its own targets (and score the mixture baseline at +100 dB).
    """
    if track.path(MIXTURE).is_file():
        return _read_stem(track, MIXTURE, channels)
    return torch.stack([_read_stem(track, s, channels) for s in track.stems()]).sum(dim=0)


def _resample_stems(stems: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Resample ``(nb_sources, nb_channels, nb_samples)`` as one multichannel signal.

    :func:`~stemkit.audio.convert.resample` takes ``(channels, time)``; flattening sources
    into channels resamples every one of them identically, so they stay aligned.
    """
    if orig_rate == new_rate:
        return stems.to(torch.float32)
    from stemkit.audio.convert import resample

    nb_sources, nb_channels, _ = stems.shape
    flat = resample(stems.reshape(nb_sources * nb_channels, -1), orig_rate, new_rate)
    return flat.reshape(nb_sources, nb_channels, -1)


def _samples(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Audio as numpy, float32 kept, anything else as float64."""
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return np.asarray(array, dtype=np.float32 if array.dtype == np.float32 else np.float64)


def _check_finite(where: str, estimates: np.ndarray, sources: Sequence[str]) -> None:
    # a NaN or ±inf sample makes the float64 sum non-finite (no overflow from finite float32
    # samples), without a signal-sized boolean array
    bad = [
        s
        for s, e in zip(sources, estimates, strict=True)
        if not math.isfinite(float(e.sum(dtype=np.float64)))
    ]
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


def _scorer(model: SeparationModel, options: dict[str, Any]) -> Any:
    """The per-track function of a Ray worker, which holds ``model`` (sent to it once)."""
    return functools.partial(_score_on_worker, model, options)


def _score_on_worker(model: SeparationModel, options: dict[str, Any], track: Track) -> TrackScores:
    try:
        return _separate_and_score(model, track, **options)
    except StemkitError as err:
        # Subclasses with extra constructor arguments do not survive pickling back.
        raise EvaluationError(str(err)) from None


def _run_on_cluster(
    model: SeparationModel,
    tracks: list[Track],
    options: dict[str, Any],
    cluster: Cluster,
    finish: Any,
    advance: Any,
) -> None:
    from stemkit.cluster import pool

    def on_result(track: Track, result: TrackScores | pool.Failure) -> None:
        if isinstance(result, pool.Failure):
            raise EvaluationError(f"{track.folder}: {result.reason}")
        finish(result)
        advance()

    pool.run(tracks, functools.partial(_scorer, model, options), on_result, cluster)


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
        "model_name": model.model_name or type(model).__name__,
        "model_kwargs": model.init_kwargs if model.model_name else None,
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


def track_fingerprint(track: Track, sources: Sequence[str]) -> str:
    """Short sha256 of the content identity of the files an evaluation of ``track`` reads.

    The mixture file (where the track has one) and one file per source in ``sources``, each
    identified by :func:`stemkit.data.musdb.file_identity` (size and sampled blocks): cheap,
    and different for two generated songs of the same name and length.
    """
    stems = [MIXTURE, *sources] if track.path(MIXTURE).is_file() else list(sources)
    identity = track.identity(stems)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def dataset_record(root: str | Path, subset: str, identities: Mapping[str, str]) -> dict[str, Any]:
    """The dataset identity kept in ``evaluation.json``.

    Args:
        root: the dataset root; recorded resolved, so that two spellings of one folder agree.
        subset: the subset evaluated.
        identities: ``{track name: track_fingerprint}`` of every track of the subset.

    Returns:
        ``{"root": ..., "subsets": {subset: fingerprint}}``; a run on the other subset of the
        same root adds its own entry instead of conflicting.
    """
    digest = hashlib.sha256(json.dumps(sorted(identities.items())).encode()).hexdigest()[:16]
    return {"root": str(Path(root).resolve()), "subsets": {subset: digest}}


def _merged_subsets(previous: Mapping[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with the other subsets the folder already holds scores of, same root only."""
    before, now = previous.get("dataset"), record.get("dataset")
    if not (isinstance(before, dict) and isinstance(now, dict)):
        return record
    if before.get("root") != now.get("root") or not isinstance(before.get("subsets"), dict):
        return record
    subsets = {**before["subsets"], **now["subsets"]}
    return {**record, "dataset": {**now, "subsets": subsets}}


def _claim_folder(out: Path, record: dict[str, Any], force: bool) -> bool:
    """Write ``out/evaluation.json``; True when scores already there may be reused."""
    path = out / SETTINGS_FILE
    track_files = [p for s in SUBSETS for p in (out / s).glob("*.json")]
    if path.is_file():
        try:
            previous = read_json(path)
        except (OSError, ValueError):
            previous = {}
        merged = _merged_subsets(previous, record)
        differing = sorted(
            k for k in {*previous, *merged} if k != "dataset" and previous.get(k) != merged.get(k)
        )
        same_data = _same_dataset(previous.get("dataset"), record.get("dataset"))
        if not differing and same_data:
            if merged != previous:
                write_json(path, merged)  # the other subset of the same dataset joins
            return True
        dataset = ""
        if not same_data:
            dataset = (
                f"dataset: scores of {_describe_dataset(previous.get('dataset'))} there, "
                f"{_describe_dataset(record.get('dataset'))} now"
            )
        described = "; ".join(
            [dataset] * bool(dataset)
            + [f"{k}: {previous.get(k)!r} there, {record.get(k)!r} now" for k in differing]
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


def _same_dataset(before: Any, now: Any) -> bool:
    """Whether two ``dataset`` records (:func:`dataset_record`) may share a folder: the same
    root, and the same content for every subset both name."""
    if not (isinstance(before, dict) and isinstance(now, dict)):
        return False
    if before.get("root") != now.get("root"):
        return False
    old, new = before.get("subsets") or {}, now.get("subsets") or {}
    return all(old[k] == v for k, v in new.items() if k in old)


def _describe_dataset(dataset: Any) -> str:
    if not isinstance(dataset, dict):
        return "an unrecorded dataset"
    subsets = dataset.get("subsets") or {}
    content = ", ".join(f"{k} {v}" for k, v in sorted(subsets.items()))
    return f"{dataset.get('root')} (content {content or 'unknown'})"


def _read_back(
    folder: Path,
    tracks: Sequence[Track],
    sources: tuple[str, ...],
    identities: Mapping[str, str],
) -> dict[str, Any]:
    """The complete score files of ``tracks`` in ``folder`` computed from the same audio
    (``identities``: track name -> :func:`track_fingerprint`); others are recomputed."""
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
        extra = document.get("stemkit")
        if (
            isinstance(extra, dict)
            and extra.get(TRACK_FINGERPRINT) == identities.get(track.name)
            and tuple(scores.sdr_frames) == sources
        ):
            found[track.name] = scores
    return found
