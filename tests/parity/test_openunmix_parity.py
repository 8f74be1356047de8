"""Parity with the reference implementations: ``openunmix`` (cores, Separator, filtering) and
``norbert`` (numpy Wiener/EM), on the same random weights and seeded noise."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
import torch

from conftest import import_openunmix, randomize_umx_core
from stemkit.dsp.wiener import expectation_maximization, wiener
from stemkit.models import build
from stemkit.models.spectral import Separator
from stemkit.models.umx import OpenUnmix

RATE = 44100


def _rel_err(ours: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray) -> float:
    a, b = torch.as_tensor(ours), torch.as_tensor(ref)
    return float((a - b).abs().max() / b.abs().max())


def _randomize(core: OpenUnmix, seed: int) -> None:
    randomize_umx_core(core, torch.Generator().manual_seed(seed))


def _upstream_core(upstream: ModuleType, core: OpenUnmix) -> torch.nn.Module:
    twin = upstream.OpenUnmix(
        nb_bins=core.nb_output_bins,
        nb_channels=core.nb_channels,
        hidden_size=core.hidden_size,
        nb_layers=core.lstm.num_layers,
        unidirectional=core.unidirectional,
        max_bin=core.nb_bins,
    )
    twin.load_state_dict(core.state_dict(), strict=True)
    return twin.eval()


@pytest.mark.parametrize(
    ("nb_bins", "nb_channels", "hidden", "unidirectional", "max_bin"),
    [(2049, 2, 512, False, 1487), (2049, 2, 64, True, 1487), (513, 1, 32, False, None)],
)
def test_core_matches_upstream(
    upstream: ModuleType,
    nb_bins: int,
    nb_channels: int,
    hidden: int,
    unidirectional: bool,
    max_bin: int | None,
) -> None:
    torch.manual_seed(0)
    core = OpenUnmix(nb_bins, nb_channels, hidden, unidirectional=unidirectional, max_bin=max_bin)
    _randomize(core, seed=1)
    core.eval()
    twin = _upstream_core(upstream, core)
    x = torch.rand(2, nb_channels, nb_bins, 12) * 3
    with torch.no_grad():
        ours, ref = core(x), twin(x)
    assert ours.shape == ref.shape
    assert _rel_err(ours, ref) < 1e-5


def _separators(
    upstream: ModuleType, nb_channels: int = 2, **options: object
) -> tuple[Separator, torch.nn.Module]:
    torch.manual_seed(0)
    ours = build(
        "umx",
        sources=["vocals", "drums", "bass", "other"],
        hidden_size=32,
        nb_channels=nb_channels,
        **options,
    )
    assert isinstance(ours, Separator)
    for index, core in enumerate(ours.target_models.values()):
        _randomize(core, seed=10 + index)
    ours.eval()
    theirs = upstream.Separator(
        {name: _upstream_core(upstream, core) for name, core in ours.target_models.items()},
        niter=ours.niter,
        softmask=ours.softmask,
        residual=ours.residual,
        sample_rate=float(ours.sample_rate),
        n_fft=ours.n_fft,
        n_hop=ours.n_hop,
        nb_channels=nb_channels,
        wiener_win_len=ours.wiener_win_len,
    ).eval()
    return ours, theirs


@pytest.mark.parametrize(
    "options",
    [
        {"niter": 0},
        {"niter": 1},
        {"niter": 1, "softmask": True},
        {"niter": 1, "residual": True},
        {"niter": 2, "softmask": True, "residual": True, "wiener_win_len": None},
        {"niter": 0, "softmask": True, "residual": True},
    ],
    ids=str,
)
def test_separator_matches_upstream(upstream: ModuleType, options: dict[str, object]) -> None:
    options = {"wiener_win_len": 40, **options}
    ours, theirs = _separators(upstream, **options)
    gen = torch.Generator().manual_seed(3)
    # two items of different loudness: EM scaling is per item and block
    mixture = (
        torch.randn(2, 2, int(2.5 * RATE), generator=gen) * torch.tensor([0.5, 20.0])[:, None, None]
    )
    with torch.no_grad():
        mine, ref = ours(mixture), theirs(mixture)
    assert mine.shape == ref.shape == (2, len(ours.sources), 2, mixture.shape[-1])
    for item in range(2):
        assert _rel_err(mine[item], ref[item]) < 1e-4


@pytest.mark.parametrize("options", [{"niter": 0}, {"niter": 1, "residual": True}], ids=str)
def test_mono_separator_matches_upstream(upstream: ModuleType, options: dict[str, object]) -> None:
    ours, theirs = _separators(upstream, nb_channels=1, **options)
    mixture = torch.randn(1, 1, 2 * RATE, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert _rel_err(ours(mixture), theirs(mixture)) < 1e-4


def _random_problem(
    nb_frames: int, nb_bins: int, nb_channels: int, nb_sources: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Magnitudes ``(frames, bins, channels, sources)`` and a complex mix, norbert's layout."""
    rng = np.random.default_rng(seed)
    v = rng.gamma(0.5, 2.0, size=(nb_frames, nb_bins, nb_channels, nb_sources))
    shape = (nb_frames, nb_bins, nb_channels)
    x = 30 * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    return v, x


