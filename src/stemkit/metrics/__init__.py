"""Separation metrics. Every number says what it is.

``uSDR``  one SNR per track and source over the whole signal, with the MDX epsilons; mean over
          tracks (the MDX 2021 convention; "utterance SDR" in the BSRNN papers).
``cSDR``  BSS Eval v4 SDR on 1 s frames, median over frames, median over tracks (the MUSDB18
          convention). The v4 frame SDR equals the frame SNR exactly (spec-notes §1.1), so the
          fast path here computes it without distortion filters; frames museval marks silent
          are NaN here too.
``NSDR``  ``bss_eval_sources`` SDR of an estimate minus that of the mixture; ``GNSDR``, ``GSIR``,
          ``GSAR``: clip-length-weighted means over a dataset (MIR-1K; :func:`global_scores`).
"""

from stemkit.metrics.bsseval import (
    BssEvalResult,
    BssEvalSourcesResult,
    GlobalScores,
    bss_eval_sources,
    bss_eval_v4,
    global_scores,
)
from stemkit.metrics.sdr import (
    MDX_EPS,
    aggregate_csdr,
    framewise_sdr,
    silent_frames,
    usdr,
)
from stemkit.metrics.sisdr import gnsdr, nsdr, si_sdr

__all__ = ["MDX_EPS", "aggregate_csdr", "framewise_sdr", "silent_frames", "usdr"]
__all__ += [
    "BssEvalResult",
    "BssEvalSourcesResult",
    "GlobalScores",
    "bss_eval_sources",
    "bss_eval_v4",
    "global_scores",
    "gnsdr",
    "nsdr",
    "si_sdr",
]
