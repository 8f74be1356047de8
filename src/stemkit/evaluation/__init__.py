"""Scoring a model on a dataset: ``evaluate(model, dataset) -> scores``. Knows nothing of training.

- :mod:`~stemkit.evaluation.musdb`: MUSDB-layout datasets (MUSDB18, MUSDB18-HQ, the
  generator's songs): cSDR and uSDR per track, museval's JSON layout, reports;
- :mod:`~stemkit.evaluation.mir1k`: the MIR-1K protocol (GNSDR, GSIR, GSAR).
"""

from stemkit.evaluation.musdb import (
    METRIC_MODES,
    SETTINGS_FILE,
    EvaluationError,
    Report,
    TrackScores,
    dataset_record,
    evaluate,
    score_track,
    track_fingerprint,
)

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
]
