"""Upper bounds on sizes a typo can blow up, and checkpoints that vouch for their own content.

Every refusal is one ``stemkit: error: ...`` line naming the limit or the file, a non-zero exit
status, and nothing left on disk: no dataset folder, no run folder, no output folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from stemkit import models
from stemkit.artifacts import bundled_path, load_model
from stemkit.artifacts.checkpoint import (
    CONTENT_HASH_KEY,
    content_sha256,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    seal_checkpoint,
    sha256_of,
)
from stemkit.cli.main import main
from stemkit.errors import CheckpointError

#: A small Open-Unmix: a few hundred kB of weights, built in milliseconds.
SMALL_UMX: dict[str, Any] = {"hidden_size": 16, "nb_layers": 1}


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's stderr, which must be exactly one ``stemkit: error:`` line."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("stemkit: error: "), lines[0]
    return lines[0]


# --- stemkit data synth ----------------------------------------------------------------------


@pytest.mark.parametrize("duration", ["1e9", "inf", "nan", "-5", "0", "1201"])
def test_synth_refuses_durations_out_of_bounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], duration: str
) -> None:
    out = tmp_path / "synth"
    status = main(["data", "synth", str(out), "--tracks", "1", "--duration", duration])
    assert status != 0
    line = _one_error_line(capsys)
    assert "--duration" in line
    # Too long names the limit and why; too short (or NaN) names the minimum.
    assert ("1200" in line and "memory" in line) or "at least 2" in line
    assert not out.exists()


def test_synth_refuses_too_many_tracks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    assert main(["data", "synth", str(out), "--tracks", "1000000000", "--duration", "2"]) != 0
    line = _one_error_line(capsys)
    assert "--tracks" in line and "100,000" in line
    assert not out.exists()


def test_synth_refuses_songs_larger_than_available_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stemkit.data.synth import generate

    # A machine with 1 GB free: one 10 min song needs about 3.4 GB while it is rendered.
    monkeypatch.setattr(generate, "available_memory", lambda: 10**9)
    out = tmp_path / "synth"
    assert main(["data", "synth", str(out), "--tracks", "2", "--duration", "600"]) != 0
    line = _one_error_line(capsys)
    assert "--duration 600" in line and "1.0 GB is available" in line
    assert not out.exists()
    # Within memory, but four workers render four songs at once.
    monkeypatch.setattr(generate, "available_memory", lambda: 4 * 10**9)
    args = ["data", "synth", str(out), "--tracks", "8", "--duration", "300", "--workers", "4"]
    assert main(args) != 0
    assert "4 worker(s)" in _one_error_line(capsys)
    assert not out.exists()


def test_synth_refuses_datasets_larger_than_free_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("fluidsynth", reason="needs pyfluidsynth and the FluidSynth library")
    pytest.importorskip("pretty_midi")
    from collections import namedtuple

    from stemkit.data.synth import generate

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(generate.shutil, "disk_usage", lambda _: usage(10**9, 10**9, 10**6))
    out = tmp_path / "synth"
    assert main(["data", "synth", str(out), "--tracks", "3", "--duration", "30"]) != 0
    line = _one_error_line(capsys)
    assert "disk" in line and "0.0 GB is free" in line
    assert not out.exists()


# --- stemkit train: configuration bounds ------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data.segment=100"], "data.segment"),
        (["data.segment=1e12"], "data.segment"),
        (["data.segment=inf"], "data.segment"),
        (["data.segment=nan"], "data.segment"),
        (["data.segment=0"], "data.segment"),
        (["data.segment=-3"], "data.segment"),
        (["data.segment=50", "optim.batch_size=1000"], "optim.batch_size"),
        (["data.sample_rate=1000000000"], "optim.batch_size"),
        (["data.shift=inf"], "data.shift"),
        (["optim.lr=nan"], "optim.lr"),
        (["data.gain=[0.25,inf]"], "data.gain"),
        (["optim.epochs=0"], "optim.epochs"),
        (["optim.epochs=-1"], "optim.epochs"),
        (["optim.patience=0"], "optim.patience"),
        (["data.samples_per_track=0"], "data.samples_per_track"),
    ],
)
def test_train_refuses_bad_sizes_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: list[str], key: str
) -> None:
    run_dir = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "data"), "--run-dir", str(run_dir), *overrides]
    assert main(args) != 0
    line = _one_error_line(capsys)
    assert f"{key}=" in line
    assert not run_dir.exists()


# --- checkpoints -------------------------------------------------------------------------------


def _small_checkpoint(folder: Path, **kwargs: Any) -> Path:
    torch.manual_seed(0)
    model = models.build("umx", **{**SMALL_UMX, **kwargs})
    return save_checkpoint(folder / "small.pt", model)  # type: ignore[arg-type]


def _rewrite(source: Path, target: Path, change: Any, *, reseal: bool = False) -> Path:
    """Copy ``source`` to ``target`` through ``torch.save`` after ``change(payload)``.

    No ``.sha256`` goes with it, as when a user copies the file alone. ``reseal`` recomputes the
    inner checksum, as a deliberate rewrite would.
    """
    payload = torch.load(source, map_location="cpu", weights_only=True)
    change(payload)
    if reseal:
        payload[CONTENT_HASH_KEY] = content_sha256(payload)
    torch.save(payload, target)
    return target


def _flip_bytes(payload: dict[str, Any]) -> None:
    name, tensor = next((k, v) for k, v in payload["state_dict"].items() if v.numel() > 10)
    damaged = tensor.clone()
    raw = damaged.reshape(-1).view(torch.uint8)
    raw[5:9] ^= 0xFF  # one weight's bytes inverted: still a valid float, silently wrong
    payload["state_dict"][name] = damaged


def _song(folder: Path) -> Path:
    path = folder / "song.wav"
    noise = np.random.default_rng(0).standard_normal((44100, 2)).astype(np.float32) * 0.1
    sf.write(path, noise, 44100)
    return path


def _separate_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str], model: Path) -> str:
    out = tmp_path / "separated"
    status = main(["separate", str(_song(tmp_path)), "--model", str(model), "-o", str(out), "-q"])
    assert status != 0
    line = _one_error_line(capsys)
    assert str(model) in line
    assert not out.exists()
    return line


def test_checkpoint_carries_its_own_checksum(tmp_path: Path) -> None:
    path = _small_checkpoint(tmp_path)
    payload = load_checkpoint(path)
    assert payload[CONTENT_HASH_KEY] == content_sha256(payload)
    # Copied without its .sha256, an intact checkpoint still loads.
    path.with_name(path.name + ".sha256").unlink()
    model = model_from_checkpoint(load_checkpoint(path), path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, payload["state_dict"][name])


def test_damaged_tensor_without_sidecar_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = _rewrite(_small_checkpoint(tmp_path), tmp_path / "copy.pt", _flip_bytes)
    assert not damaged.with_name(damaged.name + ".sha256").exists()
    with pytest.raises(CheckpointError, match=r"copy\.pt: content does not match the checksum"):
        load_checkpoint(damaged)
    assert "damaged or was modified" in _separate_refuses(tmp_path, capsys, damaged)


def test_relabelled_checkpoint_without_resealing_is_refused(tmp_path: Path) -> None:
    # X-UMX and UMX of the same size have the same weight names and shapes: only the inner
    # checksum, which covers the model name, tells the relabelled file apart.
    def relabel(payload: dict[str, Any]) -> None:
        payload["model_name"] = "xumx"

    relabelled = _rewrite(_small_checkpoint(tmp_path), tmp_path / "xumx.pt", relabel)
    with pytest.raises(CheckpointError, match=r"xumx\.pt: content does not match"):
        load_checkpoint(relabelled)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("xumx", {}, "of another shape"),  # X-UMX at its default size, 512
        ("umx", {"hidden_size": 32, "nb_layers": 1}, "of another shape"),
        ("umx", {"hidden_size": 16, "nb_layers": 2}, "missing"),
        ("bsrnn", {}, "missing"),
        ("identity", {}, "unexpected"),
    ],
)
def test_weights_of_another_architecture_are_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    kwargs: dict[str, Any],
    message: str,
) -> None:
    def relabel(payload: dict[str, Any]) -> None:
        payload["model_name"], payload["model_kwargs"] = name, kwargs

    # Resealed, so the file is intact and only the weights' fit can catch the lie.
    foreign = _rewrite(_small_checkpoint(tmp_path), tmp_path / "foreign.pt", relabel, reseal=True)
    payload = load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match=rf"foreign\.pt: its weights do not fit .*{message}"):
        model_from_checkpoint(payload, foreign)
    assert "do not fit" in _separate_refuses(tmp_path, capsys, foreign)


def test_unbuildable_model_is_refused(tmp_path: Path) -> None:
    def unknown(payload: dict[str, Any]) -> None:
        payload["model_name"] = "nosuchmodel"

    def bad_kwargs(payload: dict[str, Any]) -> None:
        payload["model_kwargs"] = {"no_such_argument": 1}

    source = _small_checkpoint(tmp_path)
    for change, message in ((unknown, "unknown model"), (bad_kwargs, "cannot build")):
        path = _rewrite(source, tmp_path / "odd.pt", change, reseal=True)
        with pytest.raises(CheckpointError, match=rf"odd\.pt: .*{message}"):
            model_from_checkpoint(load_checkpoint(path), path)


def test_legacy_checkpoint_needs_its_sidecar_and_can_be_sealed(tmp_path: Path) -> None:
    def strip(payload: dict[str, Any]) -> None:
        del payload[CONTENT_HASH_KEY]

    legacy = _rewrite(_small_checkpoint(tmp_path), tmp_path / "legacy.pt", strip)
    with pytest.raises(CheckpointError, match=r"legacy\.pt: holds no checksum of its own"):
        load_checkpoint(legacy)
    sidecar = legacy.with_name(legacy.name + ".sha256")
    sidecar.write_text(f"{sha256_of(legacy)}  {legacy.name}\n")
    before = load_checkpoint(legacy)
    assert CONTENT_HASH_KEY not in before

    seal_checkpoint(legacy)
    after = load_checkpoint(legacy)
    assert after[CONTENT_HASH_KEY] == content_sha256(after)
    assert sidecar.read_text().split()[0] == sha256_of(legacy)
    for name, tensor in before["state_dict"].items():
        assert torch.equal(tensor, after["state_dict"][name])
    sidecar.unlink()  # sealed, it now loads on its own
    load_checkpoint(legacy)


def test_bundled_model_carries_its_own_checksum() -> None:
    path = bundled_path()
    if not path.is_file():
        pytest.skip("bundled model not built")
    payload = load_checkpoint(path)
    assert payload[CONTENT_HASH_KEY] == content_sha256(payload)
    assert path.with_name(path.name + ".sha256").read_text().split()[0] == sha256_of(path)
    assert list(load_model("default").sources) == payload["sources"]
