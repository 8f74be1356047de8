"""``stemkit separate`` end to end on generated songs, through ``stemkit.cli.main.main``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from stemkit import models
from stemkit.artifacts.checkpoint import save_checkpoint
from stemkit.audio.blocks import BlockWriter
from stemkit.cli import main as cli
from stemkit.outputs import MARKER

RATE = 44100
SECONDS = 3


@pytest.fixture(autouse=True)
def only_separate(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only this subcommand is under test; the parser then does not depend on the others.
    monkeypatch.setattr(cli, "COMMANDS", ("separate",))


@pytest.fixture
def song(tmp_path: Path, make_stems: Callable[..., np.ndarray]) -> Path:
    """A 3-second stereo float wav: the sum of four toy stems."""
    path = tmp_path / "songs" / "My Song.wav"
    path.parent.mkdir()
    sf.write(path, make_stems(SECONDS, seed=3).sum(axis=0).T, RATE, subtype="FLOAT")
    return path


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """An identity model with two stems, "a" and "b", saved as a checkpoint."""
    model = models.build("identity", sources=["a", "b"])
    return save_checkpoint(tmp_path / "identity-ab.pt", model)  # type: ignore[arg-type]


def hidden(folder: Path) -> list[str]:
    """Hidden files and folders left in ``folder``, other than stemkit's marker files."""
    return [p.name for p in folder.rglob(".*") if p.name != MARKER]


def listing(folder: Path) -> list[str]:
    """The stem files of a song folder, which must also hold stemkit's marker."""
    assert (folder / MARKER).is_file()
    return sorted(p.name for p in folder.iterdir() if p.name != MARKER)


def test_identity_output_equals_input(tmp_path: Path, song: Path) -> None:
    out = tmp_path / "out"
    status = cli.main(
        ["separate", str(song), "-o", str(out), "--model", "identity", "--bits", "32", "-q"]
    )
    assert status == 0
    assert listing(out / "My Song") == ["mixture.wav"]
    stem, rate = sf.read(out / "My Song" / "mixture.wav", dtype="float32")
    original, _ = sf.read(song, dtype="float32")
    assert rate == RATE and stem.shape == (SECONDS * RATE, 2)
    assert np.array_equal(stem, original)
    assert hidden(out) == []


def test_checkpoint_chunked_flac_24(tmp_path: Path, song: Path, checkpoint: Path) -> None:
    out = tmp_path / "out"
    argv = ["separate", str(song), "-o", str(out), "--model", str(checkpoint), "--segment", "1"]
    argv += ["--overlap", "0.25", "--batch-size", "2", "--shifts", "2", "--seed", "0"]
    argv += ["--format", "flac", "--bits", "24", "-q"]
    assert cli.main(argv) == 0
    original, _ = sf.read(song, dtype="float32")
    for name in ("a", "b"):
        info = sf.info(out / "My Song" / f"{name}.flac")
        assert (info.frames, info.samplerate, info.channels) == (SECONDS * RATE, RATE, 2)
        assert info.subtype == "PCM_24"
        stem, _ = sf.read(out / "My Song" / f"{name}.flac", dtype="float32")
        assert np.abs(stem - original).max() <= 2.0**-23
    assert hidden(out) == []


def test_other_rate_and_mono_are_converted(tmp_path: Path) -> None:
    path = tmp_path / "mono22k.wav"
    t = np.arange(SECONDS * 22050) / 22050
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), 22050)
    base = ["separate", str(path), "--model", "identity", "-q"]
    # By default the stems come back at the song's own rate (through the model's and back) ...
    assert cli.main([*base, "-o", str(tmp_path / "out")]) == 0
    info = sf.info(tmp_path / "out" / "mono22k" / "mixture.wav")
    assert (info.frames, info.samplerate, info.channels) == (SECONDS * 22050, 22050, 2)
    # ... and at the model's with --sample-rate model.
    assert cli.main([*base, "-o", str(tmp_path / "model"), "--sample-rate", "model"]) == 0
    info = sf.info(tmp_path / "model" / "mono22k" / "mixture.wav")
    assert (info.frames, info.samplerate, info.channels) == (SECONDS * RATE, RATE, 2)


def test_selected_stems_only(tmp_path: Path, song: Path, checkpoint: Path) -> None:
    out = tmp_path / "out"
    argv = ["separate", str(song), "-o", str(out), "--model", str(checkpoint), "--stems", "b"]
    assert cli.main([*argv, "-q"]) == 0
    assert listing(out / "My Song") == ["b.wav"]


def test_bad_song_is_reported_and_others_continue(
    tmp_path: Path, song: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "songs" / "broken.wav"
    bad.write_bytes(np.random.default_rng(0).bytes(1000))
    out = tmp_path / "out"
    status = cli.main(
        ["separate", str(bad), str(song), "-o", str(out), "--model", "identity", "-q"]
    )
    assert status == 1
    assert (out / "My Song" / "mixture.wav").is_file()
    assert not (out / "broken").exists()
    assert hidden(out) == []
    err = capsys.readouterr().err
    assert f"{bad}: not a readable wav file" in err
    assert "1 of 2 song(s) failed" in err


def test_existing_output_needs_force(tmp_path: Path, song: Path, checkpoint: Path) -> None:
    out = tmp_path / "out"
    base = ["separate", str(song), "-o", str(out), "--model", str(checkpoint), "-q"]
    assert cli.main([*base, "--stems", "a"]) == 0
    assert cli.main(base) == 2  # refused: the folder exists
    assert listing(out / "My Song") == ["a.wav"]
    assert cli.main([*base, "--force"]) == 0
    assert listing(out / "My Song") == ["a.wav", "b.wav"]
    assert hidden(out) == []


def test_interrupted_run_leaves_no_folder(
    tmp_path: Path, song: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_close = BlockWriter.close
    calls: list[Path] = []

    def close_then_interrupt(self: BlockWriter) -> Path:
        # the first stem file is complete in the partial folder when the second is interrupted
        calls.append(self.path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_close(self)

    monkeypatch.setattr(BlockWriter, "close", close_then_interrupt)
    out = tmp_path / "out"
    status = cli.main(["separate", str(song), "-o", str(out), "--model", str(checkpoint), "-q"])
    assert status == 130
    assert len(calls) == 2
    assert list(out.iterdir()) == []  # neither the final folder nor the partial one


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--overlap", "0.7"], "between 0 and 0.5"),
        (["--format", "flac", "--bits", "32"], "flac stores 16 or 24-bit"),
        (["--stems", "vocals"], "unknown stem"),
        (["--model", "no-such-model"], "neither a checkpoint file"),
    ],
)
def test_bad_options_exit_2(
    tmp_path: Path,
    song: Path,
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    argv = ["separate", str(song), "-o", str(out), "--model", "identity", "-q", *extra]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() or list(out.iterdir()) == []


def test_two_songs_with_the_same_name_are_refused(tmp_path: Path, song: Path) -> None:
    twin = tmp_path / "My Song.flac"
    sf.write(twin, torch.zeros(100, 2).numpy(), RATE)
    argv = ["separate", str(song), str(twin), "-o", str(tmp_path / "out"), "--model", "identity"]
    assert cli.main(argv) == 2
