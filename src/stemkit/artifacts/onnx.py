"""ONNX export of separation models, and onnxruntime as a CPU engine for separation.

What goes into the graph. ONNX has no complex tensors, and the STFT-based systems keep
complex spectrograms between their transforms: the exporter refuses ``torch.stft`` with
complex output ("STFT does not currently support complex types"), the inverse STFT has no ONNX
operator, and the Wiener EM step works on complex covariances. So the graph holds each
system's *network*, in real tensors, and the transforms stay in torch around onnxruntime:

============================  ===================================================  ==========
system                        graph: input → output                                 in torch
============================  ===================================================  ==========
umx, causal umx, xumx          mixture magnitudes ``(batch, channels, bins,          STFT,
(:class:`Separator`)           frames)`` → target magnitudes ``(batch, targets,      Wiener/EM,
                               channels, bins, frames)`` (``forward_magnitudes``)    iSTFT
bsrnn                          mixture STFT as real/imaginary pairs ``(batch,        STFT,
                               channels, bins, frames, 2)`` → masked STFTs           iSTFT
                               ``(batch, sources, channels, bins, frames, 2)``
shnet                          normalised magnitude windows ``(windows, 1, bins,     STFT, window
                               patch_frames)`` → last-stack masks ``(windows,        plan, iSTFT
                               sources, bins, patch_frames)``
demucs                         standardised mixture padded to a valid length →       statistics,
                               network output ``(batch, sources · channels, time')`` padding,
                                                                                     trim
convtasnet                     mixture padded (or cut) to whole frames → stems       padding,
                               ``(batch, sources, channels, time')``                 crop
any other model                mixture → stems (the whole ``forward``)               —
============================  ===================================================  ==========

Batch and frames (or time) are dynamic axes, so the chunked inference path
(:func:`stemkit.inference.separate`) runs unchanged on any segment; only SH-Net's windows have
a fixed ``patch_frames`` (the network's own input size). The torch parts are the model's own
methods (:meth:`Separator.filter_and_invert`, ``stft``, ``istft``, ``masks``), not copies;
Demucs' padding and ConvTasNet's decoder are restated here because their torch code computes
lengths in Python, which a traced graph would freeze.

Exported with the TorchScript-based exporter (``torch.onnx.export(dynamo=False)``, opset
:data:`OPSET`). The dynamo exporter was tried: ``torch.export`` fails on every system here
(Python-side length arithmetic, in-place kernels with ``out=``, complex tensors) and took
over two minutes on a tiny BSRNN before failing.

:func:`onnxruntime_model` gives a :class:`~stemkit.models.base.SeparationModel` whose
network runs in an onnxruntime session on the CPU; its export is cached in ``<cache>/onnx/`` (see
:func:`stemkit.artifacts.fetch.cache_dir`) under a hash of the model's weights and settings,
or written to a temporary folder for models with random weights.

Weights above 2 GB. A protobuf message, hence a single-file ONNX graph, holds at most 2 GiB;
Demucs at C1=100 has 2.6 GB of weights. Such a model is written as the graph ``F.onnx`` and its
weights in one file beside it, ``F.onnx.data`` (ONNX's external-data layout, which onnxruntime
reads by the relative name stored in the graph): the two go together.

Parity. onnxruntime's kernels (MLAS GEMM, its own LSTM and convolution) sum in other orders
than PyTorch's, so outputs differ by float32 rounding: about ``eps · sqrt(n)`` relative per
accumulation of ``n`` terms (eps = 6e-8), compounded over the network's depth; for signals of
unit scale that is below 1e-5, and the tests hold it to 1e-4.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stemkit.dsp.stft import magnitude
from stemkit.errors import StemkitError
from stemkit.models.base import SeparationModel

if TYPE_CHECKING:
    from stemkit.models.blocks.mask import MaskEstimator
    from stemkit.models.bsrnn import BSRNN, BandSplitNetwork
    from stemkit.models.demucs import Demucs
    from stemkit.models.hourglass import HourglassSeparator
    from stemkit.models.spectral import Separator
    from stemkit.models.tasnet import ConvTasNet

__all__ = [
    "OPSET",
    "Export",
    "OnnxCore",
    "Split",
    "export_onnx",
    "onnxruntime_model",
    "split_model",
]

#: ONNX opset of the exports (LSTM, GroupNorm as InstanceNorm, ...).
OPSET = 17
#: Bumped whenever what goes into a graph changes, so that cached exports are not reused.
_GRAPH_VERSION = 1
_INSTALL = "pip install 'stemkit[onnx]'"
#: Largest protobuf message, hence largest single-file ONNX graph (2 GiB), less room for the
#: graph itself.
_PROTOBUF_LIMIT = 2**31 - 2**24


# --- what goes into the graph ----------------------------------------------------------------


class _Around(SeparationModel):
    """A model whose network is ``core`` (a torch module, or an onnxruntime session), with the
    torch model's transforms around it.

    Args:
        model: the torch model (its transforms, settings and contract are used).
        core: maps the split's input tensor to its output tensor.
        run: ``run(model, core, mixture) -> stems``: the model's forward with ``core`` in place
            of its network.
    """

    def __init__(
        self,
        model: SeparationModel,
        core: nn.Module,
        run: Callable[[Any, nn.Module, Tensor], Tensor],
    ) -> None:
        super().__init__(model.sources, model.sample_rate, model.audio_channels, model.causal)
        self.model_name = model.model_name
        self.init_kwargs = dict(model.init_kwargs)
        self.torch_model = model
        self.core = core
        self._run = run
        #: Builds the same kind of model around another torch model (see :meth:`isolate`).
        self.engine: Callable[[SeparationModel], SeparationModel] | None = None

    @property
    def default_segment(self) -> float | None:
        """The torch model's."""
        return self.torch_model.default_segment

    @property
    def default_batch_size(self) -> int:
        """The torch model's (batch is a dynamic axis of every export)."""
        return self.torch_model.default_batch_size

    def isolate(self, target: str) -> SeparationModel | None:
        """The torch model's isolated network for ``target``, run by the same engine: a
        two-stem split exports and runs only that network's graph."""
        isolated = self.torch_model.isolate(target)
        if isolated is None or self.engine is None:
            return None
        return self.engine(isolated)

    def forward(self, mixture: Tensor) -> Tensor:
        """``(batch, channels, time)`` → ``(batch, sources, channels, time)``."""
        if mixture.dim() != 3:
            raise ValueError(
                f"expected a waveform (batch, channels, time), got shape {tuple(mixture.shape)}"
            )
        with torch.no_grad():
            return self._run(self.torch_model, self.core, mixture)


