"""Streaming causal Open-Unmix: block-by-block output equals the offline separator, delayed."""

from __future__ import annotations

import pytest
import torch

from conftest import randomize_umx_core
from stemkit.errors import StemkitError
from stemkit.inference.streaming import StreamingSeparator, streaming_latency
from stemkit.models import build
from stemkit.models.spectral import Separator
from stemkit.models.umx import OpenUnmix

RATE = 44100
N_FFT, N_HOP = 512, 128


def _separator(**options: object) -> Separator:
    torch.manual_seed(0)
    model = build("umx", hidden_size=16, n_fft=N_FFT, n_hop=N_HOP, unidirectional=True, **options)
    assert isinstance(model, Separator)
    gen = torch.Generator().manual_seed(1)
    for core in model.target_models.values():
        assert isinstance(core, OpenUnmix)
        randomize_umx_core(core, gen)
    return model.eval()


def _mixture(seconds: float = 0.8, seed: int = 2) -> torch.Tensor:
    """Stereo noise with a swelling envelope and a tone, different in each channel."""
    gen = torch.Generator().manual_seed(seed)
    n = int(seconds * RATE)
    t = torch.arange(n) / RATE
    envelope = 0.1 + 0.9 * torch.sin(torch.pi * t / seconds) ** 2
    noise = torch.randn(2, n, generator=gen) * envelope
    tone = 0.5 * torch.sin(2 * torch.pi * torch.tensor([[220.0], [330.0]]) * t)
    return (0.4 * noise + tone).float()


def _stream(stream: StreamingSeparator, mixture: torch.Tensor, block: int) -> torch.Tensor:
    """Feed ``mixture`` in blocks; the remainder goes to flush."""
    outputs, start = [], 0
    while start + block <= mixture.shape[-1]:
        out = stream.process(mixture[:, start : start + block])
        assert out.shape == (len(stream.sources), mixture.shape[0], block)
        outputs.append(out)
        start += block
    outputs.append(stream.flush(mixture[:, start:]))
    return torch.cat(outputs, dim=-1)


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module")
def separator() -> Separator:
    return _separator()


@pytest.fixture(scope="module")
def mixture() -> torch.Tensor:
    return _mixture()


