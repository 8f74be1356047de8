"""Per-system CPU speed against the machine's bound and against the reference implementations.

One row per system at its paper size, random weights (speed does not depend on them), one
torch thread, measured in this one run:

* **FLOPs per second of audio**: matrix products and convolutions counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` on the timed input itself, plus the LSTM/GRU
  products (which the counter does not see: ``aten::mkldnn_rnn_layer`` has no formula) counted
  from the layer sizes, ``2 · gates · hidden · (input + hidden)`` per step, direction and layer.
  Not counted: STFT/iSTFT, norms, activations, masking and other element-wise work, so every
  achieved FLOP/s below is a lower bound of the work done.
* **RTF**: CPU time / audio duration of one model call on the whole clip (best of
  ``--repeats``; the counting call is the warm-up; ours and the reference's calls alternate);
  lower is faster. At one thread the CPU time is the wall time
  of an idle core, without the time other jobs of a shared machine hold it (the wall-time RTF
  is in the JSON).
* **achieved GFLOP/s** = counted FLOPs / CPU time.
* **the bound**: the same run measures the machine at one thread: a large ``torch.matmul``
  (MKL), a 3×3 ``conv2d`` on channels-last activations and a ``conv1d`` (oneDNN), and a
  bidirectional ``nn.LSTM`` on 64 sequences and on one (a matrix-vector product per step). A
  system's bound time is ``Σ_kind FLOPs_kind / rate_kind`` over its convolutions (the conv
  microbenchmark of its dimension), other matrix products (matmul) and recurrences (the LSTM
  of its kind): the time its counted work would take at the rates those kernels reach in
  isolation. ``× bound`` = CPU time / bound time (goal: at most 2).
* **reference**: where a reference implementation exists, the same weights run through it on the
  same clip: its RTF, ``ours / ref`` (goal: at most 1) and the largest output difference
  relative to the reference's peak. Open-Unmix: ``openunmix`` 1.3.0; X-UMX: asteroid 0.7.0's
  network; Conv-TasNet and Demucs v1: the ``demucs`` 2.0.3 package (``demucs.tasnet``, the
  Conv-TasNet of the Demucs v1 study; ``demucs.model.Demucs`` with ``resample=False``, which is
  the v1 architecture). Weights are mapped as stemkit's importers do.

``--before-src DIR`` reruns the stemkit rows with the package under ``DIR`` (e.g. ``main``'s
``src`` before a speed-up) in a subprocess and puts its RTF next to the current one (only for
the systems of ``--before-only``, those the speed-ups changed).

Not a test: the numbers depend on the machine and its load; the equalities behind the
speed-ups are tested in tests/models/test_speed_paths.py.

Usage:
    python bench/speed.py [--only umx,xumx,...] [--repeats 2] [--before-src /path/to/src]
    python bench/speed.py --render  # the table again from bench/results/speed.json
    python bench/speed.py --only demucs-c100,demucs-c100-b4 --merge  # re-measure those rows
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry

aten = torch.ops.aten

RESULTS = Path(__file__).resolve().parent / "results"
MUSDB = ("drums", "bass", "other", "vocals")

#: ``aten`` ops the counter reports, by the microbenchmark that bounds them.
_CONV_OPS = ("convolution", "_convolution", "conv1d", "conv2d", "mkldnn_convolution")
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


# ---------------------------------------------------------------------------------------------
# Counting


def _rnn_flops(module: nn.RNNBase, inputs: tuple[Any, ...]) -> int:
    """Matrix-product FLOPs of one call of an ``nn.LSTM``/``GRU``/``RNN``."""
    x = inputs[0]
    if isinstance(x, nn.utils.rnn.PackedSequence):
        steps = int(x.data.shape[0])
    elif x.dim() == 2:
        steps = int(x.shape[0])
    else:
        steps = int(x.shape[0] * x.shape[1])
    gates = _GATES.get(module.mode.split("_")[0], 1)
    hidden, directions = module.hidden_size, 2 if module.bidirectional else 1
    total = 0
    for layer in range(module.num_layers):
        size_in = module.input_size if layer == 0 else hidden * directions
        total += directions * 2 * gates * hidden * (size_in + hidden) * steps
    return total


@contextlib.contextmanager
def count_flops() -> Iterator[dict[str, int]]:
    """FLOPs by kind (``conv``, ``matmul``, ``rnn``) of whatever runs inside the block."""
    counts = {"conv": 0, "matmul": 0, "rnn": 0}

    def hook(module: nn.Module, inputs: tuple[Any, ...], _output: Any) -> None:
        if isinstance(module, nn.RNNBase):
            counts["rnn"] += _rnn_flops(module, inputs)

    # in-place forms (Conv-TasNet's fused blocks) count as their out-of-place ones
    in_place = {
        inplace: getattr(flop_registry[op], "__wrapped__", flop_registry[op])  # the raw formula
        for inplace, op in ((aten.baddbmm_, aten.baddbmm), (aten.addmm_, aten.addmm))
    }
    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        with FlopCounterMode(display=False, custom_mapping=in_place) as counter:
            yield counts
    finally:
        handle.remove()
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        kind = "conv" if str(op).split(".")[1] in _CONV_OPS else "matmul"
        counts[kind] += int(flops)


# ---------------------------------------------------------------------------------------------
# The machine


def _best(run: Callable[[], Any], repeats: int, warm_up: bool = True) -> tuple[float, Any, float]:
    """Best CPU time of ``repeats`` calls after a warm-up, the output, and the best wall time.

    CPU time (``time.process_time``): at one thread it equals the wall time on an idle core,
    and it does not count the time other jobs on a shared machine hold the core.
    """
    out = run() if warm_up else None  # warm-up: oneDNN primitives made, pages touched
    best, best_wall = float("inf"), float("inf")
    for _ in range(repeats):
        started, started_wall = time.process_time(), time.perf_counter()
        out = run()
        best = min(best, time.process_time() - started)
        best_wall = min(best_wall, time.perf_counter() - started_wall)
    return best, out, best_wall


@torch.inference_mode()
def machine_rates(repeats: int) -> dict[str, float]:
    """GFLOP/s at the current thread count of the microbenchmarks that bound each op kind."""
    gen = torch.Generator().manual_seed(0)
    rates = {}
    a, b = torch.randn(2048, 2048, generator=gen), torch.randn(2048, 2048, generator=gen)
    seconds, *_ = _best(lambda: a @ b, repeats)
    rates["matmul"] = 2 * 2048**3 / seconds / 1e9
    conv2 = nn.Conv2d(256, 256, 3, padding=1).eval()
    x2 = torch.randn(1, 256, 256, 64, generator=gen).contiguous(memory_format=torch.channels_last)
    seconds, *_ = _best(lambda: conv2(x2), repeats)
    rates["conv2d"] = 2 * 256 * 256 * 9 * 256 * 64 / seconds / 1e9
    conv1 = nn.Conv1d(256, 512, 3, padding=1).eval()
    x1 = torch.randn(1, 256, 32768, generator=gen)
    seconds, *_ = _best(lambda: conv1(x1), repeats)
    rates["conv1d"] = 2 * 256 * 512 * 3 * 32768 / seconds / 1e9
    lstm = nn.LSTM(128, 256, batch_first=True, bidirectional=True).eval()
    xl = torch.randn(64, 256, 128, generator=gen)
    seconds, *_ = _best(lambda: lstm(xl), repeats)
    rates["lstm"] = _rnn_flops(lstm, (xl,)) / seconds / 1e9
    # one sequence: each step is a matrix-vector product, bound by reading the weights
    lstm1 = nn.LSTM(512, 512, batch_first=True, bidirectional=True).eval()
    x1l = torch.randn(1, 256, 512, generator=gen)
    seconds, *_ = _best(lambda: lstm1(x1l), repeats)
    rates["lstm_batch1"] = _rnn_flops(lstm1, (x1l,)) / seconds / 1e9
    return rates


# ---------------------------------------------------------------------------------------------
# Systems and their references


@dataclasses.dataclass(frozen=True)
class System:
    """One row: how to build ours, feed it, bound it, and (optionally) its reference."""

    registry: str
    kwargs: dict[str, Any]
    rate: int
    channels: int
    duration: float
    conv_kind: str  # which conv microbenchmark bounds its convolutions
    rnn_kind: str  # which LSTM microbenchmark bounds its recurrences (batched or one sequence)
    description: str
    reference: str | None  # the reference's name, or None
    no_reference: str = ""  # why there is none
    batch: int = 1  # clips of ``duration`` per model call (chunks of one song batched)

    @property
    def audio_seconds(self) -> float:
        """Audio separated by one model call."""
        return self.duration * self.batch


#: The BSRNN rows' reference: the replication's own model code, from a checkout of its
#: repository (not a package: ``--obsrnn-src DIR``); nothing of it is part of stemkit.
OBSRNN_REFERENCE = "the replication's models/bsrnn.py (magronp/bsrnn f2ecc62)"
OBSRNN_MISSING = "the replication's code is on GitHub only (no package): --obsrnn-src DIR"
#: The Demucs rows' reference with ``--demucs-v1-src DIR``: the release's own code.
DEMUCS_V1_RELEASE = "Demucs v1 release code (facebookresearch/demucs 7cf5c60) model.Demucs"

SYSTEMS: dict[str, System] = {
    "umx": System(
        "umx", {"niter": 0}, 44100, 2, 10.0, "conv1d", "lstm_batch1",
        "Open-Unmix umxhq (4 targets, hidden 512, 16 kHz bandwidth), niter 0",
        "openunmix 1.3.0 Separator",
    ),
    "xumx": System(
        "xumx", {}, 44100, 2, 10.0, "conv1d", "lstm_batch1",
        "X-UMX (4 targets, hidden 512, 3 BLSTM layers, bridging), niter 0",
        "asteroid 0.7.0 X-UMX network",
    ),
    "bsrnn": System(
        "bsrnn", {"sources": ["vocals"], "n_features": 64, "n_layers": 8}, 44100, 2, 3.0,
        "conv1d", "lstm", "BSRNN vocals N=64 R=8 (v7 bands)", OBSRNN_REFERENCE, OBSRNN_MISSING,
    ),
    "bsrnn-large": System(
        "bsrnn", {"sources": ["vocals"], "n_features": 128, "n_layers": 12}, 44100, 2, 2.0,
        "conv1d", "lstm", "BSRNN vocals N=128 R=12 (v7 bands)", OBSRNN_REFERENCE, OBSRNN_MISSING,
    ),
    "demucs-c64": System(
        "demucs", {"channels": 64, "normalize": False}, 44100, 2, 5.0, "conv1d", "lstm_batch1",
        "Demucs v1 C1=64, depth 6, 2-layer BLSTM", "demucs 2.0.3 model.Demucs (resample=False)",
    ),
    "demucs-c100": System(
        "demucs", {"channels": 100, "normalize": False}, 44100, 2, 5.0, "conv1d", "lstm_batch1",
        "Demucs v1 C1=100 (paper size)", "demucs 2.0.3 model.Demucs (resample=False)",
    ),
    "demucs-c64-b4": System(
        "demucs", {"channels": 64, "normalize": False}, 44100, 2, 5.0, "conv1d", "lstm_batch1",
        "Demucs v1 C1=64, four chunks per call (stemkit's default batch for Demucs)",
        "demucs 2.0.3 model.Demucs (resample=False)", batch=4,
    ),
    "demucs-c100-b4": System(
        "demucs", {"channels": 100, "normalize": False}, 44100, 2, 5.0, "conv1d", "lstm_batch1",
        "Demucs v1 C1=100, four chunks per call (stemkit's default batch for Demucs)",
        "demucs 2.0.3 model.Demucs (resample=False)", batch=4,
    ),
    "convtasnet": System(
        "convtasnet", {"pad_end": False}, 44100, 2, 3.0, "conv1d", "lstm",
        "Conv-TasNet N=256 L=20 B=256 H=512 P=3 X=10 R=4, whole frames (as the release)",
        "demucs 2.0.3 tasnet.ConvTasNet",
    ),
    "shnet": System(
        "shnet", {}, 8000, 1, 3.0, "conv2d", "lstm",
        "SH-Net 4 stacks × 256 channels, 2 sources, 8 kHz mono, 64-frame windows", None,
        "the authors' code is TensorFlow 1 on GitHub (no package)",
    ),
    "irm": System(
        "irm2", {}, 44100, 2, 10.0, "conv1d", "lstm",
        "oracle IRM (α=2): STFT, masks, iSTFT only", None,
        "trivial: no network",
    ),
}  # fmt: skip


@contextlib.contextmanager
def _torch1_istft() -> Iterator[None]:
    """``torch.istft`` reading a real ``(..., 2)`` input as complex, as torch < 2 did (asteroid)."""
    original = torch.istft

    def istft(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if not x.is_complex() and x.shape[-1] == 2:
            x = torch.view_as_complex(x.contiguous())
        return original(x, *args, **kwargs)

    torch.istft = istft  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.istft = original  # type: ignore[assignment]


def _stub(name: str, **attributes: Any) -> None:
    """An empty module for an import the reference makes but its inference path never uses."""
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules.setdefault(name, module)


class _Spectrogram(nn.Module):
    """``torchaudio.transforms.Spectrogram(n_fft, hop_length, power=None)`` with torchaudio's
    defaults (periodic Hann window of ``n_fft``, centred, reflect padding, not normalised), for
    a reference that imports torchaudio (not installed here) only for its STFT."""

    def __init__(self, n_fft: int, hop_length: int, power: None = None) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft))

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])
        spec = torch.stft(
            rows, self.n_fft, self.hop, window=self.window, center=True, return_complex=True
        )
        return spec.reshape(*x.shape[:-1], *spec.shape[-2:])


class _InverseSpectrogram(_Spectrogram):
    """``torchaudio.transforms.InverseSpectrogram(n_fft, hop_length)`` (see above)."""

    def forward(self, spec: Tensor, length: int | None = None) -> Tensor:  # type: ignore[override]
        rows = spec.reshape(-1, *spec.shape[-2:])
        x = torch.istft(rows, self.n_fft, self.hop, window=self.window, length=length)
        return x.reshape(*spec.shape[:-2], x.shape[-1])


def _obsrnn_reference(source: Path, ours: nn.Module) -> Callable[[Tensor], Tensor]:
    """The replication's BSRNN (its ``models/bsrnn.py`` from the checkout ``source``) at
    ``ours``'s sizes, random weights given to ``ours`` through stemkit's importer renames."""
    from stemkit.artifacts.obsrnn import obsrnn_state_dict

    # Imports its forward never uses: Lightning (the training module), the data and metric
    # helpers; torchaudio only for the two transforms above.
    _stub("lightning")
    _stub(
        "lightning.pytorch",
        LightningModule=type(
            "LightningModule", (nn.Module,), {"save_hyperparameters": lambda *_, **__: None}
        ),
    )
    transforms = types.SimpleNamespace(
        Spectrogram=_Spectrogram, InverseSpectrogram=_InverseSpectrogram
    )
    _stub("torchaudio")
    sys.modules["torchaudio"].transforms = transforms  # type: ignore[attr-defined]
    _stub("torchaudio.transforms", **vars(transforms))
    _stub("helpers.data", rec_estimates=None)
    _stub("helpers.eval", compute_sdr=None)
    sys.path.insert(0, str(source))
    from models.bsrnn import BSRNN  # the checkout's
    from omegaconf import OmegaConf

    config = OmegaConf.create
    kwargs = ours.init_kwargs
    theirs = BSRNN(
        config({"algo": "adam", "lr": 1e-3, "loss_type": "L1", "loss_domain": "t",
                "monitor_val": "sdr"}),
        config({"name": "plateau"}),
        config({"device": "cpu", "verbose_per_track": False, "rec_dir": None, "segment_len": 10,
                "overlap": 0.1, "hop_size": None, "sdr_type": "usdr", "sdr_win": 1.0,
                "sdr_hop": 1.0}),
        targets=list(kwargs["sources"]), feature_dim=kwargs["n_features"],
        num_repeat=kwargs["n_layers"], group_num=1,
    ).eval()  # fmt: skip
    network = ours.networks[kwargs["sources"][0]]
    network.load_state_dict(obsrnn_state_dict(theirs.state_dict(), 2048), strict=True)
    return lambda x: theirs(x)["waveforms"]


def _demucs_v1_release(source: Path) -> types.ModuleType:
    """``demucs/model.py`` of the Demucs v1 release (the initial commit 7cf5c60 of
    facebookresearch/demucs, checked out at ``source``), imported as the package
    ``demucs_v1_release`` beside the installed ``demucs`` 2.0.3. Pure torch: it runs as is."""
    package = source / "demucs"
    spec = importlib.util.spec_from_file_location(
        "demucs_v1_release", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["demucs_v1_release"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("demucs_v1_release.model")


def _reference_name(name: str, args: argparse.Namespace) -> str | None:
    """The reference the row of ``name`` is compared with under these options."""
    if name.startswith("demucs") and args.demucs_v1_src is not None:
        return DEMUCS_V1_RELEASE
    return SYSTEMS[name].reference


def _reference(name: str, ours: nn.Module, args: argparse.Namespace) -> Callable[[Tensor], Tensor]:
    """The reference implementation of ``name`` holding ``ours``'s weights (or giving them to
    ``ours``), as a function from the mixture ``(1, channels, time)`` to stems
    ``(1, sources, channels, time')``, ``time' <= time``."""
    if name.startswith("bsrnn"):
        return _obsrnn_reference(Path(args.obsrnn_src), ours)
    if name == "umx":
        _stub("torchaudio")  # openunmix imports it at module level, never calls it here
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        separation = __import__("separation")
        upstream = separation._build("openunmix", 0, ours.state_dict())
        return lambda x: upstream(x)
    if name == "xumx":
        from asteroid.models import x_umx

        from stemkit.artifacts.asteroid import convert_asteroid_state_dict
        from stemkit.dsp.stft import bandwidth_to_max_bin

        theirs = x_umx.BrokenXUMX(
            list(ours.sources),
            window_length=4096,
            in_chan=4096,
            n_hop=1024,
            hidden_size=512,
            nb_channels=2,
            sample_rate=44100,
            nb_layers=3,
            max_bin=bandwidth_to_max_bin(44100, 4096, 16000.0),
            bidirectional=True,
            return_time_signals=True,
        ).eval()
        ours.load_state_dict(convert_asteroid_state_dict(theirs.state_dict()), strict=True)

        def run_xumx(x: Tensor) -> Tensor:
            with _torch1_istft():
                return theirs(x)[1].transpose(0, 1)

        return run_xumx
    # the demucs package's utils import diffq (quantisation, unused at inference)
    _stub("diffq", UniformQuantizer=object, DiffQuantizer=object)
    if name == "convtasnet":
        from demucs.tasnet import ConvTasNet

        from stemkit.artifacts.demucs_v1 import _tasnet_state

        tasnet = ConvTasNet(list(ours.sources), N=256, L=20, B=256, H=512, P=3, X=10, R=4)
        ours.load_state_dict(_tasnet_state(tasnet.state_dict(), 4, 10), strict=True)
        tasnet.eval()
        return lambda x: tasnet(x)
    if name.startswith("demucs"):
        import torch.nn.functional as F
        from demucs.utils import center_trim

        channels = SYSTEMS[name].kwargs["channels"]
        demucs: nn.Module
        if args.demucs_v1_src is not None:
            release = _demucs_v1_release(Path(args.demucs_v1_src))
            demucs = release.Demucs(len(ours.sources), channels=channels).eval()
        else:
            from demucs.model import Demucs

            demucs = Demucs(list(ours.sources), channels=channels, resample=False).eval()
        demucs.load_state_dict(ours.state_dict(), strict=True)

        def run_demucs(x: Tensor) -> Tensor:
            # the package's apply_model: centred padding to a valid length, centre trim
            length = x.shape[-1]
            delta = demucs.valid_length(length) - length
            out = demucs(F.pad(x, (delta // 2, delta - delta // 2)))
            return center_trim(out, length)

        return run_demucs
    raise KeyError(name)


# ---------------------------------------------------------------------------------------------
# Rows


def _ours(name: str) -> tuple[nn.Module, Tensor, Callable[[], Tensor]]:
    from stemkit import models

    spec = SYSTEMS[name]
    torch.manual_seed(0)
    model = models.build(spec.registry, **spec.kwargs).eval()
    gen = torch.Generator().manual_seed(1)
    length = int(spec.duration * spec.rate)
    if spec.registry.startswith(("irm", "ibm", "mwf")):
        stems = 0.1 * torch.randn(4, spec.channels, length, generator=gen)
        model.set_references(stems)  # type: ignore[operator]
        mixture = stems.sum(0, keepdim=True)
    else:
        mixture = 0.25 * torch.randn(spec.batch, spec.channels, length, generator=gen)
    return model, mixture, lambda: model(mixture)


def _timed(
    runs: list[Callable[[], Tensor]], repeats: int
) -> list[tuple[dict[str, int], float, Tensor, float]]:
    """Per function: FLOPs (counted in a first call, which is also the warm-up), best CPU time,
    output, best wall time. The timed calls alternate between the functions, so that ours and
    the reference see the same machine state (load, memory, clock)."""
    counted, best, best_wall, outputs = (
        [],
        [float("inf")] * len(runs),
        [float("inf")] * len(runs),
        [],
    )
    with torch.inference_mode():
        for run in runs:
            with count_flops() as flops:
                outputs.append(run())
            counted.append(flops)
        for _ in range(repeats):
            for index, run in enumerate(runs):
                seconds, outputs[index], wall = _best(run, 1, warm_up=False)
                best[index] = min(best[index], seconds)
                best_wall[index] = min(best_wall[index], wall)
    return list(zip(counted, best, outputs, best_wall, strict=True))


def system_row(name: str, args: argparse.Namespace, rates: dict[str, float]) -> dict[str, Any]:
    """Measure one system (and its reference)."""
    spec = SYSTEMS[name]
    model, mixture, run = _ours(name)
    available = spec.reference is not None and (
        spec.reference != OBSRNN_REFERENCE or args.obsrnn_src is not None
    )
    reference = _reference(name, model, args) if available else None  # may load ours
    load_before = os.getloadavg()[0]
    runs = [run] if reference is None else [run, lambda: reference(mixture)]
    timings = _timed(runs, args.repeats)
    flops, seconds, stems, wall = timings[0]
    audio = spec.audio_seconds
    row: dict[str, Any] = {
        "system": name,
        "description": spec.description,
        "parameters": sum(p.numel() for p in model.parameters()),
        "rate": spec.rate,
        "channels": spec.channels,
        "audio_seconds": spec.duration,
        "batch": spec.batch,
        "gflop_per_audio_second": {k: v / 1e9 / audio for k, v in flops.items()},
        "seconds": seconds,
        "rtf": seconds / audio,
        "wall_rtf": wall / audio,
        "achieved_gflops": sum(flops.values()) / seconds / 1e9,
    }
    rate_of = {
        "conv": rates[spec.conv_kind],
        "matmul": rates["matmul"],
        "rnn": rates[spec.rnn_kind],
    }
    bound = sum(flops[kind] / (rate_of[kind] * 1e9) for kind in flops)
    row["bound_rtf"] = bound / audio
    row["times_bound"] = seconds / bound if bound else None
    if reference is not None:
        assert spec.reference is not None
        ref_flops, ref_seconds, ref_stems, ref_wall = timings[1]
        common = ref_stems.shape[-1]
        difference = (stems[..., :common] - ref_stems).abs().max() / ref_stems.abs().max()
        row["reference"] = {
            "name": _reference_name(name, args),
            "rtf": ref_seconds / audio,
            "wall_rtf": ref_wall / audio,
            "gflop_per_audio_second": sum(ref_flops.values()) / 1e9 / audio,
            "ours_over_reference": seconds / ref_seconds,
            "max_rel_difference": float(difference),
            "compared_samples": int(common),
        }
    else:
        row["no_reference"] = spec.no_reference
    row["load_average_1min"] = [load_before, os.getloadavg()[0]]
    return row


def _before_rtf(name: str, args: argparse.Namespace) -> float | None:
    """RTF of ``name`` with the stemkit package under ``--before-src``, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": args.before_src}
    command = [sys.executable, __file__, "--rtf-only", name, "--repeats", str(args.repeats)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"{name} before: failed\n{done.stderr}", flush=True)
        return None
    return float(done.stdout.strip().splitlines()[-1])


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _machine() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "references": {p: _version(p) for p in ("openunmix", "asteroid", "demucs")},
    }


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    """The table of ``result``."""
    machine, rates = result["machine"], result["rates_gflops"]
    lines = [
        "# Speed per system: FLOPs, the machine's bound and the reference implementations",
        "",
        f"`python bench/speed.py` on {machine['cpu']} ({machine['logical_cores']} logical cores, "
        "shared with other jobs; the JSON has each row's load average), "
        f"{machine['threads']} torch thread, "
        f"torch {machine['torch']}, {result['date']}. Random weights at the paper sizes, noise "
        "at each model's rate; one model call on the whole clip, best of "
        f"{result['repeats']} (the FLOP-counting call is the warm-up; ours and the reference's "
        "calls alternate).",
        "",
        f"Machine at one thread (GFLOP/s): matmul 2048² {rates['matmul']:.0f}, conv2d 3×3 "
        f"256→256 channels-last {rates['conv2d']:.0f}, conv1d k3 256→512 {rates['conv1d']:.0f}, "
        f"BLSTM 128→256 on 64 sequences of 256 {rates['lstm']:.0f}, BLSTM 512→512 on one "
        f"sequence of 256 {rates['lstm_batch1']:.0f}.",
        "",
        "GFLOP/s of audio: counted convolutions + other matrix products + LSTM products (STFT, "
        "norms, activations and masking not counted). RTF = CPU time / audio time (lower is "
        "faster; one thread's CPU time, the wall time of an idle core: the JSON has the wall "
        "time too). bound RTF: the counted work at the microbenchmark rates of its kinds; "
        "× bound = RTF / bound RTF (goal ≤ 2). ours/ref = our CPU time / the reference's on "
        "the same weights and clip (goal ≤ 1); diff = max |ours − ref| / max |ref|.",
        "",
        "| system | params | clip | GFLOP per s of audio (conv + mm + rnn) | RTF before "
        "| RTF | GFLOP/s | bound RTF | × bound | reference | ref RTF | ours/ref | diff |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        g = row["gflop_per_audio_second"]
        parts = f"{sum(g.values()):.1f} ({g['conv']:.1f} + {g['matmul']:.1f} + {g['rnn']:.1f})"
        ref = row.get("reference")
        clip = f"{row['audio_seconds']:g} s {row['rate'] / 1000:g} kHz"
        if row.get("batch", 1) > 1:
            clip = f"{row['batch']} × {clip}"
        mark = " †" if row.get("remeasured") else ""
        lines.append(
            f"| {row['system']}{mark} | {row['parameters'] / 1e6:.1f} M | {clip} | {parts} "
            f"| {_fmt(row.get('rtf_before'), 3)} | {row['rtf']:.3f} "
            f"| {row['achieved_gflops']:.1f} | {row['bound_rtf']:.3f} "
            f"| {_fmt(row['times_bound'])} "
            + (
                f"| {ref['name']} | {ref['rtf']:.3f} | {ref['ours_over_reference']:.2f} "
                f"| {ref['max_rel_difference']:.1e} |"
                if ref
                else f"| none: {row['no_reference']} | – | – | – |"
            )
        )
    again = result.get("remeasured")
    if again:
        r = again["rates_gflops"]
        lines += [
            "",
            f"† re-measured on {again['date']} (`--merge`), each row with its reference, against "
            f"that run's machine rates: matmul {r['matmul']:.0f}, conv2d {r['conv2d']:.0f}, "
            f"conv1d {r['conv1d']:.0f}, BLSTM 64 sequences {r['lstm']:.0f}, one sequence "
            f"{r['lstm_batch1']:.0f} GFLOP/s.",
        ]
    lines += ["", *result.get("notes", [])]
    return "\n".join(lines) + "\n"


NOTES = [
    "## Notes",
    "",
    "- Each reference gets our weights through the mapping of stemkit's importers "
    "(`stemkit.artifacts.asteroid`, `stemkit.artifacts.demucs_v1`); Open-Unmix through "
    "`bench/separation.py`'s copy into `openunmix.model.Separator`. X-UMX: asteroid inverts "
    "without a length, so the common samples are compared. Demucs runs with `normalize=False` "
    "in both (the package standardises the padded input, stemkit the unpadded one). The "
    "`demucs` package is installed with `--no-deps` (its utils import `diffq`, which the bench "
    "stands in; nothing of it runs at inference).",
    "- BSRNN's reference is the replication's own model code (magronp/bsrnn at f2ecc62: "
    "`models/bsrnn.py`, `models/bs.py`), run from a checkout given with `--obsrnn-src DIR`, "
    "not a package and not part of stemkit; the bench stands in for the imports its forward "
    "never uses (Lightning, the data and metric helpers) and for torchaudio's two STFT "
    "transforms (torchaudio's defaults: periodic Hann, centred, reflect padding). Its weights "
    "reach ours through the renames of `stemkit models import-obsrnn` "
    "(`stemkit.artifacts.obsrnn`). The replication runs its band split and maskers as Python "
    "loops over the bands and ours batches them, but both spend most of the time in the same "
    "LSTM kernels: ours/ref 0.93 (N=64) and 0.98 (N=128).",
    "- Demucs against the release's own code: the `demucs` 2.0.3 package's `model.Demucs` "
    "with `resample=False` is the v1 architecture and is the reference above; the original "
    "v1 code (facebookresearch/demucs at its initial commit 7cf5c60, GitHub only, pure torch) "
    "runs too, from a checkout given with `--demucs-v1-src DIR`: `bench/results/"
    "speed-demucs-v1.md` (2026-12-04, one thread) has ours/ref 0.99 (C1=64) and 1.00 (C1=100) "
    "with outputs identical to the last bit, 0.97-0.98 with four chunks per call (within "
    "6e-7).",
    "- No reference: SH-Net (the authors' TensorFlow 1 code, GitHub only).",
    "- RTF before: the same row with the stemkit package of `main` before this branch "
    "(`--before-src`), in a fresh process of the same run.",
    "- × bound below 1 (BSRNN-large): the bound is an estimate from microbenchmarks, not a "
    "hard limit; BSRNN-large's LSTMs (256 units, hundreds of sequences) run faster per FLOP "
    "than the 64-sequence microbenchmark.",
    "- Demucs is 2-3× its bound because of its bottleneck BLSTM: one sequence with 2048 "
    "(C1=64) or 3200 (C1=100) units, so each step is a matrix-vector product that reads the "
    "whole recurrent weight (64 MB, 164 MB per direction and layer) from memory; the batch-1 "
    "microbenchmark's 512-unit weights stay in cache. The reference spends the same time "
    "there (same kernel, same time in an A/B of the LSTM alone); ours/ref for Demucs ranged "
    "0.98-1.11 over four runs on the shared machine (2026-12-04). Batching chunks "
    "amortises the weight reads: the `-b4` rows run four 5 s chunks per call, which "
    "`stemkit separate` now does for Demucs by default (`SeparationModel.default_batch_size`; "
    "at C1=100 with its 15 s chunks: real-time factor 0.57 → 0.44, peak memory 3.4 → 4.2 GB, "
    "tests/models/test_demucs.py checks the stems equal one chunk per call's).",
    "- Open-Unmix at niter 0 is at 0.63–0.68× of `openunmix`'s time at equal output "
    "(bench/results/separation.md; 2026-12-04 afternoon: RTF 0.045 against 0.071), not "
    "the issue's 0.5×. A profile of stemkit's 30 s separation (one thread, 1.33 s CPU) "
    "puts the network's own products at 0.97 s (LSTMs 0.50 s, fc3 0.26 s, the other dense "
    "layers 0.22 s: RTF 0.032, below the 0.042 that the microbenchmark rates estimate, "
    "which are conservative) and everything around them (STFT, masks, inverse STFT, "
    "copies) at about 0.36 s, after this session's faster inverse STFT and mask products. "
    "0.5× of openunmix (RTF 0.035) would leave 0.1 s per 30 s for all of that, so it is "
    "not reachable by trimming: the network would itself have to beat the MKL kernels "
    "both implementations call. The counted work says the same without a profile: Open-Unmix "
    "needs 3.6 GFLOP per second of audio (the table), 0.108 TFLOP per 30 s, which at this "
    "machine's large-matmul rate (96-110 GFLOP/s, one thread) takes 1.0-1.1 s before any STFT "
    "or mask, while 0.5× of openunmix is 1.07 s (in the 10 s row above: 0.5 × 0.072 = 0.036 "
    "against a bound RTF of 0.042). The goal is below the float32 FLOP bound of this CPU. "
    "niter 1 (the published models' setting) is at 0.43–0.44× (separation.md).",
    "- SH-Net computes every frame twice: its 64-frame windows overlap by half and each keeps "
    "its central half, as the authors' code; the FLOPs include that. The windows are batched "
    "(`window_batch=4`, the study's batched window inference, already in `main`).",
    "",
    "## Speed-ups on this branch (equal output within rounding; tests/models/test_speed_paths.py)",
    "",
    "- **SH-Net** (`models/hourglass.py`): inference runs the convolutions on channels-last "
    "activations (oneDNN's channels-last 3×3 kernels: 1.6× on the whole network, 18.0 → 11.2 s "
    "wall for two windows in an A/B run on the shared machine; max difference 1e-5 of the "
    "masks' peak, float32 reassociation); ReLUs and residual sums in place. Training keeps the "
    "default layout. Tried and dropped: channels-last weights too (no further gain: 11.0 vs "
    "11.2 s), 1×1 convolutions as matrix products on the channels-last activations (2.86 vs "
    "2.83 s CPU per window: no gain).",
    "- **BSRNN** (`models/blocks/bandsplit.py`, `mask.py`): the per-band Python loops of the "
    "band split (GroupNorm + kernel-1 conv per band) and of the maskers (GroupNorm + 3 kernel-1 "
    "convs + GLU per band) became one group norm with a group per band and batched products "
    "over runs of equal-width bands (the hidden layers over all bands at once); the kernel-1 "
    "convs no longer take PyTorch's slow generic convolution path. Same parameters and "
    "state_dict. The LSTMs were already batched over bands and frames.",
    "- **Conv-TasNet**: unchanged here; `main`'s fused in-place blocks (bmm 1×1 convs, gLN "
    "folded into the next layer, depthwise taps as fused multiply-adds) already make it faster "
    "than the reference, whose FLOPs it matches.",
    "- **Demucs**: batching chunks (above) is the speed-up. Tried and dropped: its six 1×1 "
    "encoder convolutions as batched products instead of PyTorch's generic kernel-1 path "
    "(0.31 vs 0.33 s of a 3.5 s call at C1=64 with four chunks: no gain worth the code); the "
    "rest is oneDNN convolutions and the LSTM, the same kernels as the reference's.",
    "- Not tried for lack of time: `torch.compile` on CPU (compile time is minutes at these "
    "sizes and the kernels above are already oneDNN/MKL ones).",
]


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    names = args.only.split(",") if args.only else list(SYSTEMS)
    unknown = sorted(set(names) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"--only: unknown system(s) {unknown}; choose from {', '.join(SYSTEMS)}")
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "repeats": args.repeats,
        "machine": _machine(),
        "rates_gflops": machine_rates(args.repeats),
        "rows": [],
        "notes": NOTES,
    }
    rates = result["rates_gflops"]  # this run's, which bound the rows measured now
    print(json.dumps(rates), flush=True)
    stored = RESULTS / f"{args.output}.json"
    rows: dict[str, dict[str, Any]] = {}
    if args.merge and stored.exists():
        # keep the stored run (its date and machine rates) and re-measure only these rows, each
        # marked with the date and machine rates of this run: a row's ratios stay in one run
        previous = json.loads(stored.read_text())
        rows = {row["system"]: row for row in previous["rows"]}
        merged = {name: previous[name] for name in ("date", "repeats", "machine", "rates_gflops")}
        result.update(merged, remeasured={"date": result["date"], "rates_gflops": rates})
    for name in names:
        row = system_row(name, args, rates)
        if "remeasured" in result:
            row["remeasured"] = True
        if args.before_src and name in args.before_only.split(","):
            row["rtf_before"] = _before_rtf(name, args)
        rows[name] = row
        result["rows"] = [rows[key] for key in SYSTEMS if key in rows]
        print(json.dumps(row), flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        stem = args.output
        (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))


