"""Block-wise Wiener filtering and inverse STFT in ``Separator`` (bounded whole-song memory).

The block-wise path (:meth:`Separator.filter_and_invert`, :class:`stemkit.dsp.stft.OverlapAdd`)
must equal the whole-signal reference, :func:`stemkit.dsp.wiener.wiener` followed by
:class:`stemkit.dsp.stft.ISTFT`, while holding only one block of complex stems at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import whole_signal_separation
from stemkit.dsp.stft import ISTFT, STFT, OverlapAdd
from stemkit.models import build
from stemkit.models.spectral import Separator

RATE = 8000


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


def _tiny_umx(**options: object) -> Separator:
    torch.manual_seed(0)
    model = build(
        "umx",
        sources=("vocals", "drums", "bass"),
        hidden_size=8,
        nb_layers=1,
        sample_rate=RATE,
        n_fft=256,
        n_hop=64,
        bandwidth=3000,
        **options,
    )
    assert isinstance(model, Separator)
    return model.eval()


@pytest.mark.parametrize(
    ("length", "win_len", "niter", "residual", "softmask"),
    [
        (RATE + 1, 7, 1, False, False),
        (2 * RATE + 37, 40, 1, True, False),
        (3 * RATE - 5, 13, 0, False, False),
        (RATE + 129, None, 0, True, True),
        (RATE // 2 + 3, None, 2, True, True),
        (2 * RATE + 1, 1, 1, True, False),
        (5 * RATE + 63, 300, 1, False, True),
    ],
)
def test_blockwise_separation_equals_whole_signalwhole_signal_separation(
    length: int, win_len: int | None, niter: int, residual: bool, softmask: bool
) -> None:
    model = _tiny_umx(niter=niter, residual=residual, softmask=softmask, wiener_win_len=win_len)
    gen = torch.Generator().manual_seed(length)
    # two items of very different loudness: the EM rescaling is per item and block
    mixture = torch.randn(2, 2, length, generator=gen) * torch.tensor([0.3, 30.0])[:, None, None]
    with torch.no_grad():
        ours, ref = model(mixture), whole_signal_separation(model, mixture)
    assert ours.shape == ref.shape == (2, len(model.sources), 2, length)
    for item in range(2):
        assert _rel_err(ours[item], ref[item]) < 1e-5


def test_mono_model_blockwise_equalswhole_signal_separation() -> None:
    model = _tiny_umx(niter=1, residual=True, nb_channels=1, wiener_win_len=11)
    mixture = torch.randn(1, 1, RATE + 77, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert _rel_err(model(mixture), whole_signal_separation(model, mixture)) < 1e-5


@pytest.mark.filterwarnings("ignore:The length of signal is shorter:UserWarning")
@pytest.mark.parametrize(
    ("n_fft", "n_hop", "length", "block"),
    [(256, 64, 5001, 7), (255, 100, 3000, 1), (512, 512 // 3, 4097, 50), (64, 64 // 2, 77, 3)],
)
def test_overlap_add_equals_istft(n_fft: int, n_hop: int, length: int, block: int) -> None:
    gen = torch.Generator().manual_seed(n_fft + block)
    spec = STFT(n_fft, n_hop, center=True)(torch.randn(3, 2, length, generator=gen))
    # an arbitrary (inconsistent) spectrogram too: the iSTFT is then a least-squares fit,
    # still linear in the frames
    spec = spec + torch.randn(spec.shape, dtype=spec.dtype, generator=gen)
    istft = ISTFT(n_fft, n_hop, center=True)
    for out_length in (length, length - n_hop - 3, length + 2 * n_fft):
        out = torch.zeros(3, 2, out_length)
        inverse = OverlapAdd(istft, out, spec.shape[-1])
        for start in range(0, spec.shape[-1], block):
            inverse.add(spec[..., start : start + block])
        assert inverse.finish() is out
        ref = istft(spec, length=out_length)
        assert _rel_err(out, ref) < 1e-5
        # past the last frame both are zero-padded
        assert torch.equal(out[..., ref.shape[-1] :], ref[..., ref.shape[-1] :])


def test_overlap_add_rejects_misuse() -> None:
    istft = ISTFT(64, 16, center=True)
    spec = STFT(64, 16, center=True)(torch.randn(2, 200))
    inverse = OverlapAdd(istft, torch.zeros(2, 200), spec.shape[-1])
    inverse.add(spec[..., :5])
    with pytest.raises(ValueError, match="frames were added"):
        inverse.finish()
    with pytest.raises(ValueError, match="announced"):
        inverse.add(spec)
    with pytest.raises(ValueError, match="bins"):
        inverse.add(spec[..., :-1, :3])
    with pytest.raises(ValueError, match="does not match"):
        inverse.add(spec[:1, :, 5:8])
    with pytest.raises(ValueError, match="contiguous"):
        OverlapAdd(istft, torch.zeros(200, 2).t(), spec.shape[-1])
    # n_hop == n_fft with a Hann window leaves zeros in the window overlap-add
    gapped = ISTFT(64, 64, center=True)
    inverse = OverlapAdd(gapped, torch.zeros(2, 256), 5)
    with pytest.raises(ValueError, match="lower n_hop"):
        inverse.add(STFT(64, 64, center=True)(torch.randn(2, 256)))


def test_preallocated_core_outputs_and_training_path_agree() -> None:
    model = _tiny_umx(niter=1, wiener_win_len=9)
    mixture = torch.randn(1, 2, RATE, generator=torch.Generator().manual_seed(2))
    mag = model.magnitudes(mixture)
    with torch.no_grad():
        preallocated = model.forward_magnitudes(mag)
        separated = model(mixture)
    stacked = torch.stack([core(mag) for core in model.target_models.values()], dim=1)
    # same values (autograd may pick other kernels, hence not bitwise)
    assert _rel_err(preallocated, stacked.detach()) < 1e-6
    # with autograd the whole-signal path runs and gradients reach every core
    model.train()
    for core in model.target_models.values():
        core.eval()  # no dropout, so both paths compute the same function
    with_grad = model(mixture)
    with_grad.square().sum().backward()
    assert _rel_err(with_grad.detach(), separated) < 1e-5
    for core in model.target_models.values():
        grads = [p.grad for p in core.parameters() if p.requires_grad]
        assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)


MEASURE = r"""
import gc, json, sys
from pathlib import Path
import torch
from stemkit.dsp.wiener import wiener
from stemkit.models import build

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)

