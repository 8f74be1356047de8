"""Whole-song separation in frame blocks (``Separator.streams``): exact and memory-bounded.

In eval mode without autograd, ``Separator.forward`` computes the mixture STFT in frame blocks
(``STFT.frames``), keeps only the per-frame encoder/LSTM features of the whole song, and
decodes, filters and inverts one Wiener block at a time. It must give the stems of the
whole-signal computation (every stage on the full spectrogram, as with autograd) within float
rounding, for Open-Unmix and X-UMX.
"""

from __future__ import annotations

import pytest
import torch

from conftest import whole_signal_separation
from stemkit.dsp.stft import STFT
from stemkit.dsp.wiener import wiener
from stemkit.models import build
from stemkit.models.spectral import Separator
from stemkit.models.umx import OpenUnmix

RATE = 8000


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


def _tiny(name: str = "umx", **options: object) -> Separator:
    torch.manual_seed(0)
    model = build(
        name,
        sources=("vocals", "drums", "bass"),
        hidden_size=8,
        nb_layers=2,
        sample_rate=RATE,
        n_fft=256,
        n_hop=64,
        bandwidth=3000,
        **options,
    )
    assert isinstance(model, Separator)
    model.eval()
    # non-trivial statistics and BatchNorm state, so that every per-frame layer matters
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_(0.0, 0.3, generator=gen)
                module.running_var.uniform_(0.5, 2.0, generator=gen)
            if isinstance(module, OpenUnmix):
                module.input_mean.normal_(0.0, 0.5, generator=gen)
                module.output_mean.uniform_(0.5, 1.5, generator=gen)
    return model


@pytest.mark.parametrize(
    ("n_fft", "n_hop", "length", "block", "center"),
    [
        (256, 64, 5001, 7, True),
        (255, 100, 3000, 1, True),
        (256, 64, 129, 300, True),
        (64, 32, 33, 2, True),
        (256, 64, 5001, 13, False),
    ],
)
def test_stft_frames_equal_the_whole_transform(
    n_fft: int, n_hop: int, length: int, block: int, center: bool
) -> None:
    stft = STFT(n_fft, n_hop, center=center)
    waveform = torch.randn(2, 2, length, generator=torch.Generator().manual_seed(length))
    whole = stft(waveform)
    nb_frames = stft.frame_count(length)
    assert whole.shape[-1] == nb_frames
    pieces = [
        stft.frames(waveform, start, min(start + block, nb_frames))
        for start in range(0, nb_frames, block)
    ]
    # the same samples through the same FFT: identical, reflect padding at both edges included
    assert torch.equal(torch.cat(pieces, dim=-1), whole)


def test_stft_frames_reject_bad_ranges() -> None:
    stft = STFT(64, 16, center=True)
    waveform = torch.randn(2, 300)
    with pytest.raises(ValueError, match="outside"):
        stft.frames(waveform, 0, stft.frame_count(300) + 1)
    with pytest.raises(ValueError, match="outside"):
        stft.frames(waveform, 5, 5)
    with pytest.raises(ValueError, match="too short"):
        stft.frames(waveform[:, :20], 0, 1)


