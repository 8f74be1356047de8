"""uSDR and the filter-free v4 frame SDR against their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stemkit.metrics import MDX_EPS, aggregate_csdr, framewise_sdr, silent_frames, usdr
from stemkit.metrics.store import frame_medians, read_json, track_document, write_json


def _pair(seed: int, shape: tuple[int, int, int] = (4, 2, 44100 * 3)) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal(shape).astype(np.float32)
    est = ref + 0.3 * rng.standard_normal(shape).astype(np.float32)
    return ref, est


def test_usdr_matches_the_mdx_formula_written_out() -> None:
    ref, est = _pair(0)
    expected = []
    for j in range(ref.shape[0]):
        num = float(np.sum(ref[j].astype(np.float64) ** 2)) + 1e-7
        den = float(np.sum((ref[j].astype(np.float64) - est[j]) ** 2)) + 1e-7
        expected.append(10 * math.log10(num / den))
    np.testing.assert_allclose(usdr(ref, est), expected, rtol=1e-12)
    assert MDX_EPS == 1e-7


def test_a_broadcast_mixture_scores_like_a_copied_one() -> None:
    """The mixture as the estimate of every source, passed as a broadcast view (no copy of
    the signal per source), gives exactly the scores of the materialised array; a source's
    uSDR does not depend on the other sources scored with it."""
    ref, _ = _pair(4, (4, 2, 70001))  # three chunks of usdr's sums, the last partial
    mix = ref.astype(np.float64).sum(axis=0)
    view = np.broadcast_to(mix[None], ref.shape)
    copied = np.ascontiguousarray(view)
    assert np.array_equal(usdr(ref, view), usdr(ref, copied))
    assert np.array_equal(framewise_sdr(ref, view), framewise_sdr(ref, copied), equal_nan=True)
    assert usdr(ref[2:3], view[2:3])[0] == usdr(ref, view)[2]
    # float32 references are upcast a piece at a time: the scores of their float64 copy
    ref64 = ref.astype(np.float64)
    assert np.array_equal(usdr(ref, view), usdr(ref64, view))
    assert np.array_equal(framewise_sdr(ref, view), framewise_sdr(ref64, view), equal_nan=True)


def test_usdr_epsilon_makes_silent_reference_and_perfect_estimate_finite() -> None:
    silent = np.zeros((1, 2, 1000))
    assert usdr(silent, silent)[0] == pytest.approx(0.0)
    ref, _ = _pair(1, (1, 2, 1000))
    assert usdr(ref, ref)[0] > 90  # (Σs² + eps) / eps


def test_usdr_accepts_torch_and_scales_with_noise() -> None:
    ref, _ = _pair(2, (2, 2, 8000))
    noise = np.random.default_rng(3).standard_normal(ref.shape)
    louder = usdr(torch.from_numpy(ref), torch.from_numpy(ref + 0.1 * noise))
    quieter = usdr(ref, ref + 0.01 * noise)
    np.testing.assert_allclose(quieter - louder, 20.0, atol=0.01)


def test_frame_count_drops_the_partial_tail() -> None:
    ref, est = _pair(4, (2, 2, int(44100 * 5.5)))
    assert framewise_sdr(ref, est).shape == (2, 5)
    short_ref, short_est = _pair(5, (2, 2, 30000))
    assert framewise_sdr(short_ref, short_est).shape == (2, 1)


def test_frame_sdr_is_the_frame_snr() -> None:
    ref, est = _pair(6, (3, 2, 44100 * 2))
    scores = framewise_sdr(ref, est)
    for t in range(2):
        span = slice(t * 44100, (t + 1) * 44100)
        num = (ref[:, :, span].astype(np.float64) ** 2).sum(axis=(1, 2))
        den = ((est[:, :, span].astype(np.float64) - ref[:, :, span]) ** 2).sum(axis=(1, 2))
        np.testing.assert_allclose(scores[:, t], 10 * np.log10(num / den), rtol=1e-10)


def test_a_silent_reference_frame_is_nan_for_every_source() -> None:
    ref, est = _pair(7, (3, 2, 44100 * 3))
    ref[1, :, 44100 : 2 * 44100] = 0.0
    assert silent_frames(ref, est, 44100, 44100).tolist() == [False, True, False]
    scores = framewise_sdr(ref, est)
    assert np.isnan(scores[:, 1]).all()
    assert np.isfinite(scores[:, [0, 2]]).all()


def test_channels_cancelling_counts_as_silent_like_museval() -> None:
    ref, est = _pair(8, (2, 2, 44100))
    est[0, 1] = -est[0, 0]  # the channel sum is zero although each channel is not
    assert np.isnan(framewise_sdr(ref, est)).all()


def test_bad_input_is_refused() -> None:
    ref, est = _pair(9, (2, 2, 1000))
    with pytest.raises(ValueError, match="differ in shape"):
        usdr(ref, est[:, :, :-1])
    est[0, 0, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        framewise_sdr(ref, est)
    with pytest.raises(ValueError, match="nb_sources"):
        usdr(ref[0], ref[0])


def test_csdr_is_median_of_frame_medians_ignoring_nan() -> None:
    tracks = [np.array([1.0, 2.0, np.nan, 9.0]), np.array([4.0, 5.0, 6.0]), np.array([np.nan])]
    assert aggregate_csdr(tracks) == pytest.approx(np.median([2.0, 5.0]))
    assert math.isnan(aggregate_csdr([np.array([np.nan])]))


def test_track_json_round_trip_keeps_nan_token_and_medians(tmp_path) -> None:
    frames = {"vocals": {"SDR": np.array([1.234567, np.nan, 3.0])}, "bass": {"SDR": np.ones(3)}}
    path = write_json(tmp_path / "t.json", track_document(frames, extra={"uSDR": {"vocals": 1}}))
    assert "NaN" in path.read_text()
    document = read_json(path)
    assert document["targets"][0]["frames"][0]["metrics"]["SDR"] == 1.23457
    assert document["targets"][0]["frames"][2]["time"] == 2.0
    assert frame_medians(document) == {"vocals": pytest.approx(2.117285), "bass": 1.0}
