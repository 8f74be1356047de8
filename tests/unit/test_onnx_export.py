"""ONNX export of every system's network, run by onnxruntime, against PyTorch.

Tolerance. onnxruntime's kernels (MLAS GEMM, its LSTM and convolutions) add in other orders
than PyTorch's, so every output differs by float32 rounding: about eps·sqrt(n) relative for a
sum of n terms (eps = 6e-8, n up to a few hundred here), compounded over a network of a few
layers, a few 1e-6 of the output's scale at most (ConvTasNet, whose gLN statistics PyTorch
sums in float64: 1e-5). The tests hold every difference to 1e-4 of the output's scale, and the
waveforms also to 1e-4 absolute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from stemkit.artifacts import onnx as onnx_export  # noqa: E402
from stemkit.errors import StemkitError  # noqa: E402
from stemkit.models import build  # noqa: E402
from stemkit.models.base import SeparationModel  # noqa: E402

TOLERANCE = 1e-4
_UMX: dict[str, Any] = {
    "hidden_size": 16,
    "n_fft": 256,
    "n_hop": 64,
    "sample_rate": 8000,
    "bandwidth": 3000,
}
# eight bands: the exporter traces every band's modules, and 41 take seconds each time
_BSRNN: dict[str, Any] = {
    "n_features": 8,
    "n_layers": 1,
    "fac_sep": 1,
    "fac_mask": 1,
    "n_fft": 512,
    "n_hop": 128,
    "layout": [[1000, 4], [4000, 3]],
}
_TASNET: dict[str, Any] = {"N": 8, "L": 6, "B": 8, "H": 16, "P": 3, "X": 2, "R": 1}
SYSTEMS: dict[str, tuple[str, dict[str, Any]]] = {
    "umx": ("umx", _UMX),
    "umx-causal": ("umx", {**_UMX, "unidirectional": True}),
    "umx-wiener": ("umx", {**_UMX, "niter": 1, "sources": ["vocals", "other"]}),
    "xumx": ("xumx", _UMX),
    "bsrnn": ("bsrnn", {**_BSRNN, "sources": ["vocals", "drums"]}),
    "bsrnn-tac-attention": ("bsrnn", {**_BSRNN, "stereo": "tac", "attention_heads": 2}),
    "bsrnn-simo-naive": (
        "bsrnn",
        {
            **_BSRNN,
            "simo": True,
            "simo_other_residual": True,
            "stereo": "naive",
            "sources": ["vocals", "drums", "other"],
        },
    ),
    "demucs": ("demucs", {"channels": 4, "depth": 3, "lstm_layers": 1}),
    "convtasnet": ("convtasnet", _TASNET),
    # as the Demucs v1 release runs it: standardised, the last partial frame dropped
    "convtasnet-v1": ("convtasnet", {**_TASNET, "normalize": True, "pad_end": False}),
    "shnet": (
        "shnet",
        {
            "channels": 8,
            "nb_stacks": 2,
            "depth": 2,
            "n_fft": 32,
            "n_hop": 8,
            "patch_frames": 8,
            "stem_channels": [8, 8, 8, 8],
        },
    ),
}


def tiny(system: str) -> SeparationModel:
    name, kwargs = SYSTEMS[system]
    torch.manual_seed(0)
    return build(name, **kwargs).eval()


def close(got: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest difference over the output's scale (at least 1)."""
    assert got.shape == expected.shape
    return float((got - expected).abs().max()) / max(1.0, float(expected.abs().max()))


@pytest.mark.parametrize("system", SYSTEMS)
def test_onnxruntime_equals_pytorch(system: str, tmp_path: Path) -> None:
    model = tiny(system)
    exported = onnx_export.export_onnx(model, tmp_path / f"{system}.onnx")
    assert exported.path.is_file() and not model.training
    assert [p.name for p in tmp_path.iterdir()] == [f"{system}.onnx"]  # no temporary left
    graph = onnx.load(exported.path)
    metadata = {entry.key: entry.value for entry in graph.metadata_props}
    assert metadata["stemkit_model"] == SYSTEMS[system][0]
    assert metadata["graph"] == exported.graph

    # the graph alone, on the export example: relative to the core output's scale
    split = onnx_export.split_model(model)
    core = onnx_export.OnnxCore(exported.path)
    with torch.no_grad():
        expected_core = split.core(split.example).detach()
    core_scale = float(expected_core.abs().max())
    assert float((core(split.example) - expected_core).abs().max()) <= TOLERANCE * core_scale
    assert exported.max_difference <= TOLERANCE * core_scale

    # the whole model with the graph inside, at lengths and batch sizes other than the
    # export's (dynamic axes), against the torch model itself
    engine = split.around(core)
    assert engine.sources == model.sources and engine.default_segment == model.default_segment
    generator = torch.Generator().manual_seed(1)
    for batch, seconds in ((1, 0.6), (2, 1.3)):
        length = int(seconds * model.sample_rate) + 37
        mixture = 0.3 * torch.randn(batch, model.audio_channels, length, generator=generator)
        with torch.no_grad():
            expected = model(mixture)
        got = engine(mixture)
        assert got.shape == expected.shape
        assert float((got - expected).abs().max()) <= TOLERANCE
        assert close(got, expected) <= TOLERANCE