@dataclass
class Split:
    """A model cut into the network that goes into the graph and the torch code around it.

    Attributes:
        model: the torch model.
        core: the network: one real tensor in, one real tensor out.
        example: a core input for tracing (its dynamic axes may take other sizes).
        dynamic_axes: axis index → name, of the input and of the output.
        run: ``run(model, core, mixture)``: the model's forward around ``core``.
        graph: one line saying what the graph maps (stored in the ONNX metadata).
    """

    model: SeparationModel
    core: nn.Module
    example: Tensor
    dynamic_axes: tuple[dict[int, str], dict[int, str]]
    run: Callable[[Any, nn.Module, Tensor], Tensor]
    graph: str

    def __post_init__(self) -> None:
        # the exporter restores the core's mode after tracing, and a core left in training
        # mode would put the model it wraps into training mode too
        self.core.eval()

    def around(self, core: nn.Module) -> SeparationModel:
        """The model with ``core`` in place of its network (``self.core`` gives it back)."""
        return _Around(self.model, core, self.run)


def split_model(model: SeparationModel, example: Tensor | None = None) -> Split:
    """Cut ``model`` into its network and the torch code around it (see the module docstring).

    Args:
        model: a separation model in eval mode.
        example: a mixture ``(batch, channels, time)`` to trace with (default: 1 s of noise).

    Raises:
        StemkitError: an oracle (it needs the true stems, which a graph cannot be given).
    """
    from stemkit.models.bsrnn import BSRNN
    from stemkit.models.demucs import Demucs
    from stemkit.models.hourglass import HourglassSeparator
    from stemkit.models.spectral import Separator
    from stemkit.models.tasnet import ConvTasNet

    name = model.model_name or type(model).__name__
    if model.requires_references:
        raise StemkitError(f"{name} is an oracle: it needs the true stems, so it has no ONNX form")
    if example is None:
        generator = torch.Generator().manual_seed(0)
        example = 0.1 * torch.randn(1, model.audio_channels, model.sample_rate, generator=generator)
    model.eval()
    with torch.no_grad():
        if isinstance(model, Separator):
            return _spectral_split(model, example)
        if isinstance(model, BSRNN):
            return _bsrnn_split(model, example)
        if isinstance(model, HourglassSeparator):
            return _hourglass_split(model)
        if isinstance(model, Demucs):
            return _demucs_split(model, example)
        if isinstance(model, ConvTasNet):
            return _tasnet_split(model, example)
    return Split(
        model,
        _Whole(model),
        example,
        ({0: "batch", 2: "time"}, {0: "batch", 3: "time"}),
        lambda _, core, mixture: core(mixture),
        "mixture (batch, channels, time) -> stems (batch, sources, channels, time)",
    )