def rtf_only(args: argparse.Namespace) -> None:
    """Print the RTF of one of our systems (the ``--before-src`` subprocess)."""
    torch.set_num_threads(args.threads)
    spec = SYSTEMS[args.rtf_only]
    _, _, run = _ours(args.rtf_only)
    with torch.inference_mode():
        seconds, *_ = _best(run, args.repeats)
    print(seconds / spec.audio_seconds)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help=f"comma-separated of {', '.join(SYSTEMS)}")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--before-src", default=None, help="stemkit src folder to compare with")
    parser.add_argument(
        "--before-only",
        default="bsrnn,bsrnn-large,shnet",
        help="systems to rerun with --before-src (those the speed-ups changed)",
    )
    parser.add_argument(
        "--obsrnn-src",
        default=None,
        metavar="DIR",
        help="a checkout of the BSRNN replication (magronp/bsrnn) to compare the bsrnn rows with",
    )
    parser.add_argument(
        "--demucs-v1-src",
        default=None,
        metavar="DIR",
        help="a checkout of facebookresearch/demucs at 7cf5c60 (the v1 release): the demucs "
        "rows' reference instead of the demucs 2.0.3 package",
    )
    parser.add_argument("--output", default="speed", help="results file stem")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="re-measure only the --only rows into the stored results (marked with this run)",
    )
    parser.add_argument(
        "--render", action="store_true", help="rewrite the .md from the stored .json and notes"
    )
    parser.add_argument("--rtf-only", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = _parse()
    if arguments.rtf_only:
        rtf_only(arguments)
    elif arguments.render:
        stored = json.loads((RESULTS / f"{arguments.output}.json").read_text())
        stored["notes"] = NOTES
        (RESULTS / f"{arguments.output}.json").write_text(json.dumps(stored, indent=2) + "\n")
        (RESULTS / f"{arguments.output}.md").write_text(markdown(stored))
    else:
        main(arguments)