def _ours_on_norbert_layout(v: np.ndarray, x: np.ndarray, **kwargs: object) -> np.ndarray:
    spectrograms = torch.from_numpy(v).permute(3, 2, 1, 0)  # (sources, channels, bins, frames)
    mix = torch.from_numpy(x).permute(2, 1, 0)  # (channels, bins, frames)
    y = wiener(spectrograms, mix, **kwargs)  # type: ignore[arg-type]
    return y.permute(3, 2, 1, 0).numpy()  # (frames, bins, channels, sources)


@pytest.mark.parametrize("softmask", [False, True])
@pytest.mark.parametrize("iterations", [1, 3])
@pytest.mark.parametrize("nb_channels", [1, 2])
def test_wiener_matches_norbert(softmask: bool, iterations: int, nb_channels: int) -> None:
    norbert = pytest.importorskip("norbert")
    v, x = _random_problem(50, 33, nb_channels, 3, seed=iterations)
    eps = 1e-10
    ref = norbert.wiener(v.copy(), x.copy(), iterations, use_softmask=softmask, eps=eps)
    ours = _ours_on_norbert_layout(
        v, x, iterations=iterations, softmask=softmask, eps=eps, win_len=None
    )
    assert _rel_err(ours, ref) < 1e-4
    # blocks of 20 frames are independent problems for norbert
    blocks = [
        norbert.wiener(v[s : s + 20].copy(), x[s : s + 20].copy(), iterations, softmask, eps)
        for s in range(0, 50, 20)
    ]
    ours_blocks = _ours_on_norbert_layout(
        v, x, iterations=iterations, softmask=softmask, eps=eps, win_len=20
    )
    assert _rel_err(ours_blocks, np.concatenate(blocks)) < 1e-4


@pytest.mark.parametrize(
    "options",
    [
        {"iterations": 1},
        {"iterations": 2, "softmask": True},
        {"iterations": 1, "residual": True},
        {"iterations": 0, "residual": True},
    ],
    ids=str,
)
def test_wiener_matches_openunmix_filtering(options: dict[str, object]) -> None:
    filtering = import_openunmix("openunmix.filtering")
    v, x = _random_problem(40, 17, 2, 3, seed=7)
    v = v[..., :1, :]  # a mono spectrogram against a stereo mix: broadcasting as upstream
    ref = filtering.wiener(
        torch.from_numpy(v), torch.view_as_real(torch.from_numpy(x)).clone(), **options
    )
    ref_complex = torch.view_as_complex(ref.movedim(-1, -2).contiguous())
    ours = _ours_on_norbert_layout(v, x, win_len=None, **options)
    assert ours.shape == ref_complex.shape
    assert _rel_err(ours, ref_complex) < 1e-4


def test_wiener_em_preserves_the_mixture() -> None:
    """With a residual-free EM the estimates add up to the mix (up to the √eps floor)."""
    v, x = _random_problem(30, 9, 2, 4, seed=0)
    ours = _ours_on_norbert_layout(v, x, iterations=2, win_len=None)
    assert _rel_err(ours.sum(axis=-1), x) < 1e-4


def test_em_statistics_match_norbert() -> None:
    """PSDs and spatial covariances of the last EM step, against norbert's."""
    norbert = pytest.importorskip("norbert")
    v, x = _random_problem(25, 11, 2, 3, seed=5)
    y0 = v * np.exp(1j * np.angle(x))[..., None]
    eps = 1e-10
    ref_y, ref_v, ref_r = norbert.expectation_maximization(y0.copy(), x.copy(), 2, eps=eps)
    y, v_ours, r_ours = expectation_maximization(
        torch.from_numpy(y0).permute(3, 2, 1, 0), torch.from_numpy(x).permute(2, 1, 0), 2, eps
    )
    assert _rel_err(y.permute(3, 2, 1, 0), ref_y) < 1e-6
    assert _rel_err(v_ours.permute(2, 1, 0), ref_v) < 1e-6  # (frames, bins, sources)
    assert _rel_err(r_ours.permute(1, 2, 3, 0), ref_r) < 1e-6  # (bins, C, C, sources)
    torch.testing.assert_close(r_ours, r_ours.transpose(-1, -2).conj())


def test_wiener_same_with_and_without_autograd() -> None:
    """The in-place (inference) and the differentiable block paths give the same result."""
    v, x = _random_problem(45, 9, 2, 3, seed=2)
    spectrograms = torch.from_numpy(v).permute(3, 2, 1, 0).float()
    mix = torch.from_numpy(x).permute(2, 1, 0).to(torch.complex64)
    with torch.no_grad():
        frozen = wiener(spectrograms, mix, iterations=2, win_len=20)
    spectrograms.requires_grad_(True)
    tracked = wiener(spectrograms, mix, iterations=2, win_len=20)
    tracked.abs().sum().backward()
    assert spectrograms.grad is not None and torch.isfinite(spectrograms.grad).all()
    torch.testing.assert_close(tracked.detach(), frozen)