class _Whole(nn.Module):
    def __init__(self, model: SeparationModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, mixture: Tensor) -> Tensor:
        return self.model(mixture)


# Spectrogram masking (umx, xumx): the cores on magnitudes; STFT, Wiener and iSTFT in torch.


class _Magnitudes(nn.Module):
    def __init__(self, model: Separator) -> None:
        super().__init__()
        self.model = model

    def forward(self, mix_mag: Tensor) -> Tensor:
        # with autograd on, forward_magnitudes stacks the estimates; its no-grad path writes
        # them into an uninitialised tensor, which the tracer does not carry into the graph
        with torch.enable_grad():
            return self.model.forward_magnitudes(mix_mag)


def _spectral_split(model: Separator, example: Tensor) -> Split:
    def run(model: Separator, core: nn.Module, mixture: Tensor) -> Tensor:
        # Separator.forward's whole-signal path, with the cores in the graph
        mix_stft = model.mixture_spectrogram(mixture)
        estimates = core(magnitude(mix_stft, mono=model.audio_channels == 1))
        return model.filter_and_invert(estimates, mix_stft, length=mixture.shape[-1])

    mono = model.audio_channels == 1
    return Split(
        model,
        _Magnitudes(model),
        magnitude(model.mixture_spectrogram(example), mono=mono),
        ({0: "batch", 3: "frames"}, {0: "batch", 4: "frames"}),
        run,
        "mixture magnitudes (batch, channels, bins, frames) -> target magnitudes (batch, "
        "targets, channels, bins, frames); STFT, Wiener filter and iSTFT outside",
    )


# Band-split RNN: the networks on real/imaginary pairs; STFT and iSTFT in torch.


class _RealBSRNN(nn.Module):
    """:class:`~stemkit.models.bsrnn.BSRNN`'s networks in real arithmetic.

    The band split reads the real/imaginary pairs as ``view_as_real`` lays them out, and the
    complex masks multiply the mixture as ``(a + ib)(c + id)``, term by term.

    Shapes:
        forward: ``(batch, channels, bins, frames, 2)`` → ``(batch, sources, channels, bins,
        frames, 2)``.
    """

    def __init__(self, model: BSRNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, spec: Tensor) -> Tensor:
        model = self.model
        networks = cast("dict[str, BandSplitNetwork]", model.networks)
        if model.simo:
            estimates = _real_network(networks["joint"], spec)
            if model.simo_other_residual:
                rest = spec.unsqueeze(1) - estimates.sum(dim=1, keepdim=True)
                estimates = torch.cat([estimates, rest], dim=1)
            return estimates
        return torch.cat([_real_network(net, spec) for net in networks.values()], dim=1)


