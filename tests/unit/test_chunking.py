"""Chunked inference: exactness on the identity model, cross-fades, shifts, batching, errors."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor, nn

from stemkit import models
from stemkit.inference import separate

RATE = 1000  # a low nominal rate keeps segments of a fraction of a second short


class Toy(nn.Module):
    """A small deterministic model with the attributes separate() reads."""

    def __init__(self, fn: object, nb_sources: int = 2, channels: int = 2) -> None:
        super().__init__()
        self.fn = fn
        self.sources = tuple(f"s{i}" for i in range(nb_sources))
        self.sample_rate = RATE
        self.audio_channels = channels
        self.batch_sizes: list[int] = []

    def forward(self, mixture: Tensor) -> Tensor:
        self.batch_sizes.append(mixture.shape[0])
        return self.fn(mixture)  # type: ignore[operator]


class TinyConv(nn.Module):
    """A non-causal convolutional separator (kernel 9, zero padding), seeded weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(2, 4, kernel_size=9, padding=4)
        self.sources = ("a", "b")
        self.sample_rate = RATE
        self.audio_channels = 2

    def forward(self, mixture: Tensor) -> Tensor:
        out = torch.tanh(self.conv(mixture))
        return out.view(mixture.shape[0], 2, 2, -1)


def identity(nb_sources: int = 2, channels: int = 2) -> nn.Module:
    names = [f"s{i}" for i in range(nb_sources)]
    return models.build("identity", sources=names, sample_rate=RATE, audio_channels=channels)


LENGTHS = (1, 7, 499, 1000, 2345)
SEGMENTS = (None, 0.002, 0.1, 0.333, 5.0)
OVERLAPS = (0.0, 0.1, 0.25, 0.5)
RUNS = ((1, 0), (3, 0), (1, 2), (4, 3))  # (batch_size, shifts)


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("segment", SEGMENTS)
def test_identity_is_bit_exact_through_any_setting(length: int, segment: float | None) -> None:
    model = identity()
    mixture = torch.randn(2, length, generator=torch.Generator().manual_seed(length))
    for overlap, (batch_size, shifts) in itertools.product(OVERLAPS, RUNS):
        stems = separate(
            model,
            mixture,
            segment=segment,
            overlap=overlap,
            batch_size=batch_size,
            shifts=shifts,
            generator=torch.Generator().manual_seed(1),
        )
        setting = (overlap, batch_size, shifts)
        assert stems.shape == (2, 2, length), setting
        assert torch.equal(stems[0], mixture) and torch.equal(stems[1], mixture), setting


def test_identity_mono_with_many_sources() -> None:
    mixture = torch.randn(1, 1234)
    stems = separate(identity(4, channels=1), mixture, segment=0.1, overlap=0.3, batch_size=2)
    assert stems.shape == (4, 1, 1234)
    assert all(torch.equal(stem, mixture) for stem in stems)


@pytest.mark.parametrize("segment", [2.345, 3.0, 10.0])
def test_segment_covering_the_signal_matches_whole_input(segment: float) -> None:
    model = TinyConv().eval()
    mixture = torch.randn(2, 2345)
    whole = separate(model, mixture)
    with torch.no_grad():
        direct = model(mixture[None])[0]
    torch.testing.assert_close(whole, direct, rtol=0, atol=0)
    torch.testing.assert_close(separate(model, mixture, segment=segment), whole, rtol=0, atol=1e-6)


def test_chunked_pointwise_model_equals_unchunked() -> None:
    model = Toy(lambda x: torch.stack([0.5 * x, x - x**3], dim=1))
    mixture = torch.randn(2, 3001)
    whole = separate(model, mixture)
    for segment, overlap, batch_size in [(0.1, 0.25, 1), (0.037, 0.5, 5), (0.5, 0.0, 2)]:
        chunked = separate(model, mixture, segment=segment, overlap=overlap, batch_size=batch_size)
        torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


def test_cross_fade_is_linear_between_neighbours() -> None:
    # Each chunk predicts its own mean, so every overlap must ramp from one mean to the next.
    model = Toy(lambda x: x.mean(dim=-1, keepdim=True).expand_as(x)[:, None], nb_sources=1)
    mixture = torch.arange(250, dtype=torch.float32).expand(2, -1)
    stems = separate(model, mixture, segment=0.1, overlap=0.2)  # 100 samples, overlap 20, hop 80
    means = [float(mixture[0, i * 80 : i * 80 + 100].mean()) for i in range(3)]
    # the last chunk ends with the signal: it reads [150, 250), and is used from 160 on
    means[2] = float(mixture[0, 150:].mean())
    out = stems[0, 0]
    assert torch.all(out[:80] == means[0])
    weights = torch.arange(1, 21) / 21
    expected = torch.lerp(torch.tensor(means[0]), torch.tensor(means[1]), weights)
    torch.testing.assert_close(out[80:100], expected)
    assert torch.all(out[100:160] == means[1])
    expected = torch.lerp(torch.tensor(means[1]), torch.tensor(means[2]), weights)
    torch.testing.assert_close(out[160:180], expected)
    assert torch.all(out[180:] == means[2])


