"""BSS Eval v4 internals and invariants, SI-SDR and the MIR-1K helpers against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stemkit.metrics import bss_eval_sources, bss_eval_v4, framewise_sdr, gnsdr, nsdr, si_sdr
from stemkit.metrics import bsseval as bsseval_module

RATE = 8000


def _pair(
    nb_sources: int = 2, nb_channels: int = 2, seconds: float = 3.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Broadband references and estimates with interference, filtering and noise."""
    rng = np.random.default_rng(seed)
    refs = rng.standard_normal((nb_sources, nb_channels, int(seconds * RATE)))
    refs += 0.5 * np.roll(refs, 3, axis=-1)  # some colour
    others = refs[::-1]
    ests = 0.9 * refs + 0.3 * np.roll(refs, 1, axis=-1) + 0.2 * others
    ests += 0.1 * rng.standard_normal(refs.shape)
    return refs, ests


def _stacked(result: bsseval_module.BssEvalResult) -> np.ndarray:
    return np.stack([result.sdr, result.isr, result.sir, result.sar])


# --- BSS Eval v4 ------------------------------------------------------------------------------


def test_sdr_equals_the_filter_free_framewise_sdr() -> None:
    refs, ests = _pair(seconds=3.6)
    refs[1, :, RATE : 2 * RATE] = 0.0  # a silent frame: NaN in both
    ours = bss_eval_v4(refs, ests, window=RATE, hop=RATE)
    fast = framewise_sdr(refs, ests, RATE, RATE)
    assert ours.sdr.shape == fast.shape == (2, 3)
    np.testing.assert_array_equal(np.isnan(ours.sdr), np.isnan(fast))
    np.testing.assert_allclose(ours.sdr, fast, rtol=1e-10, atol=1e-10)
    assert np.isnan(_stacked(ours)[:, :, 1]).all()


def test_near_perfect_estimates_score_very_high() -> None:
    refs, _ = _pair(seed=1)
    noise = np.random.default_rng(2).standard_normal(refs.shape)
    result = bss_eval_v4(refs, refs + 1e-5 * noise, window=RATE, hop=RATE)
    scores = _stacked(result)
    assert np.isfinite(scores).all()
    assert (scores > 90).all()
    # the references have a power of 1.25 per sample, the noise 1e-10
    np.testing.assert_allclose(result.sdr, 100.0 + 10 * math.log10(1.25), atol=0.3)


def test_exact_estimates_give_nan_sdr_like_museval_storage() -> None:
    refs, _ = _pair(seed=3)
    result = bss_eval_v4(refs, refs.copy(), window=RATE, hop=RATE)
    assert np.isnan(result.sdr).all()  # ‖ŝ − s‖² = 0: +inf, stored as NaN
    finite = _stacked(result)[1:]
    assert (finite[np.isfinite(finite)] > 120).all()


def test_scores_ignore_a_common_gain() -> None:
    refs, ests = _pair(seed=4)
    base = _stacked(bss_eval_v4(refs, ests, window=RATE, hop=RATE))
    scaled = _stacked(bss_eval_v4(1e-3 * refs, 1e-3 * ests, window=RATE, hop=RATE))
    np.testing.assert_allclose(scaled, base, atol=1e-8)


def test_worse_estimates_score_lower() -> None:
    refs, ests = _pair(seed=5)
    noise = np.random.default_rng(6).standard_normal(refs.shape)
    clean = bss_eval_v4(refs, ests, window=RATE, hop=RATE)
    noisy = bss_eval_v4(refs, ests + 0.5 * noise, window=RATE, hop=RATE)
    assert (noisy.sdr < clean.sdr).all()
    assert (noisy.sar < clean.sar).all()