def _real_network(net: BandSplitNetwork, spec: Tensor) -> Tensor:
    """:meth:`BandSplitNetwork.forward` on ``(batch, channels, bins, frames, 2)``."""
    from stemkit.models.blocks.bandsplit import split_bands

    batch, nb_channels, nb_bins, nb_frames, _ = spec.shape
    items = spec if net.stereo == "naive" else spec.reshape(-1, 1, nb_bins, nb_frames, 2)
    # (items, channels, real/imag, bins, frames), as BandSplit views its complex input
    parts = items.permute(0, 1, 4, 2, 3)
    split = net.band_split
    features = torch.stack(
        [
            projection(norm(band.reshape(band.shape[0], -1, nb_frames)))
            for band, norm, projection in zip(
                split_bands(parts, split.band_widths), split.norms, split.projections, strict=True
            )
        ],
        dim=1,
    )
    for block in net.blocks:
        features = block(features, nb_channels)
    maskers = cast("list[MaskEstimator]", list(net.maskers))
    estimates = torch.stack([_real_masked(masker, features, items) for masker in maskers], 1)
    if net.stereo == "naive":
        return estimates
    estimates = estimates.reshape(batch, nb_channels, len(net.maskers), nb_bins, nb_frames, 2)
    return estimates.transpose(1, 2)


def _real_masked(masker: MaskEstimator, features: Tensor, items: Tensor) -> Tensor:
    """``MaskEstimator(features) * items`` with ``items`` ``(batch, channels, bins, frames, 2)``."""
    nb_frames = features.shape[-1]
    gates = []
    for index, (width, mlp) in enumerate(zip(masker.band_widths, masker.bands, strict=True)):
        out = mlp(features[:, index])
        out = out.reshape(out.shape[0], masker.out_channels, 2, 2, width, nb_frames)
        gates.append(out[:, :, 0] * torch.sigmoid(out[:, :, 1]))
    mask = torch.cat(gates, dim=-2)  # (batch, channels, real/imag, bins, frames)
    m_re, m_im = mask[:, :, 0], mask[:, :, 1]
    x_re, x_im = items[..., 0], items[..., 1]
    return torch.stack([m_re * x_re - m_im * x_im, m_re * x_im + m_im * x_re], dim=-1)


def _bsrnn_split(model: BSRNN, example: Tensor) -> Split:
    def run(model: BSRNN, core: nn.Module, mixture: Tensor) -> Tensor:
        spec = torch.view_as_real(model.stft(mixture)).contiguous()
        estimates = torch.view_as_complex(core(spec).contiguous())
        return model.istft(estimates, length=mixture.shape[-1])

    return Split(
        model,
        _RealBSRNN(model),
        torch.view_as_real(model.stft(example)).contiguous(),
        ({0: "batch", 3: "frames"}, {0: "batch", 4: "frames"}),
        run,
        "mixture STFT (batch, channels, bins, frames, real/imag) -> stem STFTs (batch, "
        "sources, channels, bins, frames, real/imag); STFT and iSTFT outside",
    )


# SH-Net: the last stack on fixed-size windows; STFT, window plan and iSTFT in torch.


class _LastStack(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, windows: Tensor) -> Tensor:
        return self.net(windows)[-1]


class _AsStacks(nn.Module):
    """The exported last stack seen as a :class:`StackedHourglass` (a list of stack outputs)."""

    def __init__(self, core: nn.Module, nb_sources: int) -> None:
        super().__init__()
        self.core = core
        self.nb_sources = nb_sources

    def forward(self, windows: Tensor) -> list[Tensor]:
        return [self.core(windows)]


