"""Our BSS Eval v4 and bss_eval_sources against museval, frame by frame.

museval is the reference: ``museval.evaluate`` (v4 images, time-invariant filters) and
``museval.metrics.bss_eval_sources`` (BSS Eval v3 sources, mir_eval's definition). Signals are
generated here: tonal sources with a faint broadband floor (−30 dB), so that the Gram matrices
are well conditioned and both implementations are numerically stable (pitfalls.md). Frames are
one second at 8 kHz to keep museval quick; the filters keep museval's 512 taps.
"""

from __future__ import annotations

import numpy as np
import pytest

from stemkit.metrics import bss_eval_sources, bss_eval_v4, nsdr

museval = pytest.importorskip("museval")
from museval.metrics import bss_eval_sources as museval_sources  # noqa: E402

RATE = 8000
TOLERANCE_DB = 0.01


def _references(nb_sources: int, nb_channels: int, nb_samples: int, seed: int) -> np.ndarray:
    """Tonal, amplitude-modulated, panned sources with a broadband floor at about −30 dB."""
    rng = np.random.default_rng(seed)
    t = np.arange(nb_samples) / RATE
    refs = np.empty((nb_sources, nb_channels, nb_samples))
    for j in range(nb_sources):
        tone = sum(
            rng.uniform(0.2, 1.0)
            * np.sin(2 * np.pi * rng.uniform(60, 3000) * t + rng.uniform(0, 6))
            for _ in range(3)
        )
        tone *= 1.0 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t)
        for c in range(nb_channels):
            floor = 0.03 * np.sqrt(np.mean(tone**2)) * rng.standard_normal(nb_samples)
            refs[j, c] = rng.uniform(0.5, 1.0) * tone + floor
    return refs


def _estimates(refs: np.ndarray, seed: int) -> np.ndarray:
    """Each estimate: its reference, a short filter of it, interference and noise."""
    rng = np.random.default_rng(seed + 1000)
    nb_sources = refs.shape[0]
    filtered = np.stack(
        [
            np.stack([np.convolve(ch, rng.normal(0, 0.2, 6))[: ch.shape[-1]] for ch in source])
            for source in refs
        ]
    )
    others = (refs.sum(axis=0, keepdims=True) - refs) / max(1, nb_sources - 1)
    noise = 0.1 * refs.std() * rng.standard_normal(refs.shape)
    return 0.8 * refs + filtered + 0.2 * others + noise


def _museval(refs: np.ndarray, ests: np.ndarray, window: int, hop: int) -> np.ndarray:
    """museval.evaluate on our (sources, channels, samples) layout; ±inf stored as NaN."""
    scores = np.stack(
        museval.evaluate(refs.transpose(0, 2, 1), ests.transpose(0, 2, 1), win=window, hop=hop)
    )
    scores[~np.isfinite(scores)] = np.nan
    return scores


def _assert_same(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    finite = np.isfinite(theirs)
    assert finite.any()
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=0, atol=TOLERANCE_DB)


