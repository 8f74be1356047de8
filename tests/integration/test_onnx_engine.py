"""``stemkit separate --engine onnxruntime``, ``stemkit export`` and the API's engine, end to end.

Stems from the onnxruntime engine equal the torch engine's within 1e-4: the networks differ by
float32 rounding only (see tests/unit/test_onnx_export.py for the bound), and the STFT, Wiener
filter and chunking around them are the same torch code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from stemkit import models
from stemkit.api import Separator
from stemkit.artifacts.checkpoint import save_checkpoint
from stemkit.cli import main as cli

RATE = 44100
TOLERANCE = 1e-4


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("STEMKIT_CACHE", str(cache))
    monkeypatch.setenv("STEMKIT_OFFLINE", "1")
    return cache


@pytest.fixture
def song(tmp_path: Path, make_stems: Callable[..., np.ndarray]) -> Path:
    """A 2-second stereo float wav: the sum of four toy stems."""
    path = tmp_path / "songs" / "song.wav"
    path.parent.mkdir()
    sf.write(path, make_stems(2, seed=5).sum(axis=0).T, RATE, subtype="FLOAT")
    return path


def tiny_checkpoint(tmp_path: Path, name: str, **kwargs: object) -> Path:
    torch.manual_seed(0)
    model = models.build(name, **kwargs)
    return save_checkpoint(tmp_path / f"{name}.pt", model)  # type: ignore[arg-type]


def stems_of(folder: Path) -> dict[str, np.ndarray]:
    return {path.stem: sf.read(path, dtype="float32")[0] for path in sorted(folder.glob("*.wav"))}


@pytest.mark.parametrize(
    ("name", "kwargs", "segment"),
    [
        ("default", None, None),  # the bundled Open-Unmix: whole song, frames dynamic
        ("convtasnet", {"N": 8, "L": 6, "B": 8, "H": 16, "P": 3, "X": 2, "R": 1}, "0.7"),
    ],
)
def test_separate_with_onnxruntime_equals_torch(
    tmp_path: Path,
    song: Path,
    private_cache: Path,
    name: str,
    kwargs: dict[str, object] | None,
    segment: str | None,
) -> None:
    model = name if kwargs is None else str(tiny_checkpoint(tmp_path, name, **kwargs))
    common = ["separate", str(song), "--model", model, "--bits", "32", "-q"]
    if segment is not None:  # chunks of 0.7 s with overlaps, and a short last one
        common += ["--segment", segment]
    assert cli.main([*common, "-o", str(tmp_path / "torch")]) == 0
    assert cli.main([*common, "-o", str(tmp_path / "ort"), "--engine", "onnxruntime"]) == 0
    expected = stems_of(tmp_path / "torch" / "song")
    got = stems_of(tmp_path / "ort" / "song")
    assert list(got) == list(expected) and len(got) == 4
    for stem, signal in expected.items():
        assert got[stem].shape == signal.shape
        assert np.abs(got[stem] - signal).max() <= TOLERANCE, stem
    (cached,) = (private_cache / "onnx").iterdir()  # exported once, keyed by the weights
    stamp = cached.stat().st_mtime_ns
    again = ["-o", str(tmp_path / "again"), "--engine", "onnxruntime"]
    assert cli.main([*common, *again]) == 0
    assert [p.stat().st_mtime_ns for p in (private_cache / "onnx").iterdir()] == [stamp]


def test_weightless_models_are_cached_and_random_weights_are_not(
    tmp_path: Path, song: Path, private_cache: Path
) -> None:
    from stemkit.artifacts.onnx import onnxruntime_model

    args = ["separate", str(song), "--model", "identity", "-o", str(tmp_path / "out"), "-q"]
    assert cli.main([*args, "--engine", "onnxruntime"]) == 0
    assert len(list((private_cache / "onnx").iterdir())) == 1
    untrained = models.build("convtasnet", N=8, L=6, B=8, H=16, P=3, X=2, R=1)
    onnxruntime_model(untrained, cache=False)
    assert len(list((private_cache / "onnx").iterdir())) == 1


def test_api_engine_onnxruntime(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(
        tmp_path, "demucs", channels=4, depth=3, lstm_layers=1, sources=["a", "b"]
    )
    audio = np.random.default_rng(0).standard_normal((2, RATE)).astype(np.float32) * 0.3
    torch_stems = Separator.from_pretrained(checkpoint, device="cpu").separate(audio, RATE)
    ort = Separator.from_pretrained(checkpoint, engine="onnxruntime")
    assert ort.device == torch.device("cpu")
    ort_stems = ort.separate(audio, RATE)
    assert list(ort_stems) == ["a", "b"]
    for stem, signal in torch_stems.items():
        assert np.abs(ort_stems[stem] - signal).max() <= TOLERANCE


def test_export_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    target = tmp_path / "shnet.onnx"
    checkpoint = tiny_checkpoint(
        tmp_path, "shnet", channels=8, nb_stacks=2, depth=2, n_fft=32, n_hop=8, patch_frames=8,
        stem_channels=[8, 8, 8, 8],
    )  # fmt: skip
    args = ["export", str(checkpoint), "-o", str(target)]
    assert cli.main(args) == 0
    assert capsys.readouterr().out.strip() == str(target)
    metadata = {entry.key: entry.value for entry in onnx.load(target).metadata_props}
    assert metadata["stemkit_model"] == "shnet"
    assert metadata["sample_rate"] == "8000"
    # an existing file is kept unless --force
    assert cli.main(args) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["export", "ibm1", "--random-weights"], "oracle"),
        (["export", "bsrnn"], "no trained weights"),
    ],
)
def test_export_refusals_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], reason: str
) -> None:
    target = tmp_path / "out.onnx"
    assert cli.main([*args, "-o", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("stemkit: error: ") and reason in err[-1]
    assert not list(tmp_path.glob("*.onnx*")) and not list(tmp_path.glob(".*.onnx*"))