@pytest.mark.parametrize(
    ("name", "length", "win_len", "frame_block", "niter", "residual", "softmask", "channels"),
    [
        ("umx", RATE + 1, 7, 5, 1, False, False, 2),
        ("umx", 2 * RATE + 37, 40, 256, 1, True, False, 2),
        ("umx", 3 * RATE - 5, 13, 3, 0, False, False, 2),
        ("umx", RATE + 129, None, 9, 0, True, True, 2),
        ("umx", RATE // 2 + 3, None, 256, 2, True, True, 2),
        ("umx", RATE + 77, 11, 4, 1, True, False, 1),
        # 1-frame EM blocks (rank-one spatial covariances) are ill-conditioned; decoding one
        # frame at a time rounds its matrix products differently from the whole signal, as
        # another CPU's kernels do: the double-precision EM statistics keep both within 1e-5
        ("umx", 2 * RATE + 1, 1, 256, 1, True, False, 2),
        ("umx", 2 * RATE + 1, 1, 1, 1, True, False, 2),
        ("xumx", RATE + 1, 7, 5, 1, True, False, 2),
        ("xumx", 2 * RATE - 3, None, 17, 0, False, True, 2),
        ("xumx", RATE + 77, 11, 256, 1, False, True, 1),
    ],
)
def test_frame_block_path_equalswhole_signal_separation(
    name: str,
    length: int,
    win_len: int | None,
    frame_block: int,
    niter: int,
    residual: bool,
    softmask: bool,
    channels: int,
) -> None:
    model = _tiny(
        name,
        niter=niter,
        residual=residual,
        softmask=softmask,
        wiener_win_len=win_len,
        nb_channels=channels,
    )
    model.frame_block = frame_block
    gen = torch.Generator().manual_seed(length)
    # two items of very different loudness (the EM rescales per item and block); a mono
    # model takes any number of input channels and filters each of them
    mixture = torch.randn(2, 2, length, generator=gen) * torch.tensor([0.3, 30.0])[:, None, None]
    with torch.no_grad():
        assert model.streams(mixture)
        ours = model(mixture)
    ref = whole_signal_separation(model, mixture)  # autograd on: the whole-signal path
    assert ours.shape == ref.shape == (2, len(model.sources), 2, length)
    for item in range(2):
        assert _rel_err(ours[item], ref[item].detach()) < 1e-5


def test_xumx_without_bridging_streams_like_umx() -> None:
    umx = _tiny("umx", niter=1, wiener_win_len=20)
    xumx = _tiny("xumx", niter=1, wiener_win_len=20, bridging=False)
    xumx.load_state_dict(umx.state_dict())
    mixture = torch.randn(1, 2, RATE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert xumx.streams(mixture)
        assert _rel_err(xumx(mixture), umx(mixture)) < 1e-6


def test_stages_keep_only_per_frame_features() -> None:
    model = _tiny("umx", niter=1, wiener_win_len=50)
    mixture = torch.randn(1, 2, 4 * RATE, generator=torch.Generator().manual_seed(4))
    nb_frames = model.stft.frame_count(mixture.shape[-1])
    with torch.no_grad():
        encoded = model.encode_frames(mixture)
        assert [tuple(e.shape) for e in encoded] == [(nb_frames, 1, 8)] * 3
        context = model.run_sequence(encoded)
        assert encoded == []  # consumed: each became its core's decoder hidden layer
        assert [tuple(c.shape) for c in context] == [(nb_frames, 1, 8)] * 3
        stems = model.decode_and_invert(mixture, context)
        assert _rel_err(stems, model(mixture)) < 1e-6


def test_falls_back_to_the_whole_signal_path() -> None:
    model = _tiny("umx", niter=1)
    mixture = torch.randn(1, 2, RATE)
    assert not model.streams(mixture)  # autograd on, parameters trainable
    with torch.no_grad():
        assert model.streams(mixture)
        model.train()
        assert not model.streams(mixture)  # BatchNorm in training mode is not per frame
        model.eval()

        class Other(OpenUnmix):
            encode_lstm_decode = False

        model.target_models["bass"] = Other(nb_bins=129, hidden_size=8, nb_layers=1, max_bin=60)
        assert not model.streams(mixture)
        assert model(mixture).shape == (1, 3, 2, RATE)


def test_too_short_input_is_rejected_clearly() -> None:
    model = _tiny("umx", niter=1)
    with torch.no_grad(), pytest.raises(ValueError, match="too short"):
        model(torch.randn(1, 2, 50))


@pytest.mark.parametrize(
    ("filter_bins", "invert_frames", "niter", "softmask", "residual", "channels"),
    [
        (50, 7, 1, False, True, 2),
        (1, 64, 2, True, False, 2),
        (64, 3, 1, False, True, 1),
        (128, 1000, 1, True, True, 2),
    ],
)
def test_filter_in_bin_chunks_equalswhole_signal_separation(
    monkeypatch: pytest.MonkeyPatch,
    filter_bins: int,
    invert_frames: int,
    niter: int,
    softmask: bool,
    residual: bool,
    channels: int,
) -> None:
    # the EM is per frequency bin but the rescaling is per block: chunks must share it
    monkeypatch.setattr("stemkit.models.spectral.frames._FILTER_BINS", filter_bins)
    monkeypatch.setattr("stemkit.models.spectral.frames._INVERT_FRAMES", invert_frames)
    model = _tiny(
        niter=niter, softmask=softmask, residual=residual, nb_channels=channels, wiener_win_len=23
    )
    gen = torch.Generator().manual_seed(filter_bins)
    mixture = torch.randn(2, 2, 2 * RATE + 11, generator=gen)
    mixture = mixture * torch.tensor([0.3, 30.0])[:, None, None]  # scaled blocks in item 2
    with torch.no_grad():
        streamed = model(mixture)
        stems_stft = model._filter_block(
            model.forward_magnitudes(model.magnitudes(mixture))[..., :23],
            model.mixture_spectrogram(mixture)[..., :23],
        )
    ref = whole_signal_separation(model, mixture).detach()
    for item in range(2):
        assert _rel_err(streamed[item], ref[item]) < 1e-5
    ref_stft = wiener(
        model.forward_magnitudes(model.magnitudes(mixture)).detach()[..., :23],
        model.mixture_spectrogram(mixture)[..., :23],
        iterations=niter,
        softmask=softmask,
        residual=residual,
        win_len=None,
    )
    assert _rel_err(stems_stft, ref_stft) < 1e-5
