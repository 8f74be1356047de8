"""The shortcuts of Open-Unmix's frame-block path give the stems of the plain computation.

Frame-block path: the decoder's hidden layer kept per frame, masks in the STFT's layout, and
with the mixture phase the stems as mask × mixture STFT; the inverse STFT's periodic window
envelope; STFT blocks sliced inside the signal. Each is compared with the whole-signal path
(autograd on: encode → LSTM → decode → Wiener → iSTFT on whole spectrograms) or with the
plain transform. Float32 throughout: the bound 1e-5 is ~100 float32 roundings.
"""

from __future__ import annotations

import pytest
import torch

from stemkit.dsp.stft import ISTFT, STFT, OverlapAdd
from stemkit.models import build
from stemkit.models.spectral import Separator

RATE = 16000


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


def _model(**options: object) -> Separator:
    torch.manual_seed(0)
    model = build(
        "umx",
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
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for core in model.target_models.values():
            for name, param in core.named_parameters():
                if name in {"input_scale", "output_scale"}:
                    param.copy_(0.5 + torch.rand(param.shape, generator=gen))
                elif name in {"input_mean", "output_mean"}:
                    param.copy_(0.3 * torch.randn(param.shape, generator=gen))
            for name, buf in core.named_buffers():
                if name.endswith("running_mean"):
                    buf.copy_(0.2 * torch.randn(buf.shape, generator=gen))
                elif name.endswith("running_var"):
                    buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))
    return model.eval()


def _whole_signal(model: Separator, mixture: torch.Tensor) -> torch.Tensor:
    """The plain computation: autograd on, so the frame-block path is not taken."""
    leaf = mixture.clone().requires_grad_(True)
    with torch.enable_grad():
        assert not model.streams(leaf)
        return model(leaf).detach()


@pytest.mark.parametrize(
    ("options", "channels", "masks"),
    [
        ({}, 2, True),
        ({"niter": 1}, 2, False),
        ({"softmask": True}, 2, False),
        ({"residual": True}, 2, False),
        ({"nb_channels": 1}, 1, True),
        ({"nb_channels": 1}, 2, False),  # a mono core sees the channels' mean magnitude
    ],
)
def test_frame_block_path_equals_whole_signal(
    options: dict[str, object], channels: int, masks: bool
) -> None:
    model = _model(**options)
    model.frame_block = 7  # several blocks, one shorter at the end
    gen = torch.Generator().manual_seed(2)
    mixture = torch.randn(1, channels, RATE // 2 + 37, generator=gen)
    mixture[..., 3000:3400] = 0  # silent bins: phase factor 1, stems 0
    with torch.no_grad():
        assert model.streams(mixture)
        assert model._masks_the_mixture(channels) is masks
        ours = model(mixture)
    assert _rel_err(ours, _whole_signal(model, mixture)) < 1e-5


def test_xumx_bridges_do_not_take_the_mask_shortcut() -> None:
    torch.manual_seed(0)
    model = build("xumx", sources=("vocals", "drums"), hidden_size=8, nb_layers=1, n_fft=256,
                  n_hop=64, sample_rate=RATE, bandwidth=3000)  # fmt: skip
    assert isinstance(model, Separator)
    assert not model.eval()._masks_the_mixture(2)


@pytest.mark.parametrize(("n_fft", "n_hop"), [(256, 64), (200, 48), (128, 96)])
def test_overlap_add_envelope_equals_istft(n_fft: int, n_hop: int) -> None:
    stft, istft = STFT(n_fft, n_hop, center=True), ISTFT(n_fft, n_hop, center=True)
    signal = torch.randn(2, 3 * n_fft + 11, generator=torch.Generator().manual_seed(3))
    spec = stft(signal)
    nb_frames = spec.shape[-1]
    out = signal.new_zeros(signal.shape)
    inverse = OverlapAdd(istft, out, nb_frames)
    for piece in spec.split(3, dim=-1):  # blocks shorter than a window: every edge case
        inverse.add(piece)
    ours = inverse.finish()
    assert _rel_err(ours, istft(spec, length=signal.shape[-1])) < 1e-5
    assert _rel_err(ours, signal) < 1e-5


@pytest.mark.parametrize("center", [True, False])
def test_stft_frames_inside_and_at_the_ends(center: bool) -> None:
    stft = STFT(256, 64, center=center)
    signal = torch.randn(2, 2000, generator=torch.Generator().manual_seed(4))
    whole = stft(signal)
    nb_frames = whole.shape[-1]
    for start, stop in [(0, 1), (0, nb_frames), (1, 5), (10, 12), (nb_frames - 3, nb_frames)]:
        assert torch.allclose(stft.frames(signal, start, stop), whole[..., start:stop], atol=1e-5)
