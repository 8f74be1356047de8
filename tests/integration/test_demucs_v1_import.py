"""Importing the Demucs v1 release's pickled models (Demucs, Conv-TasNet) without demucs.

The release's files are ``torch.save`` of whole ``demucs.model.Demucs`` / ``demucs.tasnet.
ConvTasNet`` objects. Here stand-ins with the same class paths, attributes and submodule names
(written for this test from the release's layer layout, small sizes, random weights) are put in
fake ``demucs.model`` / ``demucs.tasnet`` modules, pickled in both of torch's formats (the old
plain stream, as the 2019 files are, and the zip archive), and the fake modules are removed
before stemkit reads the file: conversion must neither import nor run anything from it.

Checks: a strict load with the right constructor arguments and the same tensors; the converted
model's output against the stand-in run as the release's ``separate.py`` runs it (standardise by
the mono mean and deviation, pad to the valid length centred, trim); the CLI verb; malicious and
unsupported pickles refused in one line with nothing run; and the catalogue entry fetched from a
local server (the ``server`` fixture) with its URL kept and its hash replaced by the fixture's.

Tolerances: the same float32 operations in another arrangement (batch-first LSTM, fused
Conv-TasNet blocks with float64 statistics): within 1e-5 (Demucs) and 1e-4 (Conv-TasNet, 6
residual blocks) of the reference's peak.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stemkit.artifacts.catalogue import CATALOGUE, Fetchable
from stemkit.artifacts.checkpoint import load_checkpoint, model_from_checkpoint
from stemkit.artifacts.demucs_v1 import convert_demucs_v1
from stemkit.artifacts.fetch import cached_path, load_catalogue_model
from stemkit.cli import main as cli
from stemkit.errors import CheckpointError, DownloadError
from stemkit.models.demucs import center_trim
from weights_server import WeightsServer

EPS = 1e-5  # stemkit's addition to the standard deviation (the release divides by it alone)


# --- stand-ins for demucs.model (the release's Demucs) ------------------------------------------


class BLSTM(nn.Module):
    __module__ = "demucs.model"

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=dim, hidden_size=dim, num_layers=layers, bidirectional=True)
        self.linear = nn.Linear(2 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:  # (batch, dim, time), the LSTM time-major
        y = self.linear(self.lstm(x.permute(2, 0, 1))[0])
        return y.permute(1, 2, 0)


class Demucs(nn.Module):
    __module__ = "demucs.model"

    def __init__(
        self, channels: int = 4, depth: int = 3, lstm_layers: int = 2, glu: bool = True
    ) -> None:
        super().__init__()
        self.audio_channels, self.sources = 2, 4
        self.kernel_size, self.stride, self.context = 8, 4, 3
        self.depth, self.upsample, self.channels = depth, False, channels
        self.encoder, self.decoder = nn.ModuleList(), nn.ModuleList()
        self.final = None
        act, scale = (nn.GLU(dim=1), 2) if glu else (nn.ReLU(), 1)
        width, previous = channels, self.audio_channels
        for index in range(depth):
            self.encoder.append(
                nn.Sequential(
                    nn.Conv1d(previous, width, 8, 4),
                    nn.ReLU(),
                    nn.Conv1d(width, scale * width, 1),
                    act,
                )
            )
            out = previous if index else self.sources * self.audio_channels
            decode = [nn.Conv1d(width, scale * width, 3), act, nn.ConvTranspose1d(width, out, 8, 4)]
            if index:
                decode.append(nn.ReLU())
            self.decoder.insert(0, nn.Sequential(*decode))
            previous, width = width, 2 * width
        self.lstm = BLSTM(previous, lstm_layers) if lstm_layers else None

    def valid_length(self, length: int) -> int:
        for _ in range(self.depth):
            length = max(1, math.ceil((length - 8) / 4) + 1) + 2
        for _ in range(self.depth):
            length = (length - 1) * 4 + 8
        return length

    def forward(self, mix: Tensor) -> Tensor:
        x, skips = mix, []
        for encode in self.encoder:
            x = encode(x)
            skips.append(x)
        if self.lstm is not None:
            x = self.lstm(x)
        for decode in self.decoder:
            x = decode(x + center_trim(skips.pop(), x.shape[-1]))
        return x.view(x.shape[0], self.sources, self.audio_channels, x.shape[-1])


# --- stand-ins for demucs.tasnet (the release's Conv-TasNet) ------------------------------------


class ChannelwiseLayerNorm(nn.Module):
    __module__ = "demucs.tasnet"

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, y: Tensor) -> Tensor:
        mean = y.mean(1, keepdim=True)
        var = y.var(1, keepdim=True, unbiased=False)
        return self.gamma * (y - mean) / (var + 1e-8).sqrt() + self.beta


class GlobalLayerNorm(ChannelwiseLayerNorm):
    __module__ = "demucs.tasnet"

    def forward(self, y: Tensor) -> Tensor:
        mean = y.mean((1, 2), keepdim=True)
        var = ((y - mean) ** 2).mean((1, 2), keepdim=True)
        return self.gamma * (y - mean) / (var + 1e-8).sqrt() + self.beta


class DepthwiseSeparableConv(nn.Module):
    __module__ = "demucs.tasnet"

    def __init__(self, hidden: int, bottleneck: int, kernel: int, dilation: int) -> None:
        super().__init__()
        pad = (kernel - 1) * dilation // 2
        self.net = nn.Sequential(
            nn.Conv1d(
                hidden, hidden, kernel, padding=pad, dilation=dilation, groups=hidden, bias=False
            ),
            nn.PReLU(),
            GlobalLayerNorm(hidden),
            nn.Conv1d(hidden, bottleneck, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TemporalBlock(nn.Module):
    __module__ = "demucs.tasnet"

    def __init__(self, bottleneck: int, hidden: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(bottleneck, hidden, 1, bias=False),
            nn.PReLU(),
            GlobalLayerNorm(hidden),
            DepthwiseSeparableConv(hidden, bottleneck, kernel, dilation),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class TemporalConvNet(nn.Module):
    __module__ = "demucs.tasnet"

    def __init__(self, N: int, B: int, H: int, P: int, X: int, R: int, C: int) -> None:
        super().__init__()
        self.C, self.mask_nonlinear = C, "relu"
        repeats = [
            nn.Sequential(*[TemporalBlock(B, H, P, 2**x) for x in range(X)]) for _ in range(R)
        ]
        self.network = nn.Sequential(
            ChannelwiseLayerNorm(N),
            nn.Conv1d(N, B, 1, bias=False),
            nn.Sequential(*repeats),
            nn.Conv1d(B, C * N, 1, bias=False),
        )

    def forward(self, w: Tensor) -> Tensor:
        batch, n, k = w.shape
        return F.relu(self.network(w).view(batch, self.C, n, k))


class Encoder(nn.Module):
    __module__ = "demucs.tasnet"

    def __init__(self, L: int, N: int, audio_channels: int) -> None:
        super().__init__()
        self.L, self.N = L, N
        self.conv1d_U = nn.Conv1d(audio_channels, N, kernel_size=L, stride=L // 2, bias=False)

    def forward(self, mixture: Tensor) -> Tensor:
        return F.relu(self.conv1d_U(mixture))


class Decoder(nn.Module):
    __module__ = "demucs.tasnet"

    def __init__(self, N: int, L: int, audio_channels: int) -> None:
        super().__init__()
        self.N, self.L, self.audio_channels = N, L, audio_channels
        self.basis_signals = nn.Linear(N, audio_channels * L, bias=False)

    def forward(self, w: Tensor, mask: Tensor) -> Tensor:
        frames = self.basis_signals((w.unsqueeze(1) * mask).transpose(2, 3))  # (M, C, K, ac L)
        m, c, k, _ = frames.shape
        frames = frames.view(m, c, k, self.audio_channels, self.L).permute(0, 1, 3, 4, 2)
        hop = self.L // 2
        # overlap-add with hop L / 2 by folding the frames back onto the time axis
        out = F.fold(
            frames.reshape(m * c * self.audio_channels, self.L, k),
            output_size=(1, hop * (k - 1) + self.L),
            kernel_size=(1, self.L),
            stride=(1, hop),
        )
        return out.view(m, c, self.audio_channels, -1)


class ConvTasNet(nn.Module):
    __module__ = "demucs.tasnet"

    def __init__(self, N: int = 8, L: int = 8, B: int = 6, H: int = 10, X: int = 3, R: int = 2):
        super().__init__()
        self.N, self.L, self.B, self.H, self.P, self.X, self.R, self.C = N, L, B, H, 3, X, R, 4
        self.norm_type, self.causal, self.mask_nonlinear = "gLN", False, "relu"
        self.encoder = Encoder(L, N, 2)
        self.separator = TemporalConvNet(N, B, H, 3, X, R, 4)
        self.decoder = Decoder(N, L, 2)

    def forward(self, mixture: Tensor) -> Tensor:
        w = self.encoder(mixture)
        out = self.decoder(w, self.separator(w))
        return F.pad(out, (0, mixture.shape[-1] - out.shape[-1]))


STANDINS = {
    "demucs.model": (BLSTM, Demucs),
    "demucs.tasnet": (
        ChannelwiseLayerNorm,
        GlobalLayerNorm,
        DepthwiseSeparableConv,
        TemporalBlock,
        TemporalConvNet,
        Encoder,
        Decoder,
        ConvTasNet,
    ),
}


@contextmanager
def fake_demucs() -> Iterator[None]:
    """``demucs``, ``demucs.model`` and ``demucs.tasnet`` in ``sys.modules`` for the block.

    Their ``__file__`` is this file, so that torch's old format finds the stand-ins' source and
    stores it beside each class, as it did for the release's files.
    """
    package = ModuleType("demucs")
    package.__path__ = []
    modules = {"demucs": package}
    for name, classes in STANDINS.items():
        module = ModuleType(name)
        module.__file__ = __file__
        for cls in classes:
            setattr(module, cls.__name__, cls)
        modules[name] = module
    assert not any(name in sys.modules for name in modules)
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in modules:
            del sys.modules[name]


@torch.no_grad()
def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Every weight random, so norms' affine maps and PReLU slopes count."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith(("gamma", ".weight")) and param.dim() == 3 and param.shape[2] == 1:
            param.copy_(0.5 + torch.rand(param.shape, generator=gen))  # norm scales
        elif param.numel() == 1 or name.endswith("beta"):
            param.copy_(0.3 * torch.rand(param.shape, generator=gen))  # PReLU slopes, shifts
        else:
            param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(param[0].numel()))
    return model.eval()


def save(model: nn.Module, path: Path, zip_format: bool) -> Path:
    with fake_demucs():
        torch.save(model, path, _use_new_zipfile_serialization=zip_format)
    assert "demucs" not in sys.modules
    return path


def release_run(model: nn.Module, mixture: Tensor) -> Tensor:
    """The stand-in run as the release's separate.py + apply_model (shifts 0, no split), but
    with stemkit's 1e-5 added to the deviation."""
    mono = mixture.mean(1, keepdim=True)
    mean, std = mono.mean(-1, keepdim=True), mono.std(-1, keepdim=True) + EPS
    x = (mixture - mean) / std
    length = x.shape[-1]
    valid = model.valid_length(length) if isinstance(model, Demucs) else length
    delta = valid - length
    with torch.no_grad():
        out = model(F.pad(x, (delta // 2, delta - delta // 2)))
    return center_trim(out, length) * std.unsqueeze(1) + mean.unsqueeze(1)


def rel_err(ours: Tensor, ref: Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


def mixture(length: int, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(2, 2, length, generator=gen) + 0.01


@pytest.mark.parametrize("zip_format", [False, True], ids=["legacy-pickle", "zip"])
def test_demucs_converts_strictly_and_separates_as_the_release(
    tmp_path: Path, zip_format: bool
) -> None:
    standin = randomize(Demucs(channels=4, depth=3, lstm_layers=2), seed=1)
    path = save(standin, tmp_path / "demucs.th", zip_format)
    ours = convert_demucs_v1(path)
    assert ours.model_name == "demucs"
    assert ours.init_kwargs == {
        "sources": ["drums", "bass", "other", "vocals"],
        "audio_channels": 2,
        "sample_rate": 44100,
        "channels": 4,
        "depth": 3,
        "growth": 2.0,
        "kernel": 8,
        "stride": 4,
        "context": 3,
        "lstm_layers": 2,
        "rescale": None,
        "normalize": True,
    }
    theirs = standin.state_dict()
    state = ours.state_dict()
    assert list(state) == list(theirs)
    assert all(torch.equal(state[key], theirs[key]) for key in theirs)
    mix = mixture(3001)
    with torch.no_grad():
        estimate = ours(mix)
    ref = release_run(standin, mix)
    assert estimate.shape == ref.shape == (2, 4, 2, 3001)
    assert rel_err(estimate, ref) < 1e-5
    # the comparison discriminates: the stand-in run without the standardisation is far off
    delta = standin.valid_length(3001) - 3001
    with torch.no_grad():
        raw = center_trim(standin(F.pad(mix, (delta // 2, delta - delta // 2))), 3001)
    assert rel_err(raw, ref) > 0.01


@pytest.mark.parametrize("zip_format", [False, True], ids=["legacy-pickle", "zip"])
def test_tasnet_converts_strictly_and_separates_as_the_release(
    tmp_path: Path, zip_format: bool
) -> None:
    standin = randomize(ConvTasNet(), seed=2)
    path = save(standin, tmp_path / "tasnet.th", zip_format)
    ours = convert_demucs_v1(path)
    assert ours.model_name == "convtasnet"
    assert ours.init_kwargs == {
        "sources": ["drums", "bass", "other", "vocals"],
        "audio_channels": 2,
        "sample_rate": 44100,
        **{"N": 8, "L": 8, "B": 6, "H": 10, "P": 3, "X": 3, "R": 2},
        "normalize": True,
        "pad_end": False,
    }
    theirs = standin.state_dict()
    state = ours.state_dict()
    assert len(state) == len(theirs)
    assert torch.equal(state["encoder.weight"], theirs["encoder.conv1d_U.weight"])
    assert torch.equal(
        state["separator.7.net.5.bias"],  # repeat 1, block 2: depthwise part's gLN shift
        theirs["separator.network.2.1.2.net.3.net.2.beta"].flatten(),
    )
    # whole frames; a partial one (upstream: its 3 samples silent, i.e. the mean once mapped
    # back); shorter than L (upstream fails, stemkit pads)
    for length in (8 + 4 * 700, 8 + 4 * 700 + 3, 5):
        mix = mixture(length, seed=3)
        ref = release_run(standin, mix) if length >= 8 else None
        for grad in (False, True):  # the fused inference path and the autograd one
            with torch.set_grad_enabled(grad):
                estimate = ours(mix).detach()
            assert estimate.shape == (2, 4, 2, length)
            if ref is not None:
                assert rel_err(estimate, ref) < 1e-4
    # stemkit's default framing pads the partial frame instead: one more frame for every gLN
    mix = mixture(8 + 4 * 700 + 3, seed=3)
    ours.pad_end = True
    with torch.no_grad():
        assert rel_err(ours(mix), release_run(standin, mix)) > 1e-3


def test_import_verb_writes_a_checkpoint_that_separates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    standin = randomize(Demucs(channels=4, depth=2, lstm_layers=1), seed=4)
    path = save(standin, tmp_path / "demucs_extra.th", zip_format=False)
    out = tmp_path / "v1.pt"
    assert cli.main(["models", "import-demucs-v1", str(path), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert "imported demucs (drums, bass, other, vocals)" in captured.err
    payload = load_checkpoint(out)
    record = payload["provenance"]["demucs_v1_import"]
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    model = model_from_checkpoint(payload, out).eval()
    mix = mixture(2000, seed=5)
    with torch.no_grad():
        assert rel_err(model(mix), release_run(standin, mix)) < 1e-5
    # an existing output is kept unless --force
    assert cli.main(["models", "import-demucs-v1", str(path), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


class Payload:
    """Runs a shell command when unpickled."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


class CallsDemucs:
    """Asks the unpickler to call a (stubbed) model class instead of restoring one."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return Demucs, (4,)


@pytest.mark.parametrize(
    "kind", ["os.system", "nested", "class-call", "state-dict", "truncated", "not-torch"]
)
def test_a_malicious_or_wrong_pickle_is_refused_in_one_line(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    command = f"touch {marker}"
    path = tmp_path / "demucs.th"
    if kind == "os.system":
        torch.save(Payload(command), path, _use_new_zipfile_serialization=False)
    elif kind == "nested":  # hidden inside a real model's attributes
        standin = Demucs(channels=2, depth=1, lstm_layers=0)
        standin.extra = Payload(command)
        save(standin, path, zip_format=True)
    elif kind == "class-call":
        with fake_demucs():
            torch.save(CallsDemucs(), path)
    elif kind == "state-dict":
        torch.save(Demucs(channels=2, depth=1).state_dict(), path)
    elif kind == "truncated":
        save(Demucs(channels=2, depth=1), path, zip_format=False)
        path.write_bytes(path.read_bytes()[:-100])
    else:
        path.write_text("<html>404 Not Found</html>")
    out = tmp_path / "out.pt"
    assert cli.main(["models", "import-demucs-v1", str(path), "-o", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"stemkit: error: {path}: ")
    expected = {
        "os.system": f"refused to resolve {os.system.__module__}.system",
        "nested": f"refused to resolve {os.system.__module__}.system",
        "class-call": "calls demucs.model.Demucs(...) instead of restoring it",
        "state-dict": "holds a OrderedDict, not a pickled model",
        "truncated": "not a readable torch.save file",
        "not-torch": "not a readable torch.save file",
    }[kind]
    assert expected in line
    assert not marker.exists() and not out.exists()
    assert "demucs" not in sys.modules


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("upsample", "upsample=True"),
        ("glu", "glu=False"),
        ("sources", "separates 3 sources and does not name them"),
    ],
)
def test_variants_stemkit_cannot_hold_are_named(tmp_path: Path, change: str, message: str) -> None:
    standin = Demucs(channels=4, depth=2, glu=change != "glu")
    if change == "upsample":
        standin.upsample = True
    elif change == "sources":
        standin.sources = 3
    path = save(standin, tmp_path / "demucs.th", zip_format=True)
    with pytest.raises(CheckpointError, match=message):
        convert_demucs_v1(path)
    if change == "sources":  # named, the three sources load (the outermost decoder has 3 x 2)
        standin.decoder[-1][2] = nn.ConvTranspose1d(4, 6, 8, 4)
        path = save(standin, tmp_path / "demucs.th", zip_format=True)
        assert convert_demucs_v1(path, sources=["a", "b", "c"]).sources == ("a", "b", "c")


def test_tasnet_variants_stemkit_cannot_hold_are_named(tmp_path: Path) -> None:
    standin = ConvTasNet()
    standin.causal = True
    standin.norm_type = "cLN"
    path = save(standin, tmp_path / "tasnet.th", zip_format=True)
    with pytest.raises(CheckpointError, match=r"norm_type='cLN' .*causal=True"):
        convert_demucs_v1(path)


def test_catalogue_entry_fetches_verifies_and_converts(
    server: WeightsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tasnet-v1 as catalogued (its URL, converter and settings), the hash the fixture's."""
    standin = randomize(ConvTasNet(), seed=6)
    body = save(standin, tmp_path / "tasnet.th", zip_format=False).read_bytes()
    real = CATALOGUE["tasnet-v1"]
    assert isinstance(real.weights, Fetchable)
    (file,) = real.weights.files
    assert file.url == "https://dl.fbaipublicfiles.com/demucs/tasnet.th"
    assert real.import_command() == "stemkit models import-demucs-v1 tasnet.th -o tasnet-v1.pt"
    served = replace(file, sha256=hashlib.sha256(body).hexdigest())
    entry = replace(real, weights=replace(real.weights, files=(served,)))
    monkeypatch.setitem(CATALOGUE, entry.name, entry)
    monkeypatch.setenv("STEMKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("STEMKIT_WEIGHTS_MIRROR", server.url)
    monkeypatch.delenv("STEMKIT_OFFLINE", raising=False)
    server.files["/demucs/tasnet.th"] = body

    model = load_catalogue_model("tasnet-v1")
    assert server.requests == ["/demucs/tasnet.th"]
    assert cached_path(entry).is_file()
    assert model.sources == real.stems
    mix = mixture(8 + 4 * 300, seed=7)
    with torch.no_grad():
        assert rel_err(model(mix), release_run(standin, mix)) < 1e-4
    origin = load_checkpoint(cached_path(entry))["provenance"]["demucs_v1_import"]["origin"]
    assert origin["files"] == [{"url": file.url, "published_sha256": served.sha256}]

    # a corrupt download is refused by its hash and leaves nothing in the cache
    monkeypatch.setitem(
        CATALOGUE,
        entry.name,
        replace(entry, weights=replace(entry.weights, files=(replace(served, sha256="0" * 64),))),
    )
    with pytest.raises(DownloadError, match=r"not the published one.*import-demucs-v1 tasnet\.th"):
        load_catalogue_model("tasnet-v1")


def test_the_release_sizes_have_the_catalogued_parameter_counts() -> None:
    """At the release's sizes (Demucs C1=100, Conv-TasNet X=10) the stand-ins have exactly the
    parameters of the catalogued stemkit models, so every published tensor has a place."""
    with torch.device("meta"):
        sizes = {
            "demucs-v1": Demucs(channels=100, depth=6, lstm_layers=2),
            "tasnet-v1": ConvTasNet(N=256, L=20, B=256, H=512, X=10, R=4),
        }
    for name, standin in sizes.items():
        assert sum(p.numel() for p in standin.parameters()) == CATALOGUE[name].parameters