def test_shifts_average_delayed_predictions() -> None:
    # A model that is not shift-invariant: its gain depends on the position in the chunk.
    def ramp_gain(x: Tensor) -> Tensor:
        gain = torch.linspace(0.5, 1.5, x.shape[-1])
        return (x * gain)[:, None]

    model = Toy(ramp_gain, nb_sources=1)
    mixture = torch.randn(2, 1500)
    stems = separate(
        model, mixture, segment=0.2, shifts=3, generator=torch.Generator().manual_seed(7)
    )
    delays = torch.randint(0, 500, (3,), generator=torch.Generator().manual_seed(7)).tolist()
    assert len(set(delays)) > 1
    expected = torch.stack(
        [
            separate(model, nn.functional.pad(mixture, (d, 0)), segment=0.2)[..., d : d + 1500]
            for d in delays
        ]
    ).mean(dim=0)
    torch.testing.assert_close(stems, expected)
    again = separate(
        model, mixture, segment=0.2, shifts=3, generator=torch.Generator().manual_seed(7)
    )
    assert torch.equal(stems, again)


@pytest.mark.parametrize(
    ("length", "segment", "overlap", "batch_size"),
    [(1000, 0.3, 0.25, 1), (1001, 0.1, 0.0, 3), (2345, 0.333, 0.5, 2), (90, 0.1, 0.25, 1)],
)
def test_every_chunk_is_song_and_never_padding(
    length: int, segment: float, overlap: float, batch_size: int
) -> None:
    # A bidirectional model hears the whole chunk: zeros after the song's end would change
    # its output over the last seconds. Every chunk must be a stretch of the song itself.
    heard: list[Tensor] = []

    def spy(x: Tensor) -> Tensor:
        heard.extend(x)
        return x[:, None]

    mixture = 1.0 + torch.rand(2, length, generator=torch.Generator().manual_seed(length))
    stems = separate(Toy(spy, 1), mixture, segment=segment, overlap=overlap, batch_size=batch_size)
    assert torch.equal(stems[0], mixture)
    segment_length = min(round(segment * RATE), length)
    assert all(chunk.shape[-1] == segment_length for chunk in heard)
    for chunk in heard:
        starts = [
            s
            for s in range(length - segment_length + 1)
            if torch.equal(mixture[:, s : s + segment_length], chunk)
        ]
        assert starts, "a chunk is not a stretch of the song"
    assert torch.equal(heard[-1], mixture[:, -segment_length:])


def test_chunks_are_batched() -> None:
    model = Toy(lambda x: x[:, None])
    separate(model, torch.randn(2, 1000), segment=0.1, overlap=0.0, batch_size=4)
    assert model.batch_sizes == [4, 4, 2]


def test_output_is_an_ordinary_cpu_tensor_and_mode_is_restored() -> None:
    model = TinyConv().train()
    stems = separate(model, torch.randn(2, 500), segment=0.1, progress=True)
    assert model.training
    assert stems.device.type == "cpu" and not stems.is_inference()
    stems += 1  # in-place edits must be allowed on the result


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overlap": 0.6}, "between 0 and 0.5"),
        ({"overlap": -0.1}, "between 0 and 0.5"),
        ({"segment": 0.0}, "positive number of seconds"),
        ({"segment": float("nan")}, "positive number of seconds"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"shifts": -1}, "shifts must be a non-negative integer"),
    ],
)
def test_bad_settings_say_why(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        separate(identity(), torch.zeros(2, 100), **kwargs)  # type: ignore[arg-type]


def test_bad_inputs_and_outputs() -> None:
    with pytest.raises(ValueError, match=r"\(channels, time\)"):
        separate(identity(), torch.zeros(1, 2, 100))
    with pytest.raises(ValueError, match="takes 2 channel"):
        separate(identity(), torch.zeros(3, 100))
    bad = Toy(lambda x: x)  # forgets the sources dimension
    with pytest.raises(ValueError, match="must map"):
        separate(bad, torch.zeros(2, 100), segment=0.05)