torch.set_num_threads(1)
torch.manual_seed(0)
model = build(
    "umx", sources=("vocals", "drums", "bass", "other"), hidden_size=8, nb_layers=1,
    sample_rate=8000, n_fft=256, n_hop=64, bandwidth=3000, niter=1, wiener_win_len=100,
).eval()
mixture = 0.25 * torch.randn(1, 2, int(float(sys.argv[2]) * 60 * 8000))
with torch.inference_mode():
    model(mixture[..., :8000])  # warm-up: lazy allocations of torch itself
    mix_stft = model.mixture_spectrogram(mixture)
    estimates = model.forward_magnitudes(model.magnitudes(mixture))
    gc.collect()
    before = status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    if sys.argv[1] == "blockwise":
        stems = model.filter_and_invert(estimates, mix_stft, mixture.shape[-1])
    else:
        stems = model.istft(
            wiener(estimates, mix_stft, iterations=1, win_len=100), length=mixture.shape[-1]
        )
    peak = status("VmHWM")
stems_mib = stems.numel() * stems.element_size() / 2**20
print(json.dumps({"overhead_mib": peak - before - stems_mib, "stems_mib": stems_mib}))
"""


def _clear_refs_works() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return Path("/proc/self/status").exists()


def _overhead_mib(method: str, minutes: float) -> float:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, method, str(minutes)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return float(json.loads(done.stdout.strip().splitlines()[-1])["overhead_mib"])


@pytest.mark.slow  # three fresh interpreters importing torch: ~15-40 s on 2 shared cores
@pytest.mark.skipif(
    not _clear_refs_works(), reason="needs Linux /proc/self/clear_refs to reset the RSS peak"
)
def test_blockwise_filter_memory_does_not_grow_with_song_length() -> None:
    short = _overhead_mib("blockwise", 0.25)
    long = _overhead_mib("blockwise", 1.0)
    whole = _overhead_mib("whole", 1.0)
    found = f"block-wise 0.25 min {short:.1f}, 1 min {long:.1f}; whole-signal 1 min {whole:.1f}"
    # the control: the whole-signal complex stems of 1 minute (4 x 2 x 129 x 7501 complex64,
    # ~60 MiB) and the iSTFT pieces do show up (~120 MiB measured)
    assert whole > 40.0, found
    # block-wise, 4x the audio needs about the same working set beyond the returned stems
    # (give or take the allocator's slack, measured up to ~8 MiB on a loaded machine)
    assert long < short + 16.0, found
    assert long < 0.3 * whole, found
