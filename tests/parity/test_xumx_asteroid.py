"""Parity with asteroid's X-UMX (``asteroid.models.x_umx``), as ``test_openunmix_parity`` does for
Open-Unmix: asteroid's network with random weights, its ``state_dict`` converted by
:func:`convert_asteroid_state_dict` and loaded strictly into our ``xumx``, the same inputs.

What is compared, in eval mode, within 1e-4 of the reference's peak:

* the mixture magnitudes and the masked magnitude estimates before any filter (asteroid's
  ``masked_mixture``, ``(sources, nb_frames, batch, nb_channels, nb_bins)``, against our
  ``forward_magnitudes``, ``(batch, sources, nb_channels, nb_bins, nb_frames)``);
* the time signals asteroid returns with ``return_time_signals=True``: each magnitude estimate
  with the mixture phase, inverted. That is our Separator with ``niter=0`` and
  ``softmask=False`` (the ``xumx`` defaults), through both the frame-block path that
  ``forward`` takes and the whole-signal path.

Differences by design, handled here rather than "fixed":

* asteroid 0.7.0's ``XUMX`` raises in ``__init__`` ("broken in torch 2.0"); the network is
  kept as ``BrokenXUMX``, which is what we build. The only torch-2 incompatibility on its
  forward is ``torch.istft`` on a real ``(..., 2)`` tensor, which torch < 2 accepted as a
  complex one; the tests give it that old reading for the duration of the call.
* asteroid inverts without ``length``, so its signals stop at ``n_hop * (time // n_hop)``
  samples; ours are cropped to the input length. The common samples are compared.
* asteroid's mono downmix averages the channels' *phases*; we take the phase of the mono input
  as is. On one-channel input (what a mono model is given) the two coincide, so mono runs on
  one channel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from stemkit.artifacts.asteroid import convert_asteroid_state_dict
from stemkit.dsp.stft import bandwidth_to_max_bin
from stemkit.models import build
from stemkit.models.xumx import XUMX

x_umx = pytest.importorskip("asteroid.models.x_umx")

pytestmark = [
    # asteroid's own STFT and its single-layer LSTM (dropout=0.4 always) warn under torch 2
    pytest.mark.filterwarnings("ignore:stft with return_complex=False:UserWarning"),
    pytest.mark.filterwarnings("ignore:dropout option adds dropout:UserWarning"),
]

# the asteroid recipe's output order (its conf.yml), not MUSDB_SOURCES
SOURCES = ("bass", "drums", "vocals", "other")
RATE = 16000
N_FFT = 512
N_HOP = 128
BANDWIDTH = 5000.0
HIDDEN = 32


def _rel_err(ours: Tensor, ref: Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


@torch.no_grad()
def _randomize(model: nn.Module, seed: int) -> None:
    """Non-trivial standardisation, output scaling and BatchNorm state, so every term counts."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if "window" in name:
            continue
        if "_scale_" in name or name.endswith(".1.weight") or name.endswith(".4.weight"):
            param.copy_(0.5 + torch.rand(param.shape, generator=gen))
        elif "_mean_" in name or (name.endswith(".bias") and "lstm" not in name):
            param.copy_(0.3 * torch.randn(param.shape, generator=gen))
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(0.2 * torch.randn(buf.shape, generator=gen))
        elif name.endswith("running_var"):
            buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))


def _pair(
    nb_channels: int = 2,
    unidirectional: bool = False,
    nb_layers: int = 2,
    our_order: tuple[str, ...] = SOURCES,
) -> tuple[nn.Module, XUMX]:
    """asteroid's X-UMX with random weights, and ours loaded from its converted state."""
    torch.manual_seed(0)
    theirs = x_umx.BrokenXUMX(
        list(SOURCES),
        window_length=N_FFT,
        in_chan=N_FFT,
        n_hop=N_HOP,
        hidden_size=HIDDEN,
        nb_channels=nb_channels,
        sample_rate=RATE,
        nb_layers=nb_layers,
        max_bin=bandwidth_to_max_bin(RATE, N_FFT, BANDWIDTH),
        bidirectional=not unidirectional,
        return_time_signals=True,
    )
    _randomize(theirs, seed=1)
    theirs.eval()
    ours = build(
        "xumx",
        sources=list(our_order),
        hidden_size=HIDDEN,
        nb_layers=nb_layers,
        unidirectional=unidirectional,
        sample_rate=RATE,
        nb_channels=nb_channels,
        n_fft=N_FFT,
        n_hop=N_HOP,
        bandwidth=BANDWIDTH,
    )
    assert isinstance(ours, XUMX) and ours.niter == 0 and not ours.softmask
    ours.load_state_dict(convert_asteroid_state_dict(theirs.state_dict()), strict=True)
    return theirs, ours.eval()