class _Cumulative(SeparationModel):
    """A model with an operator ONNX does not have (``cummax``)."""

    def __init__(self) -> None:
        super().__init__(("a",), 8000, 1)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        return torch.cummax(mixture, dim=-1)[0].unsqueeze(1)


def test_an_operator_without_onnx_form_is_named_in_one_line(tmp_path: Path) -> None:
    target = tmp_path / "cummax.onnx"
    with pytest.raises(StemkitError) as caught:
        onnx_export.export_onnx(_Cumulative(), target)
    message = str(caught.value)
    assert "aten::cummax" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_an_oracle_has_no_onnx_form(tmp_path: Path) -> None:
    with pytest.raises(StemkitError, match="oracle"):
        onnx_export.export_onnx(build("ibm1"), tmp_path / "ibm1.onnx")
    assert list(tmp_path.iterdir()) == []


def test_cached_export_is_keyed_by_the_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEMKIT_CACHE", str(tmp_path))
    model = tiny("demucs")
    first = onnx_export.cached_export(model)
    assert first.parent == tmp_path / "onnx" and first.is_file()
    stamp = first.stat().st_mtime_ns
    assert onnx_export.cached_export(model) == first  # reused, not written again
    assert first.stat().st_mtime_ns == stamp
    with torch.no_grad():
        model.encoder[0][0].bias.add_(1.0)  # type: ignore[index, union-attr]
    second = onnx_export.cached_export(model)
    assert second != first and second.is_file()


def test_weights_above_the_single_file_limit_go_beside_the_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Demucs at C1=100 holds 2.6 GB; the same layout for a tiny model under a lowered limit.
    monkeypatch.setattr(onnx_export, "_PROTOBUF_LIMIT", 1024)
    model = tiny("demucs")
    target = tmp_path / "demucs.onnx"
    exported = onnx_export.export_onnx(model, target)
    weights = onnx_export.external_data_path(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demucs.onnx", "demucs.onnx.data"]
    # the weights are in the data file, not in the graph (onnx keeps tensors under 1 KiB inline)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert weights.stat().st_size >= 0.9 * size > target.stat().st_size
    graph = onnx.load(target, load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)
    split = onnx_export.split_model(model)
    with torch.no_grad():
        expected = split.core(split.example)
    core = onnx_export.OnnxCore(target)
    assert float((core(split.example) - expected).abs().max()) <= exported.max_difference + 1e-12
    assert exported.max_difference <= TOLERANCE * float(expected.abs().max())
    # a smaller export replacing it leaves no stale weights behind
    monkeypatch.setattr(onnx_export, "_PROTOBUF_LIMIT", 2**31)
    onnx_export.export_onnx(model, target, check=False)
    assert [p.name for p in tmp_path.iterdir()] == ["demucs.onnx"]
    onnx_export.remove_export(target)
    assert list(tmp_path.iterdir()) == []


def test_a_two_stem_split_exports_and_runs_only_that_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEMKIT_CACHE", str(tmp_path))
    model = tiny("bsrnn")  # one network per source: vocals and drums
    engine = onnx_export.onnxruntime_model(model)
    isolated = engine.isolate("vocals")
    assert isolated is not None and isolated.sources == ("vocals",)
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2  # the whole model's, vocals'
    mixture = 0.3 * torch.randn(1, 2, 6000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(mixture)[:, :1]
    assert float((isolated(mixture) - expected).abs().max()) <= TOLERANCE
    # a model whose sources are computed jointly has no isolated form, in either engine
    assert onnx_export.onnxruntime_model(tiny("convtasnet")).isolate("vocals") is None


def test_a_damaged_cached_export_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEMKIT_CACHE", str(tmp_path))
    model = tiny("convtasnet")
    path = onnx_export.cached_export(model)
    path.write_bytes(path.read_bytes()[:100])
    engine = onnx_export.onnxruntime_model(model)
    mixture = 0.3 * torch.randn(1, 2, 4000)
    with torch.no_grad():
        expected = model(mixture)
    assert float((engine(mixture) - expected).abs().max()) <= TOLERANCE


def test_global_layer_norm_statistics_of_a_long_chunk(tmp_path: Path) -> None:
    # 20 s: gLN statistics over 16 channels × 294,000 frames, the size at which float32
    # accumulation inside onnxruntime's own normalisation kernels gave 6e-4 at paper size
    model = tiny("convtasnet")
    exported = onnx_export.export_onnx(model, tmp_path / "tasnet.onnx", check=False)
    engine = onnx_export.split_model(model).around(onnx_export.OnnxCore(exported.path))
    mixture = 0.3 * torch.randn(1, 2, 20 * 44100, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(mixture)
    assert close(engine(mixture), expected) <= TOLERANCE