def _hourglass_split(model: HourglassSeparator) -> Split:
    from stemkit.models.hourglass import HourglassSeparator

    twins: dict[int, HourglassSeparator] = {}

    def run(model: HourglassSeparator, core: nn.Module, mixture: Tensor) -> Tensor:
        # the model's own forward (STFT, window plan, Nyquist bin, iSTFT) around the core
        twin = twins.get(id(core))
        if twin is None:
            twin = HourglassSeparator(
                _AsStacks(core, model.net.nb_sources),  # type: ignore[arg-type]
                sources=model.sources,
                sample_rate=model.sample_rate,
                n_fft=model.n_fft,
                n_hop=model.n_hop,
                patch_frames=model.patch_frames,
                window_batch=model.window_batch,
            )
            twins[id(core)] = twin
        return twin(mixture)

    # one window: the reference network takes tens of seconds per window on a CPU
    example = torch.rand(1, 1, model.nb_bins, model.patch_frames)
    return Split(
        model,
        _LastStack(model.net),
        example,
        ({0: "windows"}, {0: "windows"}),
        run,
        "normalised magnitude windows (windows, 1, bins, patch_frames) -> last-stack masks "
        "(windows, sources, bins, patch_frames); STFT, windows and iSTFT outside",
    )


# Demucs: the encoder, LSTM and decoder; statistics, padding and trimming in torch.


class _DemucsNetwork(nn.Module):
    def __init__(self, model: Demucs) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        from stemkit.models.demucs import center_trim

        skips = []
        for encode in self.model.encoder:
            x = encode(x)
            skips.append(x)
        if self.model.lstm is not None:
            x = self.model.lstm(x)
        for decode in self.model.decoder:
            x = x + center_trim(skips.pop(), x.shape[-1])
            x = decode(x)
        return x