def test_frames_drop_the_partial_tail_and_cover_short_signals() -> None:
    refs, ests = _pair(seconds=2.7, seed=7)
    assert bss_eval_v4(refs, ests, window=RATE, hop=RATE).nb_frames == 2
    assert bss_eval_v4(refs, ests, window=RATE, hop=RATE // 2).nb_frames == 4
    assert bss_eval_v4(refs, ests, window=10 * RATE, hop=10 * RATE).nb_frames == 1


def test_padding_matches_explicitly_padded_or_trimmed_estimates() -> None:
    refs, ests = _pair(seed=8)
    short = ests[..., : -RATE // 2]
    padded = np.concatenate([short, np.zeros((2, 2, RATE // 2))], axis=-1)
    np.testing.assert_array_equal(
        _stacked(bss_eval_v4(refs, short, window=RATE, hop=RATE)),
        _stacked(bss_eval_v4(refs, padded, window=RATE, hop=RATE)),
    )
    long = np.concatenate([ests, np.ones((2, 2, 100))], axis=-1)
    np.testing.assert_array_equal(
        _stacked(bss_eval_v4(refs, long, window=RATE, hop=RATE)),
        _stacked(bss_eval_v4(refs, ests, window=RATE, hop=RATE)),
    )
    with pytest.raises(ValueError, match="padding"):
        bss_eval_v4(refs, short, window=RATE, hop=RATE, padding=False)


def test_chunked_and_uncached_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    refs, ests = _pair(nb_sources=3, nb_channels=1, seconds=4.5, seed=9)
    expected = _stacked(bss_eval_v4(refs, ests, window=RATE, hop=RATE))
    # tiny budgets: one block per chunk, a few bins per slice, no cache between the passes
    monkeypatch.setattr(bsseval_module, "_CHUNK_BYTES", 1)
    monkeypatch.setattr(bsseval_module, "_SLICE_BYTES", 1 << 12)
    monkeypatch.setattr(bsseval_module, "_CACHE_BYTES", 0)
    np.testing.assert_allclose(
        _stacked(bss_eval_v4(refs, ests, window=RATE, hop=RATE)), expected, atol=1e-8
    )


@pytest.mark.parametrize(("nb_sources", "nb_channels", "seconds"), [(3, 1, 4.5), (2, 2, 3.0)])
def test_one_pass_and_two_pass_paths_agree(
    monkeypatch: pytest.MonkeyPatch, nb_sources: int, nb_channels: int, seconds: float
) -> None:
    """Frames tiling the signal take the one-pass path (frame-local correlations); the
    two-pass path (per-frame spectra filtered, Gram matrices by Parseval) computes the same
    energies another way. Both are float64 throughout: the metrics agree to rounding (the
    energies' differences of terms lose at most 10^(dB/10)·1e-16 relatively, ~1e-12 dB at
    these 10–30 dB)."""
    refs, ests = _pair(nb_sources=nb_sources, nb_channels=nb_channels, seconds=seconds, seed=21)
    calls = []
    original = bsseval_module._tiled_energies
    monkeypatch.setattr(
        bsseval_module,
        "_tiled_energies",
        lambda *args: calls.append(original(*args)) or calls[-1],
    )
    one_pass = _stacked(bss_eval_v4(refs, ests, window=RATE, hop=RATE))
    assert len(calls) == 1 and calls[0] is not None  # within its error bound: no fallback
    monkeypatch.setattr(bsseval_module, "_TILED", False)
    two_pass = _stacked(bss_eval_v4(refs, ests, window=RATE, hop=RATE))
    assert np.isfinite(one_pass).all()
    np.testing.assert_allclose(one_pass, two_pass, atol=1e-8)


def test_ill_conditioned_references_fall_back_to_the_two_pass_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pure tones over a −60 dB floor make the Gram matrix ill-conditioned and the filters
    large; the one-pass path's forms would then lose more than their error bound allows
    (they square the filters' conditioning), so the frames are decomposed by filtering their
    spectra instead: exactly the two-pass path's numbers."""
    rng = np.random.default_rng(23)
    t = np.arange(3 * RATE) / RATE
    tones = np.stack([np.sin(2 * np.pi * f * t) for f in (110.0, 440.0, 1250.0)])
    refs = (tones[:, None, :] * rng.uniform(0.5, 1.0, (3, 2, 1))) + 1e-3 * rng.standard_normal(
        (3, 2, t.size)
    )
    ests = 0.9 * refs + 0.05 * refs[::-1] + 1e-3 * rng.standard_normal(refs.shape)
    calls = []
    original = bsseval_module._tiled_energies
    monkeypatch.setattr(
        bsseval_module,
        "_tiled_energies",
        lambda *args: calls.append(original(*args)) or calls[-1],
    )
    got = _stacked(bss_eval_v4(refs, ests, window=RATE, hop=RATE))
    assert calls == [None]  # the bound was not met: the two-pass path took over
    monkeypatch.setattr(bsseval_module, "_TILED", False)
    np.testing.assert_array_equal(got, _stacked(bss_eval_v4(refs, ests, window=RATE, hop=RATE)))


def test_torch_inputs_and_float32_give_the_numpy_result() -> None:
    refs, ests = _pair(seed=10)
    expected = _stacked(bss_eval_v4(refs, ests, window=RATE, hop=RATE))
    got = bss_eval_v4(
        torch.from_numpy(refs), torch.from_numpy(ests), window=RATE, hop=RATE, device="cpu"
    )
    np.testing.assert_array_equal(_stacked(got), expected)
    single = bss_eval_v4(refs.astype(np.float32), ests.astype(np.float32), window=RATE, hop=RATE)
    np.testing.assert_allclose(_stacked(single), expected, atol=1e-4)


@pytest.mark.parametrize(("tiled", "hop"), [(True, RATE), (False, RATE), (True, RATE // 2)])
def test_float32_inputs_score_exactly_as_their_float64_copy(
    monkeypatch: pytest.MonkeyPatch, tiled: bool, hop: int
) -> None:
    """float32 samples stay float32 (no signal-sized float64 copy) and are upcast a piece at a
    time: bit for bit the scores of the same samples converted to float64 first, on both
    paths (and overlapping frames)."""
    refs, ests = _pair(nb_sources=2, nb_channels=2, seconds=2.5, seed=22)
    r32, e32 = refs.astype(np.float32), ests.astype(np.float32)
    monkeypatch.setattr(bsseval_module, "_TILED", tiled)
    got = _stacked(bss_eval_v4(r32, e32, window=RATE, hop=hop))
    upcast = bss_eval_v4(r32.astype(np.float64), e32.astype(np.float64), window=RATE, hop=hop)
    np.testing.assert_array_equal(got, _stacked(upcast))
    sources = bss_eval_sources(r32[:, 0], e32[:, 0])
    sources64 = bss_eval_sources(r32[:, 0].astype(np.float64), e32[:, 0].astype(np.float64))
    np.testing.assert_array_equal(sources.sdr, sources64.sdr)


@pytest.mark.parametrize(
    ("refs", "ests", "message"),
    [
        (np.ones((2, 2, 100)), np.ones((3, 2, 100)), "differ"),
        (np.ones((2, 100)), np.ones((2, 100)), "nb_channels"),
        (np.full((2, 1, 100), np.nan), np.ones((2, 1, 100)), "NaN"),
        (np.ones((2, 1, 100)), np.full((2, 1, 100), np.inf), "NaN"),
        (np.zeros((2, 1, 100)), np.ones((2, 1, 100)), r"references\[0\] is silent"),
        (np.ones((2, 1, 100)), np.stack([np.ones((1, 100)), np.zeros((1, 100))]), "estimates"),
    ],
)
def test_bad_inputs_are_refused(refs: np.ndarray, ests: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bss_eval_v4(refs, ests, window=50, hop=50, filters_len=8)


def test_chunked_input_scan_finds_late_nan_and_cancelling_channels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The finite/silence scan goes a chunk of samples at a time: tiny chunks change nothing."""
    refs, ests = _pair(seconds=2.0)
    # channels that cancel exactly over the second second: a silent frame for every source
    ests[0, 1, RATE:] = -ests[0, 0, RATE:]
    expected = _stacked(bss_eval_v4(refs, ests, window=RATE, hop=RATE, filters_len=32))
    # 37-sample chunks (the frame energies then sum in another order: rounding only)
    monkeypatch.setattr(bsseval_module, "_TIME_CHUNK_BYTES", 8 * 4 * 37)
    got = _stacked(bss_eval_v4(refs, ests, window=RATE, hop=RATE, filters_len=32))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0.0)
    assert np.isnan(got[:, :, 1]).all() and np.isfinite(got[:, :, 0]).all()
    # flags per granule (a frame is whole granules): larger and smaller than a chunk, and a
    # partial last granule, against the channel sums' zeros directly
    ests[1, :, 4998:5005] = 0.0  # one silent 7-sample granule (the 714th)
    nonzero = ests.sum(axis=1) != 0
    for granule in (RATE, 1000, 7):
        flags = bsseval_module._sounding(torch.from_numpy(ests), "estimates", granule)
        padded = np.pad(nonzero, ((0, 0), (0, -nonzero.shape[1] % granule)))
        expected_flags = padded.reshape(2, -1, granule).any(axis=-1)
        np.testing.assert_array_equal(flags.numpy(), expected_flags)
    assert not flags[1, 714] and flags[1, 713] and flags[1, 715]
    assert not flags[0, -(-RATE // 7) :].any() and flags[0, : RATE // 7].all()
    late = refs.copy()
    late[1, 0, -1] = np.inf
    with pytest.raises(ValueError, match="references holds NaN or infinite"):
        bss_eval_v4(late, ests, window=RATE, hop=RATE, filters_len=32)


def test_bad_lengths_are_refused() -> None:
    refs, ests = _pair(seconds=0.1)
    for kwargs in ({"window": 0}, {"hop": -1}, {"filters_len": 0}, {"window": 2.5}):
        with pytest.raises(ValueError, match="positive integer"):
            bss_eval_v4(refs, ests, **kwargs)  # type: ignore[arg-type]


# --- the linear algebra -----------------------------------------------------------------------


def _delayed(signals: np.ndarray, nb_lags: int) -> np.ndarray:
    """``(nb_samples + nb_lags − 1, nb_signals · nb_lags)``: every signal delayed 0 … L − 1."""
    nb_signals, nb_samples = signals.shape
    out = np.zeros((nb_samples + nb_lags - 1, nb_signals * nb_lags))
    for p in range(nb_signals):
        for a in range(nb_lags):
            out[a : a + nb_samples, p * nb_lags + a] = signals[p]
    return out


def test_block_correlations_build_the_exact_gram_and_cross_terms() -> None:
    rng = np.random.default_rng(11)
    refs = rng.standard_normal((2, 2, 3001))
    ests = rng.standard_normal((2, 2, 3001))
    nb_lags = 24
    tiles = torch.from_numpy(np.concatenate([refs, ests]).reshape(8, 1, -1))
    # 3001 samples in blocks of 700: five boundaries to straddle, a partial last block
    blocks = torch.nn.functional.pad(tiles.reshape(8, -1), (0, 5 * 700 - 3001)).reshape(8, 5, 700)
    n_fft = bsseval_module._next_fast_len(700 + nb_lags - 1)
    spec = torch.fft.rfft(blocks, n=n_fft)
    cross = torch.einsum("ubf,vbf->uvf", spec, spec[:4].conj())
    corr = torch.fft.irfft(cross, n=n_fft)[..., :nb_lags]
    # the same cross-spectra from the chunked, reused-buffer block transform: chunks of two
    # blocks transformed one at a time, stored whole (read twice) or chunk by chunk
    groups = [tiles.reshape(8, -1)[:4], tiles.reshape(8, -1)[4:]]
    ones = torch.ones(n_fft // 2 + 1, dtype=torch.float64)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bsseval_module, "_CHUNK_BYTES", 2 * 8 * (n_fft // 2 + 1) * 16)
        patch.setattr(bsseval_module, "_FFT_BYTES", 8 * n_fft * 8)
        for keep in (False, True):
            spectra = bsseval_module._BlockSpectra(groups, 700, 5, n_fft, ones, keep=keep)
            for _ in range(2):
                chunked = torch.zeros((n_fft // 2 + 1, 8, 4), dtype=torch.complex128)
                for _, bins, z in spectra.slices(5):
                    assert z.is_contiguous()  # no copy in the batched products
                    chunked[bins] += torch.bmm(z, z[:, :4].transpose(1, 2).conj())
                np.testing.assert_allclose(
                    chunked.permute(1, 2, 0).numpy(), cross.numpy(), atol=1e-9
                )
    straddling = bsseval_module._straddling_correlations(groups, 700, nb_lags)
    # one boundary per chunk, with torch's FFTs and products (what a GPU runs): the same terms
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bsseval_module, "_FRAME_FFT_BYTES", 1)
        patch.setattr(bsseval_module, "_NUMPY_ON_CPU", False)
        chunked_straddling = bsseval_module._straddling_correlations(groups, 700, nb_lags)
    np.testing.assert_allclose(chunked_straddling.numpy(), straddling.numpy(), atol=1e-12)
    corr = corr + straddling
    gram = bsseval_module._gram(corr[:4], nb_lags).numpy()
    delayed = _delayed(refs.reshape(4, -1), nb_lags)
    np.testing.assert_allclose(gram, delayed.T @ delayed, atol=1e-9)
    padded_ests = np.pad(ests.reshape(4, -1), ((0, 0), (0, nb_lags - 1)))
    expected_cross = delayed.T @ padded_ests.T  # D[(p, a), e]
    got_cross = corr[4:].permute(1, 2, 0).reshape(4 * nb_lags, 4).numpy()
    np.testing.assert_allclose(got_cross, expected_cross, atol=1e-9)


@pytest.mark.parametrize(
    ("fft_bytes", "sub_fft", "nb_lags", "numpy_on_cpu"),
    # seven sub-blocks per block; or one whose extension (nb_lags - 1) outruns the block, so no
    # sub-block comes from a strided view (short windows at many lags, as mir_eval's GNSDR uses);
    # numpy's FFTs and products (the CPU default) or torch's (what a GPU runs)
    [
        (1, 128, 24, True),
        (1 << 25, 128, 24, True),
        (1 << 25, 128, 600, True),
        (1, 128, 24, False),
        (1 << 25, 128, 600, False),
    ],
)
def test_frame_correlations_are_each_blocks_own_correlations(
    monkeypatch: pytest.MonkeyPatch, fft_bytes: int, sub_fft: int, nb_lags: int, numpy_on_cpu: bool
) -> None:
    """ρ_uv(d) = Σ_n u[n + d] v[n] with u and v zero outside the block, for every block:
    short FFTs over sub-blocks (the last one without a next one) with their overlap, a chunk of
    blocks at a time (one block per chunk, or all at once)."""
    rng = np.random.default_rng(12)
    refs = rng.standard_normal((3, 3001))
    ests = rng.standard_normal((3, 3001))
    window = 700
    monkeypatch.setattr(bsseval_module, "_SUB_FFT", sub_fft)
    monkeypatch.setattr(bsseval_module, "_FRAME_FFT_BYTES", fft_bytes)
    monkeypatch.setattr(bsseval_module, "_NUMPY_ON_CPU", numpy_on_cpu)
    groups = [torch.from_numpy(refs), torch.from_numpy(ests)]
    local = bsseval_module._frame_correlations(groups, window, nb_lags).numpy()
    signals = np.concatenate([refs, ests])
    assert local.shape == (5, 6, 3, nb_lags)  # 3001 samples: four blocks and a partial one
    for block in range(5):
        piece = signals[:, block * window : (block + 1) * window]
        length = piece.shape[-1]
        for d in range(nb_lags):
            # Σ_n u[n + d] v[n] over the block: u shifted left by d, zeros past its end
            expected = piece[:, d:] @ piece[:3, : max(0, length - d)].T
            np.testing.assert_allclose(local[block, :, :, d], expected, atol=1e-10)


def _full_size_system(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlations of 8 reference and 8 estimate channels at 512 lags (4 stereo sources)."""
    rng = np.random.default_rng(seed)
    signals = torch.from_numpy(rng.standard_normal((16, 12000)))
    signals[:8] += 0.8 * torch.roll(signals[:8], 1, dims=-1)  # coloured references
    n_fft = bsseval_module._next_fast_len(12000 + 511)
    spec = torch.fft.rfft(signals, n=n_fft)
    corr = torch.fft.irfft(spec[:, None] * spec[None, :8].conj(), n=n_fft)[..., :512]
    gram = bsseval_module._gram(corr[:8], 512)
    gram.diagonal().add_(bsseval_module.GRAM_EPS)
    return corr, gram


def test_cholesky_solve_matches_numpy_on_a_full_size_gram() -> None:
    """4 stereo sources × 512 taps: a 4096 × 4096 Gram, solved with two threads (pitfalls.md)."""
    corr, gram = _full_size_system(seed=12)
    rhs = corr[8:].permute(1, 2, 0).reshape(8 * 512, 8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ours = bsseval_module._solve_spd(gram, rhs).numpy()
    finally:
        torch.set_num_threads(threads)
    expected = np.linalg.solve(gram.numpy(), rhs.numpy())
    assert gram.shape == (4096, 4096)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9 * np.abs(expected).max())
    residual = gram.numpy() @ ours - rhs.numpy()
    assert np.abs(residual).max() < 1e-10 * np.abs(rhs.numpy()).max()


def test_block_toeplitz_solver_matches_numpy_on_a_full_size_gram() -> None:
    """The Schur solver on the same 4096 × 4096 system, in its lag-major ordering."""
    corr, gram = _full_size_system(seed=13)
    blocks = corr[:8].permute(2, 1, 0).clone()  # T_d[p, q] = corr[q, p, d]
    blocks[0] = 0.5 * (blocks[0] + blocks[0].T)
    blocks[0].diagonal().add_(bsseval_module.GRAM_EPS)
    # the block Toeplitz matrix is the Gram with rows and columns reordered (a, p)
    order = torch.arange(4096).reshape(8, 512).T.reshape(-1)
    toeplitz = gram[order][:, order]
    probe = torch.from_numpy(np.random.default_rng(0).standard_normal((4096, 3)))
    np.testing.assert_allclose(
        bsseval_module._block_toeplitz_matvec(blocks, probe.reshape(512, 8, 3)).reshape(4096, 3),
        toeplitz @ probe,
        atol=1e-9,
    )
    factor = bsseval_module._schur_cholesky(blocks)
    assert factor is not None
    factor = factor.triu()  # the strictly lower part is left unset
    np.testing.assert_allclose(factor.T @ (factor @ probe), toeplitz @ probe, atol=1e-8)
    rhs = corr[8:].permute(2, 1, 0).reshape(4096, 8)  # rows (a, p)
    ours = bsseval_module._solve_block_toeplitz(blocks, rhs)
    assert ours is not None
    expected = np.linalg.solve(toeplitz.numpy(), rhs.numpy())
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-9 * np.abs(expected).max())


def test_triangular_solves_never_read_the_other_triangle() -> None:
    """The Schur factor's strictly lower part is left unset (no zero fill of 134 MB): torch's
    solve_triangular must read only the triangle it is told, whatever the other holds."""
    rng = np.random.default_rng(16)
    a = rng.standard_normal((300, 300))
    upper = torch.from_numpy(np.linalg.cholesky(a @ a.T + 300 * np.eye(300)).T.copy())
    rhs = torch.from_numpy(rng.standard_normal((300, 8)))
    garbage = upper.clone()
    garbage[torch.ones(300, 300, dtype=torch.bool).tril(-1)] = math.nan
    for matrix, is_upper in ((upper, True), (upper.mT, False)):
        dirty = garbage if is_upper else garbage.mT
        expected = torch.linalg.solve_triangular(matrix, rhs, upper=is_upper)
        got = torch.linalg.solve_triangular(dirty, rhs, upper=is_upper)
        assert torch.equal(got, expected)


def test_block_toeplitz_solver_gives_up_on_singular_matrices() -> None:
    corr, _ = _full_size_system(seed=14)
    blocks = corr[:8].permute(2, 1, 0)[:64].clone()
    blocks[:, 1, :] = blocks[:, 0, :]  # channel 1 duplicates channel 0
    blocks[:, :, 1] = blocks[:, :, 0]
    rhs = torch.ones(64 * 8, 3, dtype=torch.float64)
    assert bsseval_module._solve_block_toeplitz(blocks, rhs) is None


def test_dense_and_block_toeplitz_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    refs, ests = _pair(nb_sources=3, nb_channels=2, seconds=2.0, seed=15)
    fast = _stacked(bss_eval_v4(refs, ests, window=RATE, hop=RATE))
    monkeypatch.setattr(bsseval_module, "_solve_block_toeplitz", lambda *args: None)
    dense = _stacked(bss_eval_v4(refs, ests, window=RATE, hop=RATE))
    np.testing.assert_allclose(fast, dense, atol=1e-9)


def test_singular_gram_falls_back_to_museval_solver() -> None:
    """An exactly duplicated channel makes the Gram singular; the result stays finite."""
    refs, ests = _pair(seed=13)
    refs[:, 1] = refs[:, 0]  # mono content in both channels
    result = bss_eval_v4(refs, ests, window=RATE, hop=RATE)
    assert np.isfinite(_stacked(result)).all()
    np.testing.assert_allclose(result.sdr, framewise_sdr(refs, ests, RATE, RATE), atol=1e-9)


def test_next_fast_len_is_the_smallest_5_smooth_size() -> None:
    def smooth(n: int) -> bool:
        for prime in (2, 3, 5):
            while n % prime == 0:
                n //= prime
        return n == 1

    for n in (1, 2, 7, 511, 44611, 8192, 10007):
        size = bsseval_module._next_fast_len(n)
        assert size >= n and smooth(size)
        assert not any(smooth(m) for m in range(n, size))


# --- bss_eval_sources, SI-SDR, NSDR, GNSDR --------------------------------------------------------


def test_bss_eval_sources_finds_the_permutation_and_accepts_2d() -> None:
    refs, ests = _pair(nb_sources=3, nb_channels=1, seconds=1.0, seed=14)
    straight = bss_eval_sources(refs[:, 0], ests[:, 0])
    swapped = bss_eval_sources(refs[:, 0], ests[[2, 0, 1], 0])
    np.testing.assert_array_equal(straight.perm, [0, 1, 2])
    np.testing.assert_array_equal(swapped.perm, [1, 2, 0])
    np.testing.assert_allclose(swapped.sdr, straight.sdr, atol=1e-9)
    fixed = bss_eval_sources(refs[:, 0], ests[[2, 0, 1], 0], compute_permutation=False)
    assert (fixed.sdr < straight.sdr).all()


def test_bss_eval_sources_ignores_gain_and_short_filters() -> None:
    refs, _ = _pair(nb_sources=2, nb_channels=1, seconds=1.0, seed=15)
    refs[..., -2:] = 0.0  # room for the filter's tail inside the signal
    echo = 3.0 * refs + 1.5 * np.roll(refs, 2, axis=-1)  # a causal 3-tap filter
    result = bss_eval_sources(refs, echo)
    assert (result.sdr > 100).all()  # the 512-tap filters absorb it entirely


def test_si_sdr_matches_the_formula_written_out() -> None:
    refs, ests = _pair(nb_sources=3, seed=16)
    expected = []
    for s, e in zip(refs, ests, strict=True):
        s, e = s.ravel(), e.ravel()
        alpha = float(np.dot(e, s) / np.dot(s, s))
        expected.append(10 * math.log10(np.sum((alpha * s) ** 2) / np.sum((alpha * s - e) ** 2)))
    np.testing.assert_allclose(si_sdr(refs, ests), expected, rtol=1e-12)
    np.testing.assert_allclose(si_sdr(refs, -4.0 * ests), expected, rtol=1e-12)  # any gain
    np.testing.assert_allclose(si_sdr(torch.from_numpy(refs), ests), expected, rtol=1e-12)


def test_si_sdr_known_values_and_options() -> None:
    ref = np.array([[1.0, -1.0, 1.0, -1.0]])
    # estimate = ref + orthogonal noise of a quarter of its energy: 10·log10(4) dB
    est = ref + 0.5 * np.array([[1.0, 1.0, -1.0, -1.0]])
    np.testing.assert_allclose(si_sdr(ref, est), 10 * math.log10(4.0), rtol=1e-12)
    assert si_sdr(ref, 2 * ref)[0] == math.inf
    offset = si_sdr(ref + 5.0, est + 5.0, zero_mean=True)
    np.testing.assert_allclose(offset, 10 * math.log10(4.0), rtol=1e-12)
    with pytest.raises(ValueError, match="all zeros"):
        si_sdr(np.zeros((1, 4)), est)
    with pytest.raises(ValueError, match="differ"):
        si_sdr(ref, np.ones((1, 5)))


def test_nsdr_of_the_mixture_itself_is_zero_and_gains_are_positive() -> None:
    refs, ests = _pair(nb_sources=2, nb_channels=1, seconds=1.0, seed=17)
    mixture = refs.sum(axis=0)
    np.testing.assert_allclose(nsdr(refs, np.stack([mixture, mixture]), mixture), 0.0, atol=1e-9)
    assert (nsdr(refs, ests, mixture) > 0).all()
    with pytest.raises(ValueError, match="mixture"):
        nsdr(refs, ests, mixture[..., :-1])


def test_gnsdr_is_the_length_weighted_mean() -> None:
    values = np.array([[1.0, 4.0], [3.0, -2.0], [0.0, 1.0]])
    lengths = np.array([1.0, 2.0, 7.0])
    expected = (values * lengths[:, None]).sum(axis=0) / 10.0
    np.testing.assert_allclose(gnsdr(values, lengths), expected)
    assert float(gnsdr(np.array([2.0, 4.0]), np.array([3, 1]))) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="positive"):
        gnsdr(values, np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="infinite"):
        gnsdr(np.array([1.0, math.inf]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="nb_clips"):
        gnsdr(values, lengths[:2])