@contextmanager
def _torch1_istft() -> Iterator[None]:
    """``torch.istft`` reading a real ``(..., 2)`` input as complex, as torch < 2 did."""
    original: Callable[..., Tensor] = torch.istft

    def istft(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if not x.is_complex() and x.shape[-1] == 2:
            x = torch.view_as_complex(x.contiguous())
        return original(x, *args, **kwargs)

    torch.istft = istft  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.istft = original  # type: ignore[assignment]


def _asteroid(theirs: nn.Module, mixture: Tensor) -> tuple[Tensor, Tensor]:
    """asteroid's masked magnitudes in our layout and its time signals, batch first."""
    with torch.no_grad(), _torch1_istft():
        masked, signals = theirs(mixture)
    return masked.permute(2, 0, 3, 4, 1), signals.transpose(0, 1)


def _mixture(nb_channels: int, length: int, seed: int) -> Tensor:
    """Two items of very different loudness (the masks are not scale invariant)."""
    gen = torch.Generator().manual_seed(seed)
    gains = torch.tensor([0.3, 4.0])[:, None, None]
    return torch.randn(2, nb_channels, length, generator=gen) * gains


CONFIGS = [
    pytest.param(2, False, 3, id="stereo-blstm3"),
    pytest.param(2, True, 2, id="stereo-lstm2"),
    pytest.param(1, False, 1, id="mono-blstm1"),
]


@pytest.mark.parametrize(("nb_channels", "unidirectional", "nb_layers"), CONFIGS)
@pytest.mark.parametrize("length", [8001, 12345])
def test_magnitude_estimates_match_asteroid(
    nb_channels: int, unidirectional: bool, nb_layers: int, length: int
) -> None:
    theirs, ours = _pair(nb_channels, unidirectional, nb_layers)
    mixture = _mixture(nb_channels, length, seed=length)
    ref, _ = _asteroid(theirs, mixture)
    with torch.no_grad():
        their_mag = theirs.encoder(mixture)[0].permute(1, 2, 3, 0)
        mix_mag = ours.magnitudes(mixture)
        estimates = ours.forward_magnitudes(mix_mag)
    assert mix_mag.shape == their_mag.shape == (2, nb_channels, N_FFT // 2 + 1, 1 + length // N_HOP)
    assert _rel_err(mix_mag, their_mag) < 1e-5
    assert estimates.shape == ref.shape == (2, len(SOURCES), *mix_mag.shape[1:])
    # a non-degenerate comparison: the ReLU masks are neither all off nor all equal
    assert (ref > 0).float().mean() > 0.2
    for item in range(2):
        assert _rel_err(estimates[item], ref[item]) < 1e-4
    # the comparison discriminates: independent branches (no bridges) are far off (~0.4)
    ours.bridging = False
    with torch.no_grad():
        assert _rel_err(ours.forward_magnitudes(mix_mag), ref) > 0.05


@pytest.mark.parametrize(("nb_channels", "unidirectional", "nb_layers"), CONFIGS)
def test_time_signals_match_asteroid(
    nb_channels: int, unidirectional: bool, nb_layers: int
) -> None:
    theirs, ours = _pair(nb_channels, unidirectional, nb_layers)
    length = 9999
    mixture = _mixture(nb_channels, length, seed=5)
    _, ref = _asteroid(theirs, mixture)
    common = N_HOP * (length // N_HOP)
    assert ref.shape == (2, len(SOURCES), nb_channels, common)
    # several frame blocks, so the block seams of the frame-block path are inside the signal
    ours.frame_block = 16
    with torch.no_grad():
        assert ours.streams(mixture)
        streamed = ours(mixture)
        mix_stft = ours.mixture_spectrogram(mixture)
        estimates = ours.forward_magnitudes(ours.magnitudes(mixture))
        whole = ours.filter_and_invert(estimates, mix_stft, length=length)
    assert streamed.shape == whole.shape == (2, len(SOURCES), nb_channels, length)
    for item in range(2):
        assert _rel_err(streamed[item, ..., :common], ref[item]) < 1e-4
        assert _rel_err(whole[item, ..., :common], ref[item]) < 1e-4


def test_source_order_is_free_after_conversion() -> None:
    """The keys carry the source names and the bridges average over all branches, so ours
    built in another order gives the same estimate per source, in its own order."""
    theirs, _ = _pair()
    _, ours = _pair(our_order=("vocals", "drums", "bass", "other"))
    mixture = _mixture(2, 7001, seed=9)
    ref, _ = _asteroid(theirs, mixture)
    with torch.no_grad():
        estimates = ours.forward_magnitudes(ours.magnitudes(mixture))
    for index, name in enumerate(ours.sources):
        assert _rel_err(estimates[:, index], ref[:, SOURCES.index(name)]) < 1e-4


def test_converted_state_is_asteroid_tensors() -> None:
    theirs, ours = _pair()
    state = theirs.state_dict()
    converted = convert_asteroid_state_dict(state)
    # everything but the (shared, fixed) STFT window is carried, once, as the same values
    assert {key for key in state if "window" in key} == {"encoder.0.window", "decoder.window"}
    assert set(converted) == set(ours.state_dict()) and len(converted) == len(state) - 2
    torch.testing.assert_close(
        ours.target_models["vocals"].input_scale, theirs.mean_scale["input_scale_vocals"]
    )
    torch.testing.assert_close(
        ours.target_models["bass"].bn3.running_var, theirs.layer_dec["bass"].dec[4].running_var
    )
    torch.testing.assert_close(ours.stft.window, theirs.encoder[0].window)