def _demucs_in(model: Demucs, mixture: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Demucs.forward up to the network: (padded input, mean, scale)."""
    from stemkit.models.demucs import standardize

    length = mixture.shape[-1]
    x, mean, scale = mixture, mixture.new_zeros(1, 1, 1), mixture.new_ones(1, 1, 1)
    if model.normalize:
        x, mean, scale = standardize(mixture)
    padding = model.valid_length(length) - length
    return F.pad(x, (padding // 2, padding - padding // 2)), mean, scale


def _demucs_split(model: Demucs, example: Tensor) -> Split:
    def run(model: Demucs, core: nn.Module, mixture: Tensor) -> Tensor:
        from stemkit.models.demucs import center_trim

        batch, _, length = mixture.shape
        x, mean, scale = _demucs_in(model, mixture)
        stems = center_trim(core(x), length)
        stems = stems.reshape(batch, len(model.sources), model.audio_channels, length)
        if model.normalize:
            stems = stems * scale.unsqueeze(1) + mean.unsqueeze(1)
        return stems

    return Split(
        model,
        _DemucsNetwork(model),
        _demucs_in(model, example)[0],
        ({0: "batch", 2: "time"}, {0: "batch", 2: "time"}),
        run,
        "normalised mixture padded to a valid length (batch, channels, time) -> network output "
        "(batch, sources * channels, time'); normalisation, padding and trimming outside",
    )


# ConvTasNet: encoder, separator and decoder on whole hops; padding and cropping in torch.


class _TasNetNetwork(nn.Module):
    """ConvTasNet.forward on an input of whole hops, with the overlap-add as two paddings
    (the model's in-place slice updates and ``bmm(out=...)`` do not trace)."""

    def __init__(self, model: ConvTasNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        model = self.model
        batch, channels = x.shape[0], model.audio_channels
        nb_sources, hop = len(model.sources), model.hop
        frames = F.relu(model.encoder(x))  # (batch, N, nb_frames)
        masks = F.relu(_sequence(model.separator, frames))
        masks = masks.reshape(batch, nb_sources, model.nb_filters, -1)
        masked = (frames.unsqueeze(1) * masks).transpose(-1, -2)  # (..., nb_frames, N)
        samples = F.linear(masked, model.decoder.weight)  # (..., nb_frames, channels · L)
        samples = samples.reshape(batch, nb_sources, -1, channels, 2, hop).transpose(2, 3)
        # frame k's first half lands on hop slot k, its second half on slot k + 1
        first = F.pad(samples[..., 0, :], (0, 0, 0, 1))
        second = F.pad(samples[..., 1, :], (0, 0, 1, 0))
        return (first + second).flatten(-2)


def _sequence(layers: nn.Module, x: Tensor) -> Tensor:
    """Apply the separator's layers, each block as ``x + net(x)`` (not its in-place kernel), and
    each gLN with :func:`_global_layer_norm`."""
    from stemkit.models.tasnet import TemporalBlock

    for layer in layers.children():
        if isinstance(layer, TemporalBlock):
            x = x + _sequence(layer.net, x)
        elif isinstance(layer, nn.GroupNorm) and layer.num_groups == 1:
            x = _global_layer_norm(x, layer)
        else:
            x = layer(x)
    return x


def _global_layer_norm(x: Tensor, norm: nn.GroupNorm) -> Tensor:
    """gLN of ``(batch, channels, frames)`` with statistics summed as the model sums them.

    onnxruntime's normalisation kernels accumulate the channels × frames values (millions per
    chunk) in float32, an error that grows with the chunk: 6e-4 on the stems of 5 s at the
    paper's size. As the model's inference kernel (``tasnet._gln_affine``) does, each channel's
    frames are summed in float32 and the channel sums combined in float64.
    """
    total = x.mean(dim=-1).double().mean(dim=1, keepdim=True)  # (batch, 1)
    squares = (x * x).mean(dim=-1).double().mean(dim=1, keepdim=True)
    variance = (squares - total * total).clamp(min=0)
    scale = (variance + norm.eps).rsqrt().float().unsqueeze(-1)  # (batch, 1, 1)
    mean = total.float().unsqueeze(-1)
    return (x - mean) * scale * norm.weight[:, None] + norm.bias[:, None]


def _tasnet_in(model: ConvTasNet, mixture: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ConvTasNet.forward up to the encoder: (input of whole frames, mean, scale)."""
    from stemkit.models.demucs import standardize

    length = mixture.shape[-1]
    x, mean, scale = mixture, mixture.new_zeros(1, 1, 1), mixture.new_ones(1, 1, 1)
    if model.normalize:
        x, mean, scale = standardize(mixture)
    if model.pad_end or length < model.filter_length:
        return F.pad(x, (0, model.valid_length(length) - length)), mean, scale
    # whole frames only, as the Demucs v1 release
    whole = (length - model.filter_length) // model.hop * model.hop
    return x[..., : model.filter_length + whole], mean, scale


def _tasnet_split(model: ConvTasNet, example: Tensor) -> Split:
    def run(model: ConvTasNet, core: nn.Module, mixture: Tensor) -> Tensor:
        length = mixture.shape[-1]
        x, mean, scale = _tasnet_in(model, mixture)
        out = core(x)[..., :length]
        if out.shape[-1] < length:  # pad_end=False: the partial frame's samples are silent
            out = F.pad(out, (0, length - out.shape[-1]))
        if model.normalize:
            out = out * scale.unsqueeze(1) + mean.unsqueeze(1)
        return out

    return Split(
        model,
        _TasNetNetwork(model),
        _tasnet_in(model, example)[0],
        ({0: "batch", 2: "time"}, {0: "batch", 3: "time"}),
        run,
        "mixture cut or padded to whole frames (batch, channels, time) -> stems (batch, "
        "sources, channels, time'); standardisation, padding and cropping outside",
    )


# --- export ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Export:
    """An exported model.

    Attributes:
        path: the ONNX file.
        graph: what the graph maps (and what stays outside it).
        max_difference: largest ``|onnxruntime − torch|`` of the core on the export example.
    """

    path: Path
    graph: str
    max_difference: float


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise StemkitError(f"ONNX needs the {module} package: {_INSTALL}") from None


def export_onnx(
    model: SeparationModel, path: str | os.PathLike[str], *, check: bool = True
) -> Export:
    """Write ``model``'s network as an ONNX graph (see the module docstring for its extent).

    The file is written in a temporary folder beside ``path`` and renamed into place: an
    export that fails leaves nothing. A model of 2 GB of weights or more gets its weights in
    :func:`external_data_path` (``<path>.data``), renamed into place before the graph. Metadata
    of the graph name the model, its settings, sources and rate, and what the graph maps.

    Args:
        model: a separation model.
        path: the ``.onnx`` file to write.
        check: run the graph in onnxruntime on the export example and measure the largest
            difference from torch.

    Raises:
        StemkitError: an oracle, an operator that has no ONNX form (named in the message), or
            the onnx packages missing.
    """
    onnx = _require("onnx")
    path = Path(path)
    split = split_model(model)
    name = model.model_name or type(model).__name__
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    # Beyond the protobuf limit the weights go to one file beside the graph (module docstring).
    data = external_data_path(path) if size >= _PROTOBUF_LIMIT else None
    path.parent.mkdir(parents=True, exist_ok=True)
    # Everything is written in a private folder beside ``path`` (the exporter itself spreads
    # a large model's weights over one file per tensor there), then renamed into place.
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    traced, final = work / "traced.onnx", work / path.name
    try:
        _trace(split, os.fspath(traced), name)
        graph = onnx.load(os.fspath(traced))  # reads the exporter's weight files, if any
        metadata = {
            "stemkit_model": name,
            "stemkit_kwargs": json.dumps(model.init_kwargs, sort_keys=True, default=str),
            "sources": json.dumps(list(model.sources)),
            "sample_rate": str(model.sample_rate),
            "audio_channels": str(model.audio_channels),
            "graph": split.graph,
        }
        for key, value in metadata.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        if data is None:
            onnx.save(graph, os.fspath(final))
        else:
            onnx.save(
                graph,
                os.fspath(final),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data.name,  # relative: the graph finds it beside itself
            )
        del graph
        difference = float("nan")
        if check:
            with torch.no_grad():
                expected = split.core(split.example)
            got = OnnxCore(final)(split.example)
            difference = float((got - expected.detach()).abs().max())
        # mkdtemp's folder is private; give the files the permissions a plain open would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(final, 0o666 & ~umask)
        if data is not None:
            os.chmod(work / data.name, 0o666 & ~umask)
            # the weights first: a graph in place always finds its weights beside it
            os.replace(work / data.name, data)
        else:
            external_data_path(path).unlink(missing_ok=True)  # a larger export's, replaced
        os.replace(final, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Export(path, split.graph, difference)


def external_data_path(path: str | os.PathLike[str]) -> Path:
    """Where the weights of an export above 2 GB lie: ``<path>.data`` beside the graph."""
    path = Path(path)
    return path.with_name(f"{path.name}.data")


def remove_export(path: str | os.PathLike[str]) -> None:
    """Remove an exported graph and its external weights, if it has any."""
    Path(path).unlink(missing_ok=True)
    external_data_path(path).unlink(missing_ok=True)


def _trace(split: Split, target: str, name: str) -> None:
    """``torch.onnx.export`` of the split's core, with its failures as one line."""
    import warnings

    _require("onnx")
    inputs, outputs = split.dynamic_axes
    try:
        with torch.no_grad(), warnings.catch_warnings(), _quiet_stderr():
            # the tracer's notes on Python-side shapes: the dynamic axes are tested instead
            warnings.simplefilter("ignore")
            torch.onnx.export(
                split.core,
                (split.example,),
                target,
                dynamo=False,
                opset_version=OPSET,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": inputs, "output": outputs},
            )
    except Exception as error:  # the exporter raises many kinds; all mean "cannot export"
        text = str(error)
        operator = re.search(r"operator '?((?:aten|prim)::\w+)", text) or re.search(
            r"(aten::\w+)", text
        )
        if operator:
            what = f"operator {operator.group(1)} has no ONNX form"
        else:
            lines = text.strip().splitlines() or [type(error).__name__]
            what = lines[0].split(" [Caused by")[0].strip()
            where = re.search(r"node defined in \S+?\(\d+\): (\w+)", text)
            if where:
                what += f" (in {where.group(1)})"
        raise StemkitError(f"{name} cannot be exported to ONNX (opset {OPSET}): {what}") from None


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptors 1 and 2: on failure the exporter prints the whole traced graph."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


# --- onnxruntime as an engine ----------------------------------------------------------------


class OnnxCore(nn.Module):
    """An ONNX graph of one input and one output, run by onnxruntime on the CPU.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default: torch's count, which ``--threads`` sets).
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        super().__init__()
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # spinning threads wait on each other when another process holds a core
        # (reference/pitfalls.md), as torch's OpenMP threads do
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(
            os.fspath(path), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: Tensor) -> Tensor:
        """Run the graph on ``x`` (float32 on the CPU); returns a float32 CPU tensor."""
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (out,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(out)


def weights_digest(model: SeparationModel) -> str:
    """SHA-256 of what an export depends on: weights, buffers, settings and versions."""
    digest = hashlib.sha256()
    header = {
        "graph": _GRAPH_VERSION,
        "opset": OPSET,
        "torch": torch.__version__,
        "class": type(model).__qualname__,
        "name": model.model_name,
        "kwargs": json.dumps(model.init_kwargs, sort_keys=True, default=str),
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


def cached_export(model: SeparationModel) -> Path:
    """The model's export in ``<cache>/onnx/``, written on first use."""
    from stemkit.artifacts.fetch import cache_dir

    name = re.sub(r"[^A-Za-z0-9_.-]", "_", model.model_name or type(model).__name__)
    path = cache_dir() / "onnx" / f"{name}-{weights_digest(model)[:16]}.onnx"
    if not path.is_file():
        export_onnx(model, path, check=False)
    return path


def onnxruntime_model(
    model: SeparationModel, *, cache: bool = True, threads: int | None = None
) -> SeparationModel:
    """``model`` with its network run by onnxruntime on the CPU, its transforms by torch.

    The result is a :class:`~stemkit.models.base.SeparationModel` (same sources, rate,
    channels and ``default_segment``) for :func:`stemkit.inference.separate` and
    :class:`stemkit.api.Separator`.

    Args:
        model: a separation model (moved to the CPU).
        cache: keep the export in the user cache, keyed by the weights (:func:`cached_export`);
            False exports into a temporary folder (models with random weights).
        threads: onnxruntime intra-op threads (default: torch's count).

    Raises:
        StemkitError: the model cannot be exported (see :func:`export_onnx`), or the onnx
            packages are missing.
    """
    _require("onnxruntime")
    model = model.to("cpu").eval()
    split = split_model(model)
    if cache:
        path = cached_export(model)
        try:
            core = OnnxCore(path, threads)
        except Exception:  # onnxruntime raises its own kinds for a file it cannot read
            # a cached file this onnxruntime refuses (damaged, or from another version): anew
            remove_export(path)
            core = OnnxCore(cached_export(model), threads)
    else:
        with tempfile.TemporaryDirectory(prefix="stemkit-onnx-") as folder:
            # the session holds the graph (and its weights) in memory: the files can go
            exported = export_onnx(model, Path(folder) / "model.onnx", check=False)
            core = OnnxCore(exported.path, threads)
    wrapped = split.around(core)
    if isinstance(wrapped, _Around):
        wrapped.engine = functools.partial(onnxruntime_model, cache=cache, threads=threads)
    return wrapped
