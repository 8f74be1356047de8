"""The fast inference paths compute what the plain layer-by-layer definitions compute.

Each speed-up of bench/results/speed.md reorders floating-point sums (batched products instead
of one product per band, another convolution algorithm for channels-last activations), so the
results agree to rounding, not bit for bit. The tolerances are worst-case forward-error bounds:
a dot product of ``K`` float32 terms is off by at most ``γ_K ≈ K·u`` (``u = 2⁻²⁴``) times the
sum of the terms' magnitudes, ``Σ|w||x|``; tanh and ReLU are 1-Lipschitz and do not grow an
error; ``a·σ(b)`` grows it by at most ``1 + |a|/4``. Ten extra units of ``K`` cover the
normalised inputs' own rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stemkit.models import build
from stemkit.models.blocks.bandsplit import BandSplit, band_runs, split_bands
from stemkit.models.blocks.mask import MaskEstimator
from stemkit.models.hourglass import HourglassSeparator

U = 2.0**-24
WIDTHS = (2, 2, 3, 5, 5, 5, 1, 4, 4)  # runs of equal widths and lone bands


def _randomize_norms(module: nn.Module, seed: int) -> None:
    """Non-trivial GroupNorm affine parameters, so that a band taking another's shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.GroupNorm):
                layer.weight.copy_(0.5 + torch.rand(layer.weight.shape, generator=gen))
                layer.bias.copy_(0.3 * torch.randn(layer.bias.shape, generator=gen))


def _spec(channels: int, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(3, channels, sum(WIDTHS), 17, dtype=torch.complex64, generator=gen)


def test_band_runs_group_consecutive_equal_widths() -> None:
    assert band_runs(WIDTHS) == [(0, 2, 2), (2, 1, 3), (3, 3, 5), (6, 1, 1), (7, 2, 4)]
    assert band_runs([]) == []


def _abs_linear(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """``Σ|w||x| + |b|`` of a kernel-1 convolution: the scale of its rounding error."""
    out = torch.nn.functional.conv1d(x.abs(), conv.weight.abs())
    return out + conv.bias.abs()[:, None] if conv.bias is not None else out


def test_batched_band_split_is_the_per_band_definition() -> None:
    for channels in (1, 2):
        split = BandSplit(WIDTHS, n_features=8, in_channels=channels).eval()
        _randomize_norms(split, seed=channels)
        spec = _spec(channels, seed=channels)
        with torch.no_grad():
            ours = split(spec)
            parts = torch.view_as_real(spec).permute(0, 1, 4, 2, 3)
            expected, scale = [], []
            for band, norm, conv in zip(
                split_bands(parts, WIDTHS), split.norms, split.projections, strict=True
            ):
                normed = norm(band.reshape(3, -1, 17))
                expected.append(conv(normed))
                scale.append(_abs_linear(conv, normed))
        assert ours.shape == (3, len(WIDTHS), 8, 17)
        fan_in = 2 * channels * max(WIDTHS)
        bound = (fan_in + 10) * U * torch.stack(scale, dim=1)
        assert ((ours - torch.stack(expected, dim=1)).abs() <= bound).all()


def test_batched_mask_estimator_is_the_per_band_definition() -> None:
    for channels in (1, 2):
        masker = MaskEstimator(WIDTHS, n_features=8, hidden_factor=2, out_channels=channels)
        masker.eval()
        _randomize_norms(masker, seed=10 + channels)
        gen = torch.Generator().manual_seed(channels)
        features = torch.randn(3, len(WIDTHS), 8, 17, generator=gen)
        with torch.no_grad():
            ours = masker(features)
            expected, bounds = [], []
            for index, (width, mlp) in enumerate(zip(WIDTHS, masker.bands, strict=True)):
                h0 = mlp[0](features[:, index])
                h1 = mlp[2](mlp[1](h0))
                h2 = mlp[4](mlp[3](h1))
                out = mlp[5](h2).view(3, channels, 2, 2, width, 17)
                gated = out[:, :, 0] * torch.sigmoid(out[:, :, 1])
                expected.append(torch.complex(gated[:, :, 0], gated[:, :, 1]))
                # three layers' rounding at the output layer's scale, through the GLU
                scale = torch.stack(
                    [_abs_linear(mlp[1], h0).amax(), _abs_linear(mlp[3], h1).amax()]
                ).amax()
                last = _abs_linear(mlp[5], h2).amax()
                fan_in = mlp[3].in_channels
                bounds.append(3 * (fan_in + 10) * U * max(scale, last) * (1 + last / 4))
        reference = torch.cat(expected, dim=-2)
        assert ours.shape == reference.shape == (3, channels, sum(WIDTHS), 17)
        for index, (start, width) in enumerate(
            zip([sum(WIDTHS[:i]) for i in range(len(WIDTHS))], WIDTHS, strict=True)
        ):
            error = (ours - reference)[..., start : start + width, :].abs().amax()
            assert error <= bounds[index]


def test_shnet_inference_runs_channels_last_and_matches_the_default_layout() -> None:
    torch.manual_seed(0)
    model = build("shnet", channels=12, nb_stacks=2, depth=2, stem_channels=(4, 8, 8, 8))
    assert isinstance(model, HourglassSeparator)
    net = model.net.eval()
    gen = torch.Generator().manual_seed(1)
    patches = torch.rand(2, 1, 512, 64, generator=gen)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    scales: list[Tensor] = []

    def record(conv: nn.Module, inputs: tuple[Tensor, ...], _out: Tensor) -> None:
        assert isinstance(conv, nn.Conv2d) and conv.bias is not None
        magnitude = (
            nn.functional.conv2d(inputs[0].abs(), conv.weight.abs(), padding=conv.padding)
            + conv.bias.abs()[:, None, None]
        )
        scales.append(magnitude.amax().detach())

    with torch.no_grad():
        fast = net(patches)
        handles = [conv.register_forward_hook(record) for conv in convs]
        with torch.enable_grad():  # autograd keeps the default layout
            plain = [out.detach() for out in net(patches)]
        for handle in handles:
            handle.remove()
    assert fast[-1].is_contiguous(memory_format=torch.channels_last)
    assert plain[-1].is_contiguous()
    # each convolution adds at most γ_K of its largest Σ|w||x|; the variance-preserving init
    # (1 / fan-in) and 1-Lipschitz ReLUs/pooling do not grow what the earlier layers added
    fan_in = max(m.in_channels * m.kernel_size[0] * m.kernel_size[1] for m in convs)
    bound = len(convs) * (fan_in + 10) * U * float(torch.stack(scales).amax())
    for ours, reference in zip(fast, plain, strict=True):
        assert float((ours - reference).abs().amax()) <= bound