CASES = {
    # name: (nb_sources, nb_channels, seconds, est_seconds, window, hop, silent_frame)
    "stereo-2src-partial-window": (2, 2, 3.5, 3.5, RATE, RATE, None),
    "mono-2src": (2, 1, 3.0, 3.0, RATE, RATE, None),
    "mono-4src-short-estimates": (4, 1, 3.0, 2.6, RATE, RATE, None),
    "stereo-2src-long-estimates": (2, 2, 3.0, 3.7, RATE, RATE, 2),
    "mono-3src-overlapping-frames": (3, 1, 3.2, 3.2, RATE, 6000, None),
    "mono-2src-window-longer-than-signal": (2, 1, 1.5, 1.5, 2 * RATE, 2 * RATE, None),
    "stereo-4src-silent-frame": (4, 2, 3.0, 3.0, RATE, RATE, 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_v4_matches_museval_frame_by_frame(name: str) -> None:
    nb_sources, nb_channels, seconds, est_seconds, window, hop, silent = CASES[name]
    seed = sorted(CASES).index(name)
    refs = _references(nb_sources, nb_channels, int(seconds * RATE), seed)
    ests = _estimates(refs, seed)
    nb_est = int(est_seconds * RATE)
    if nb_est <= refs.shape[-1]:
        ests = ests[..., :nb_est]
    else:
        extra = np.random.default_rng(seed).standard_normal(
            (*ests.shape[:2], nb_est - refs.shape[-1])
        )
        ests = np.concatenate([ests, extra], axis=-1)
    if silent is not None:
        # one second of silence in the first reference: NaN for every source there
        refs[0, :, silent * RATE : (silent + 1) * RATE] = 0.0
    ours = bss_eval_v4(refs, ests, window=window, hop=hop)
    theirs = _museval(refs, ests, window, hop)
    _assert_same(np.stack([ours.sdr, ours.isr, ours.sir, ours.sar]), theirs)
    if silent is not None:
        assert np.isnan(ours.sdr[:, silent]).all()
        assert np.isfinite(np.delete(ours.sdr, silent, axis=1)).all()


def test_v4_matches_museval_on_silent_overlapping_frames() -> None:
    """Frames of 8000 samples every 6000 (granules of gcd(8000, 6000) = 2000 samples for the
    silence flags, the signal ending inside one): the two frames inside the silence are NaN."""
    refs = _references(3, 1, int(3.3 * RATE), seed=31)
    ests = _estimates(refs, seed=31)
    refs[0, :, 5000:21000] = 0.0
    ours = bss_eval_v4(refs, ests, window=RATE, hop=6000)
    _assert_same(
        np.stack([ours.sdr, ours.isr, ours.sir, ours.sar]), _museval(refs, ests, RATE, 6000)
    )
    assert np.flatnonzero(np.isnan(ours.sdr).all(axis=0)).tolist() == [1, 2]


def test_v4_matches_museval_when_a_reference_is_mono_in_both_channels() -> None:
    """Bit-identical channels make the Gram matrix singular: the fallback solver's case."""
    refs = _references(2, 2, 3 * RATE, seed=30)
    refs[1, 1] = refs[1, 0]
    ests = _estimates(refs, seed=30)
    ours = bss_eval_v4(refs, ests, window=RATE, hop=RATE)
    _assert_same(
        np.stack([ours.sdr, ours.isr, ours.sir, ours.sar]), _museval(refs, ests, RATE, RATE)
    )


def test_v4_on_a_signal_its_filters_span_has_infinite_sar() -> None:
    # 2344 samples + 511 ≤ 3 sources × 2 channels × 512 taps: the filtered references span
    # every signal of that length, so each estimate is its own projection and its artifacts
    # are zero. Both implementations then report the rounding error of that zero (float64
    # sums of ~1e4 terms: relative errors near 1e-12 or below): a SAR above 120 dB, or NaN
    # where it rounded to zero or below. The other metrics agree.
    refs = _references(3, 2, 2344, seed=12)
    ests = _estimates(refs, seed=12)
    ours = bss_eval_v4(refs, ests, window=4000, hop=4000)
    theirs = _museval(refs, ests, 4000, 4000)
    for sar in (ours.sar, theirs[3]):
        assert (np.isnan(sar) | (sar > 120)).all()
    _assert_same(np.stack([ours.sdr, ours.isr, ours.sir]), theirs[:3])


@pytest.mark.parametrize(
    ("nb_sources", "nb_channels", "permute"), [(2, 1, True), (3, 1, True), (2, 2, False)]
)
def test_bss_eval_sources_matches_museval(nb_sources: int, nb_channels: int, permute: bool) -> None:
    refs = _references(nb_sources, nb_channels, int(2.5 * RATE), seed=40 + nb_sources)
    ests = _estimates(refs, seed=40 + nb_sources)[::-1].copy()  # the right match is reversed
    ours = bss_eval_sources(refs, ests, compute_permutation=permute)
    sdr, sir, sar, perm = museval_sources(
        refs.transpose(0, 2, 1), ests.transpose(0, 2, 1), compute_permutation=permute
    )
    np.testing.assert_array_equal(ours.perm, perm[:, 0])
    for mine, theirs in ((ours.sdr, sdr), (ours.sir, sir), (ours.sar, sar)):
        np.testing.assert_allclose(mine, theirs[:, 0], rtol=0, atol=TOLERANCE_DB)
    if permute:
        np.testing.assert_array_equal(ours.perm, np.arange(nb_sources)[::-1])


def test_nsdr_is_the_sdr_gain_over_the_mixture_with_museval_sources() -> None:
    refs = _references(2, 1, int(2.5 * RATE), seed=50)[:, 0]  # (accompaniment, voice), mono
    mixture = refs.sum(axis=0)
    ests = _estimates(refs[:, None], seed=50)[:, 0]
    expected = []
    for candidate in (ests, np.stack([mixture, mixture])):
        expected.append(museval_sources(refs[..., None], candidate[..., None])[0][:, 0])
    np.testing.assert_allclose(nsdr(refs, ests, mixture), expected[0] - expected[1], atol=0.01)
    assert (nsdr(refs, ests, mixture) > 0).all()  # the estimates beat the mixture
