"""The filter-free frame SDR equals museval's BSS Eval v4 SDR, NaN in the same frames."""

from __future__ import annotations

import numpy as np
import pytest

from stemkit.metrics import framewise_sdr

museval = pytest.importorskip("museval")


@pytest.mark.parametrize(("nb_sources", "nb_channels"), [(2, 1), (2, 2), (4, 2)])
def test_frame_sdr_equals_museval(nb_sources: int, nb_channels: int) -> None:
    rng = np.random.default_rng(nb_sources * 10 + nb_channels)
    rate = 8000  # one-second frames of 8000 samples keep museval quick
    nb_samples = int(3.5 * rate)
    ref = rng.standard_normal((nb_sources, nb_channels, nb_samples))
    est = 0.7 * ref + 0.5 * rng.standard_normal(ref.shape)
    est[:, :, :] += 0.2 * ref[::-1]  # some interference
    ref[0, :, rate : 2 * rate] = 0.0  # a silent frame: NaN for every source in museval
    ours = framewise_sdr(ref, est, rate, rate)
    sdr, _isr, _sir, _sar = museval.evaluate(
        ref.transpose(0, 2, 1), est.transpose(0, 2, 1), win=rate, hop=rate
    )
    assert ours.shape == sdr.shape == (nb_sources, 3)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(sdr))
    finite = np.isfinite(sdr)
    np.testing.assert_allclose(ours[finite], sdr[finite], atol=0.01)
