"""STFT / iSTFT: against a numpy reference, round trip, shapes, state_dict, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stemkit.dsp import ISTFT, STFT, bandwidth_to_max_bin, magnitude


def _numpy_stft(signal: np.ndarray, n_fft: int, n_hop: int, center: bool) -> np.ndarray:
    """Independent reference: reflect pad, periodic Hann, rfft per frame → (nb_bins, nb_frames)."""
    if center:
        signal = np.pad(signal, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    nb_frames = 1 + (len(signal) - n_fft) // n_hop
    frames = np.stack([signal[k * n_hop : k * n_hop + n_fft] * window for k in range(nb_frames)])
    return np.fft.rfft(frames, axis=-1).T


@pytest.mark.parametrize("center", [True, False])
def test_stft_matches_numpy_reference(center: bool) -> None:
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(5000)
    ours = STFT(n_fft=512, n_hop=128, center=center).double()(torch.from_numpy(signal))
    ref = _numpy_stft(signal, 512, 128, center)
    assert ours.shape == ref.shape
    # the window is built in float32 (as upstream), hence the 1e-6 tolerance in float64
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-6 * np.abs(ref).max())


@pytest.mark.parametrize("length", [44100, 44100 + 517])
def test_round_trip_error_below_1e6_rms(length: int) -> None:
    torch.manual_seed(0)
    waveform = 0.5 * torch.randn(2, 2, length)
    stft, istft = STFT(4096, 1024, center=True), ISTFT(4096, 1024, center=True)
    rebuilt = istft(stft(waveform), length=length)
    assert rebuilt.shape == waveform.shape
    rms_error = (rebuilt - waveform).pow(2).mean().sqrt().item()
    assert rms_error < 1e-6


@pytest.mark.parametrize("leading", [(), (3,), (2, 1), (2, 4, 2)])
def test_shapes_follow_leading_dims(leading: tuple[int, ...]) -> None:
    n_fft, n_hop, length = 1024, 256, 4000
    spec = STFT(n_fft, n_hop, center=True)(torch.zeros(*leading, length))
    assert spec.is_complex()
    assert spec.shape == (*leading, n_fft // 2 + 1, 1 + length // n_hop)
    spec = STFT(n_fft, n_hop, center=False)(torch.zeros(*leading, length))
    assert spec.shape == (*leading, n_fft // 2 + 1, 1 + (length - n_fft) // n_hop)


def test_window_is_not_saved_but_follows_dtype_and_device() -> None:
    stft, istft = STFT(256, 64), ISTFT(256, 64)
    assert list(stft.state_dict()) == [] and list(istft.state_dict()) == []
    assert stft.window.shape == (256,)
    assert stft.double().window.dtype == torch.float64
    assert stft.nb_bins == 129


def test_magnitude_and_mono_downmix() -> None:
    spec = torch.tensor([[[3 + 4j]], [[0 - 1j]]], dtype=torch.complex64)[None]  # (1, 2, 1, 1)
    assert magnitude(spec).flatten().tolist() == [5.0, 1.0]
    mono = magnitude(spec, mono=True)
    assert mono.shape == (1, 1, 1, 1) and mono.item() == 3.0


def test_bandwidth_to_max_bin() -> None:
    assert bandwidth_to_max_bin(44100, 4096, 16000) == 1487
    assert bandwidth_to_max_bin(16000, 1024, 16000) == 513  # wider than Nyquist keeps all
    assert bandwidth_to_max_bin(44100, 4096, 0) == 1
    with pytest.raises(ValueError):
        bandwidth_to_max_bin(44100, 4096, -1)


def test_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="unknown STFT window"):
        STFT(256, 64, window="kaiser")
    with pytest.raises(ValueError, match="n_hop"):
        STFT(256, 512)
    with pytest.raises(ValueError, match="too short"):
        STFT(4096, 1024, center=True)(torch.zeros(2, 1000))
    with pytest.raises(TypeError):
        STFT(256, 64)(torch.zeros(300, dtype=torch.complex64))
    with pytest.raises(ValueError, match="bins"):
        ISTFT(256, 64)(torch.zeros(100, 5, dtype=torch.complex64))
    with pytest.raises(TypeError):
        ISTFT(256, 64)(torch.zeros(129, 5))


def test_istft_in_row_chunks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The autograd path (torch.istft) in chunks of rows, as training runs it."""
    torch.manual_seed(1)
    spec = STFT(512, 128, center=True)(torch.randn(3, 2, 6000)).requires_grad_()
    whole = ISTFT(512, 128, center=True)(spec, length=6000)
    monkeypatch.setattr("stemkit.dsp.stft._ISTFT_CHUNK_VALUES", 512 * spec.shape[-1] * 2)
    chunked = ISTFT(512, 128, center=True)(spec, length=6000)
    assert chunked.shape == (3, 2, 6000)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
    chunked.square().sum().backward()
    assert spec.grad is not None and bool(torch.isfinite(spec.grad).all())


@pytest.mark.filterwarnings("ignore:The length of signal is shorter")  # torch.istft's, 7000
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("n_fft", "n_hop"),
    # hop dividing n_fft (shifted sums), not dividing it (fold), an odd window
    [(512, 128), (1000, 300), (255, 64)],
)
@pytest.mark.parametrize("length", [None, 5000, 6000, 7000])
def test_inference_istft_equals_torch_istft(
    dtype: torch.dtype, n_fft: int, n_hop: int, length: int | None
) -> None:
    """Inference on the CPU goes through OverlapAdd (numpy's FFTs), not torch.istft: the same
    samples up to rounding. Each sample is a sum of at most ceil(n_fft / n_hop) windowed
    inverse-FFT values over the envelope, so two FFT implementations differ by a few ulps of
    log2(n_fft) rounding steps: 2e-6 of the peak in float32, 1e-13 in float64. Lengths
    shorter and longer than the frames cover (zeros past them) and the default (None)."""
    torch.manual_seed(2)
    signal = torch.randn(2, 2, 6000, dtype=dtype)
    spec = STFT(n_fft, n_hop, center=True).to(dtype)(signal)
    istft = ISTFT(n_fft, n_hop, center=True).to(dtype)
    ours = istft(spec, length=length)
    theirs = torch.istft(
        spec.reshape(-1, *spec.shape[-2:]),
        n_fft=n_fft,
        hop_length=n_hop,
        window=istft.window,
        center=True,
        length=length,
    ).reshape(2, 2, -1)
    assert ours.shape == theirs.shape and ours.dtype == dtype
    # the signal's samples; past them (length 7000) the padded frames' tails divided by a
    # vanishing envelope amplify any rounding (both implementations), so only their zeros
    # past the last frame's reach are compared
    inside = min(ours.shape[-1], 6000)
    bound = (2e-6 if dtype == torch.float32 else 1e-13) * float(theirs.abs().max())
    torch.testing.assert_close(ours[..., :inside], theirs[..., :inside], rtol=0, atol=bound)
    reach = n_fft + n_hop * (spec.shape[-1] - 1) - n_fft // 2
    if length == 7000:
        assert reach < 7000
        assert not bool(ours[..., reach:].any()) and not bool(theirs[..., reach:].any())