@pytest.fixture(scope="module")
def offline(separator: Separator, mixture: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return separator(mixture[None])[0]


@pytest.mark.parametrize("declared", [False, True], ids=["any-size", "declared"])
@pytest.mark.parametrize("block", [1024, 777, 4096])
def test_streamed_equals_offline_delayed(
    separator: Separator,
    mixture: torch.Tensor,
    offline: torch.Tensor,
    block: int,
    declared: bool,
) -> None:
    stream = StreamingSeparator(separator, block_size=block if declared else None)
    latency = stream.latency_samples
    streamed = _stream(stream, mixture, block)
    assert streamed.shape == (4, 2, mixture.shape[-1] + latency)
    assert torch.count_nonzero(streamed[..., :latency]) == 0
    assert _rel_err(streamed[..., latency:], offline) < 1e-5
    # the stems are real separations, not copies of the mixture or of each other
    assert _rel_err(offline[0], offline[1]) > 0.1
    assert _rel_err(offline[0], mixture) > 0.1


@pytest.mark.parametrize(
    "options", [{"nb_channels": 1}, {"softmask": True, "residual": True}], ids=str
)
def test_streamed_equals_offline_other_settings(
    mixture: torch.Tensor, options: dict[str, object]
) -> None:
    separator = _separator(**options)
    with torch.no_grad():
        offline = separator(mixture[None])[0]
    stream = StreamingSeparator(separator)
    streamed = _stream(stream, mixture, 1000)
    assert streamed.shape[0] == len(separator.sources)
    assert _rel_err(streamed[..., stream.latency_samples :], offline) < 1e-5


def test_latency_values() -> None:
    # blocks of any size: the worst phase against the hop grid, n_fft - 1
    assert streaming_latency(N_FFT, N_HOP) == N_FFT - 1
    assert streaming_latency(N_FFT, N_HOP, 1) == N_FFT - 1
    # blocks on the hop grid only wait for the window to fill: n_fft - n_hop
    assert streaming_latency(N_FFT, N_HOP, 1024) == N_FFT - N_HOP
    assert streaming_latency(4096, 1024, 1024) == 3072
    assert streaming_latency(4096, 1024, 512) == 3584
    assert streaming_latency(N_FFT, N_HOP, 777) == N_FFT - 1  # gcd(777, 128) = 1


def test_describe_and_latency_property(separator: Separator) -> None:
    stream = StreamingSeparator(separator, block_size=1024)
    assert stream.latency_samples == N_FFT - N_HOP
    assert stream.latency_seconds == pytest.approx(384 / RATE)
    text = stream.describe()
    assert "384 samples" in text and f"{384 / RATE:.4f} s" in text
    assert "vocals" in text


def test_state_is_carried(
    separator: Separator, mixture: torch.Tensor, offline: torch.Tensor
) -> None:
    """Dropping the LSTM states mid-stream changes what follows, and only that."""
    stream = StreamingSeparator(separator, block_size=1024)
    latency = stream.latency_samples
    half = 16 * 1024
    first = torch.cat([stream.process(mixture[:, i : i + 1024]) for i in range(0, half, 1024)], -1)
    assert _rel_err(first[..., latency:], offline[..., : half - latency]) < 1e-5
    stream.frames.reset()  # the recurrent memory only; buffers stay
    rest = stream.flush(mixture[:, half:])
    assert _rel_err(rest[..., latency:], offline[..., half:]) > 1e-3


def test_flush_resets_for_a_new_stream(separator: Separator, mixture: torch.Tensor) -> None:
    stream = StreamingSeparator(separator)
    once = _stream(stream, mixture, 2000)
    again = _stream(stream, mixture, 2000)
    torch.testing.assert_close(again, once, rtol=0, atol=0)


def test_short_and_empty_streams(separator: Separator) -> None:
    stream = StreamingSeparator(separator)
    assert stream.flush().shape == (4, 2, 0)
    stream.process(torch.zeros(2, N_FFT // 2))
    with pytest.raises(ValueError, match="too short"):
        stream.flush()
    # the smallest stream the offline STFT accepts
    x = _mixture()[:, : N_FFT // 2 + 1]
    with torch.no_grad():
        ref = separator(x[None])[0]
    out = stream.flush(x)
    assert _rel_err(out[..., stream.latency_samples :], ref) < 1e-5


def test_rejects_non_causal_models() -> None:
    torch.manual_seed(0)
    with pytest.raises(StemkitError, match="bidirectional"):
        StreamingSeparator(build("umx", hidden_size=8, n_fft=N_FFT, n_hop=N_HOP))  # type: ignore[arg-type]
    with pytest.raises(StemkitError, match="niter=0"):
        StreamingSeparator(
            build("umx", hidden_size=8, n_fft=N_FFT, n_hop=N_HOP, unidirectional=True, niter=1)  # type: ignore[arg-type]
        )
    with pytest.raises(StemkitError, match="Separator"):
        StreamingSeparator(build("identity"))  # type: ignore[arg-type]


def test_rejects_bad_blocks(separator: Separator) -> None:
    stream = StreamingSeparator(separator, block_size=256)
    with pytest.raises(ValueError, match="block_size=256"):
        stream.process(torch.zeros(2, 100))
    with pytest.raises(ValueError, match="stereo"):
        stream.process(torch.zeros(1, 256))
    with pytest.raises(ValueError, match="channels, block_len"):
        stream.process(torch.zeros(256))
    with pytest.raises(ValueError, match="block_size"):
        StreamingSeparator(separator, block_size=0)
