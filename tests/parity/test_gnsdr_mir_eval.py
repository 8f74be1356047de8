"""MIR-1K scores (NSDR, GNSDR, GSIR, GSAR) against mir_eval's ``bss_eval_sources``.

mir_eval is the reference the singing-voice literature used (spec-notes §6): per clip, the
``bss_eval_sources`` SDR/SIR/SAR of the estimates (best permutation by mean SIR) and the SDR of
the mixture taken as the estimate of both sources; NSDR is their difference, and the global
scores are clip-length-weighted means. Clips are generated here: two mono sources (a tonal
"voice", a noisier "accompaniment" with a −30 dB broadband floor, so that the Gram matrices are
well conditioned) of different lengths, and imperfect estimates of them.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from stemkit.metrics import global_scores, gnsdr, nsdr

mir_eval = pytest.importorskip("mir_eval")

RATE = 8000
#: Largest accepted |ours − mir_eval|, in dB, for every per-clip and global score.
TOLERANCE_DB = 0.01
LENGTHS = (3000, 5200, 8100)


def _clip(nb_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(2, nb_samples)`` references (accompaniment, voice), estimates, and their mixture."""
    rng = np.random.default_rng(seed)
    t = np.arange(nb_samples) / RATE
    voice = sum(
        rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(150, 900) * k * t) for k in (1, 2, 3)
    ) * (1.0 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 6) * t))
    accompaniment = sum(
        rng.uniform(0.2, 0.8) * np.sin(2 * np.pi * rng.uniform(50, 3000) * t) for _ in range(4)
    )
    refs = np.stack([accompaniment, voice])
    refs += 0.03 * refs.std(axis=1, keepdims=True) * rng.standard_normal(refs.shape)
    mixture = refs.sum(axis=0)
    # each estimate: most of its source, a short filter of it, bleed of the other, noise
    taps = rng.normal(0.0, 0.2, size=(2, 5))
    filtered = np.stack([np.convolve(refs[j], taps[j])[:nb_samples] for j in range(2)])
    bleed = rng.uniform(0.1, 0.3, size=(2, 1)) * refs[::-1]
    noise = 0.05 * refs.std() * rng.standard_normal(refs.shape)
    return refs, 0.9 * refs + filtered + bleed + noise, mixture


def _mir_eval(refs: np.ndarray, ests: np.ndarray) -> tuple[np.ndarray, ...]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval's deprecation notices
        return tuple(mir_eval.separation.bss_eval_sources(refs, ests))


@pytest.fixture(scope="module")
def clips() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [_clip(n, seed) for seed, n in enumerate(LENGTHS)]


@pytest.fixture(scope="module")
def reference(clips: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """mir_eval's per-clip NSDR/SIR/SAR and their length-weighted means."""
    rows: dict[str, list[np.ndarray]] = {"nsdr": [], "sir": [], "sar": []}
    for refs, ests, mixture in clips:
        sdr, sir, sar, _ = _mir_eval(refs, ests)
        baseline = _mir_eval(refs, np.stack([mixture, mixture]))[0]
        rows["nsdr"].append(sdr - baseline)
        rows["sir"].append(sir)
        rows["sar"].append(sar)
    weights = np.asarray(LENGTHS, dtype=np.float64)
    out = {name: np.stack(values) for name, values in rows.items()}
    for name in ("nsdr", "sir", "sar"):
        out["g" + name] = weights @ out[name] / weights.sum()
    return out


def test_global_scores_match_mir_eval(
    clips: list[tuple[np.ndarray, np.ndarray, np.ndarray]], reference: dict[str, np.ndarray]
) -> None:
    ours = global_scores(clips)
    np.testing.assert_array_equal(ours.lengths, LENGTHS)
    for name in ("nsdr", "sir", "sar"):
        np.testing.assert_allclose(getattr(ours, name), reference[name], atol=TOLERANCE_DB)
    np.testing.assert_allclose(ours.gnsdr, reference["gnsdr"], atol=TOLERANCE_DB)
    np.testing.assert_allclose(ours.gsir, reference["gsir"], atol=TOLERANCE_DB)
    np.testing.assert_allclose(ours.gsar, reference["gsar"], atol=TOLERANCE_DB)
    # the case is not degenerate: separation helps, and length weighting matters
    assert (ours.gnsdr > 1.0).all()
    assert not np.allclose(ours.gnsdr, ours.nsdr.mean(axis=0), atol=1e-3)


def test_nsdr_and_gnsdr_match_mir_eval(
    clips: list[tuple[np.ndarray, np.ndarray, np.ndarray]], reference: dict[str, np.ndarray]
) -> None:
    per_clip = np.stack([nsdr(refs, ests, mixture) for refs, ests, mixture in clips])
    np.testing.assert_allclose(per_clip, reference["nsdr"], atol=TOLERANCE_DB)
    np.testing.assert_allclose(gnsdr(per_clip, LENGTHS), reference["gnsdr"], atol=TOLERANCE_DB)


def test_swapped_estimates_are_matched_like_mir_eval(
    clips: list[tuple[np.ndarray, np.ndarray, np.ndarray]], reference: dict[str, np.ndarray]
) -> None:
    swapped = [(refs, ests[::-1].copy(), mixture) for refs, ests, mixture in clips]
    ours = global_scores(swapped)
    np.testing.assert_allclose(ours.gnsdr, reference["gnsdr"], atol=TOLERANCE_DB)
    np.testing.assert_allclose(ours.gsir, reference["gsir"], atol=TOLERANCE_DB)
    # without the permutation search the swapped estimates score far worse
    unmatched = global_scores(swapped, compute_permutation=False)
    assert (unmatched.gnsdr < ours.gnsdr - 3.0).all()


def test_global_scores_reject_bad_input(
    clips: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> None:
    refs, ests, mixture = clips[0]
    with pytest.raises(ValueError, match="no clips"):
        global_scores([])
    with pytest.raises(ValueError, match="mixture"):
        global_scores([(refs, ests, mixture[:-1])])
    with pytest.raises(ValueError, match="inf"):
        global_scores([(refs, refs.copy(), mixture)])
