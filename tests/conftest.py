"""Shared fixtures. Audio is generated here at test time, seeded; none is committed."""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
import torch

from weights_server import WeightsServer, serve

SOURCES = ("vocals", "drums", "bass", "other")
RATE = 44100


def toy_stems(seconds: float, seed: int, rate: int = RATE, channels: int = 2) -> np.ndarray:
    """Four distinguishable stereo stems ``(4, channels, time)``, float32, peaks well below 1.

    vocals: a gliding sine with gaps; drums: decaying noise bursts; bass: a low sine;
    other: a chord of three sines. Each gets a faint broadband floor so that no frame is
    perfectly silent (metrics on silent or band-limited signals are ill-conditioned).
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = rng.uniform(200, 400)
    vocals = 0.2 * np.sin(2 * np.pi * (f0 * t + 20 * t**2))
    vocals *= (np.sin(2 * np.pi * 0.5 * t) > -0.5).astype(np.float64)
    drums = np.zeros(n)
    period = int(rate * 60 / rng.uniform(90, 130) / 2)
    env = np.exp(-np.arange(period) / (0.03 * rate))
    for start in range(0, n, period):
        stop = min(start + period, n)
        drums[start:stop] += 0.3 * rng.standard_normal(stop - start) * env[: stop - start]
    bass = 0.25 * np.sin(2 * np.pi * rng.uniform(40, 80) * t)
    other = sum(0.08 * np.sin(2 * np.pi * f * t) for f in rng.uniform(300, 1200, size=3))
    stems = np.stack([vocals, drums, bass, other])
    stems = stems + 1e-3 * rng.standard_normal(stems.shape)
    pan = rng.uniform(0.6, 1.0, size=(4, channels))
    return (stems[:, None, :] * pan[:, :, None]).astype(np.float32)


def write_hq_track(folder: Path, stems: np.ndarray, rate: int = RATE) -> None:
    """Write one MUSDB18-HQ track folder: the four stems and their exact float sum."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, stem in zip(SOURCES, stems, strict=True):
        sf.write(folder / f"{name}.wav", stem.T, rate, subtype="FLOAT")
    sf.write(folder / "mixture.wav", stems.sum(axis=0).T, rate, subtype="FLOAT")


@pytest.fixture(scope="session")
def hq_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MUSDB18-HQ tree: 3 train and 2 test tracks of 4 s of toy stems."""
    root = tmp_path_factory.mktemp("musdb18hq")
    for i in range(3):
        write_hq_track(root / "train" / f"Toy - Train {i}", toy_stems(4.0, seed=i))
    for i in range(2):
        write_hq_track(root / "test" / f"Toy - Test {i}", toy_stems(4.0, seed=100 + i))
    return root


@pytest.fixture
def make_stems() -> Callable[..., np.ndarray]:
    """The :func:`toy_stems` generator, for tests that need their own signals."""
    return toy_stems


def import_openunmix(name: str = "openunmix.model") -> ModuleType:
    """Import an ``openunmix`` module (the parity reference) with an empty stand-in for
    ``torchaudio``, which it imports at module level but never uses on the separation path."""
    stub = "torchaudio" not in sys.modules
    if stub:
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # pragma: no cover - reference package not installed
        pytest.skip(f"openunmix not importable: {exc}")
    finally:
        if stub:
            del sys.modules["torchaudio"]


@pytest.fixture(scope="session")
def upstream() -> ModuleType:
    """``openunmix.model``."""
    return import_openunmix("openunmix.model")


@torch.no_grad()
def randomize_umx_core(core: torch.nn.Module, gen: torch.Generator) -> None:
    """Give an Open-Unmix core non-trivial input statistics, output scales and batch-norm state,
    so that every layer matters in a comparison."""
    for name, param in core.named_parameters():
        if name in {"input_scale", "output_scale"} or name.endswith("bn1.weight"):
            param.copy_(0.5 + torch.rand(param.shape, generator=gen))
        elif name in {"input_mean", "output_mean"} or name.startswith("bn"):
            param.copy_(0.3 * torch.randn(param.shape, generator=gen))
    for name, buf in core.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(0.2 * torch.randn(buf.shape, generator=gen))
        elif name.endswith("running_var"):
            buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))


@pytest.fixture
def randomize_umx() -> Callable[[torch.nn.Module, torch.Generator], None]:
    """:func:`randomize_umx_core`."""
    return randomize_umx_core


def whole_signal_separation(model: torch.nn.Module, mixture: torch.Tensor) -> torch.Tensor:
    """A ``Separator``'s stems computed on the whole signal at once: the reference for the
    block-wise paths. Full STFT, every core on all frames (``forward_magnitudes``, bridging
    included), the Wiener filter as configured, iSTFT."""
    from stemkit.dsp.stft import magnitude
    from stemkit.dsp.wiener import wiener

    mix_stft = model.mixture_spectrogram(mixture)
    estimates = model.forward_magnitudes(magnitude(mix_stft, mono=model.audio_channels == 1))
    stems_stft = wiener(
        estimates,
        mix_stft,
        iterations=model.niter,
        softmask=model.softmask,
        residual=model.residual,
        win_len=model.wiener_win_len,
    )
    return model.istft(stems_stft, length=mixture.shape[-1])


@pytest.fixture(autouse=True, scope="session")
def no_network_weights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never download weights, nor touch the user's cache: catalogue models are fetched
    only where a test serves them itself (tests/integration/test_fetch_weights.py)."""
    saved = {key: os.environ.get(key) for key in ("STEMKIT_OFFLINE", "STEMKIT_CACHE")}
    os.environ["STEMKIT_OFFLINE"] = "1"
    os.environ["STEMKIT_CACHE"] = str(tmp_path_factory.mktemp("stemkit-cache"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def server() -> Iterator[WeightsServer]:
    """A local server on 127.0.0.1 for fixture weights files (see :func:`weights_server.serve`)."""
    with serve() as state:
        yield state
