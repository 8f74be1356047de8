"""``stemkit separate`` keeps its output trustworthy on any machine.

Each test checks the clear error or the correct result, that nothing outside the output was
touched, and that no partial output is left behind. The command runs in-process through
``stemkit.cli.main.main`` with the ``identity`` model; only kills and concurrent runs use
subprocesses (a small driver script, written here, that slows one step down).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

import stemkit.artifacts
from stemkit.audio.blocks import BlockWriter
from stemkit.cli import main as cli
from stemkit.outputs import MARKER

RATE = 44100
SECONDS = 1.0


@pytest.fixture(autouse=True)
def only_separate(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only this subcommand is under test; the parser then does not depend on the others.
    monkeypatch.setattr(cli, "COMMANDS", ("separate",))


@pytest.fixture
def make_song(make_stems: Callable[..., np.ndarray]) -> Callable[..., Path]:
    """Writes a short stereo float wav at the given path (seeded, distinct per seed)."""

    def make(path: Path, seed: int = 3) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        mixture = make_stems(SECONDS, seed=seed).sum(axis=0).T
        sf.write(path, mixture, RATE, subtype="FLOAT", format="WAV")
        return path

    return make


@pytest.fixture
def model_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every model the command loads: a bad output must fail before the first."""
    calls: list[str] = []
    real = stemkit.artifacts.load_model

    def load(spec: str = "default") -> Any:
        calls.append(spec)
        return real(spec)

    monkeypatch.setattr(stemkit.artifacts, "load_model", load)
    return calls


def snapshot(base: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[Any, ...]]:
    """Every path under ``base`` (but those under ``skip``) with its type, size, time and hash."""
    state: dict[str, tuple[Any, ...]] = {}
    for path in sorted(base.rglob("*")):
        if any(path == s or s in path.parents for s in skip):
            continue
        info = path.lstat()
        if path.is_symlink():
            state[str(path)] = ("link", os.readlink(path))
        elif path.is_dir():
            state[str(path)] = ("dir",)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            state[str(path)] = ("file", info.st_size, info.st_mtime_ns, digest)
    return state


def leftovers(folder: Path) -> list[str]:
    """Hidden files and folders under ``folder`` other than stemkit's markers: partial
    folders, temporary files, locks."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if p.name != MARKER)


def assert_complete(folder: Path, song: Path) -> None:
    """``folder`` holds the identity model's stem of ``song``, exactly, and a marker naming it."""
    assert sorted(p.name for p in folder.iterdir()) == sorted([MARKER, "mixture.wav"])
    marker = json.loads((folder / MARKER).read_text())
    assert marker["written_by"] == "stemkit" and marker["song"] == os.path.abspath(song)
    assert marker["stems"] == ["mixture"] and marker["files"] == ["mixture.wav"]
    written, _ = sf.read(folder / "mixture.wav", dtype="float32")
    original, _ = sf.read(song, dtype="float32")
    assert np.array_equal(written, original)


def separate(*argv: str | Path) -> int:
    return cli.main(["separate", *map(str, argv), "--model", "identity", "--bits", "32", "-q"])


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("stemkit: error:")]


# --- 1. --force replaces only stemkit's own folders, never anything at or above -o ----------


def test_force_refuses_a_folder_not_written_by_stemkit(
    tmp_path: Path, make_song: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # `stemkit separate data.wav -o . --force` must not delete an unrelated data/ folder.
    song = make_song(tmp_path / "data.wav")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "thesis.tex").write_text("years of work")
    before = snapshot(tmp_path)
    assert separate(song, "-o", tmp_path, "--force") == 2
    assert snapshot(tmp_path) == before
    [line] = error_lines(capsys.readouterr().err)
    assert f"{tmp_path / 'data'}: not replaced: it was not written by stemkit" in line


def test_force_replaces_a_stemkit_folder(
    tmp_path: Path, make_song: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    first = make_song(tmp_path / "a" / "song.wav", seed=1)
    second = make_song(tmp_path / "b" / "song.wav", seed=2)
    assert separate(first, "-o", out) == 0
    before = snapshot(tmp_path, skip=(out,))
    assert separate(second, "-o", out) == 2  # exists: refused without --force
    assert separate(second, "-o", out, "--force") == 0
    assert_complete(out / "song", second)
    assert snapshot(tmp_path, skip=(out,)) == before
    assert leftovers(out) == []


@pytest.mark.parametrize("name", ["..wav", "...wav", ".stem.mp4", ".stemkit-x.wav"])
def test_song_names_that_escape_the_output_are_refused(
    tmp_path: Path, make_song: Callable[..., Path], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # "..wav" would name the output root itself, "...wav" its parent, ".stem.mp4" an empty name.
    out = tmp_path / "a" / "out"
    make_song(tmp_path / "a" / "out" / "kept" / "mixture.wav")
    (out / "kept" / MARKER).write_text('{"written_by": "stemkit"}')
    song = make_song(tmp_path / "songs" / name)
    before = snapshot(tmp_path)
    assert separate(song, "-o", out, "--force") == 2
    assert snapshot(tmp_path) == before
    [line] = error_lines(capsys.readouterr().err)
    assert str(song) in line and ("cannot name an output folder" in line or "reserved" in line)


def test_force_refuses_a_symlink_destination(
    tmp_path: Path, make_song: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / MARKER).write_text('{"written_by": "stemkit"}')
    (elsewhere / "precious.wav").write_bytes(b"not to be deleted")
    out = tmp_path / "out"
    out.mkdir()
    (out / "song").symlink_to(elsewhere, target_is_directory=True)
    song = make_song(tmp_path / "song.wav")
    before = snapshot(tmp_path)
    assert separate(song, "-o", out, "--force") == 2
    assert snapshot(tmp_path) == before
    [line] = error_lines(capsys.readouterr().err)
    assert f"{out / 'song'}: is a symbolic link" in line


# --- 2. concurrent runs into the same output never replace each other silently ------------

DRIVER = """
import sys, time
from pathlib import Path

import stemkit.outputs
from stemkit.audio.blocks import BlockWriter

mode, flag, other = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
real_folder, real_close = stemkit.outputs.write_stem_folder, BlockWriter.close


def meet_then_write(*args, **kwargs):
    # Both runs have passed their start-up checks; meet before either writes.
    flag.touch()
    deadline = time.monotonic() + 120
    while not other.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return real_folder(*args, **kwargs)


def close_then_hang(self):
    # One stem is written into the partial folder; then wait to be killed.
    written = real_close(self)
    flag.touch()
    time.sleep(600)
    return written


if mode == "meet":
    stemkit.outputs.write_stem_folder = meet_then_write
else:
    BlockWriter.close = close_then_hang

from stemkit.cli.main import main

sys.exit(main(["separate", *sys.argv[4:], "--model", "identity", "--bits", "32", "-q"]))
"""


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Starts ``stemkit separate`` in a subprocess, slowed down as ``mode`` says."""
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started: list[subprocess.Popen[str]] = []

    def start(mode: str, flag: Path, other: Path, *argv: str | Path) -> subprocess.Popen[str]:
        command = [sys.executable, str(script), mode, str(flag), str(other), *map(str, argv)]
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"driver exited early: {process.communicate()}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_concurrent_runs_do_not_replace_each_other(
    tmp_path: Path, make_song: Callable[..., Path], driver: Callable[..., subprocess.Popen[str]]
) -> None:
    out = tmp_path / "out"
    songs = [make_song(tmp_path / f"take{i}" / "song.wav", seed=i) for i in (1, 2)]
    flags = [tmp_path / "ready-1", tmp_path / "ready-2"]
    runs = [
        driver("meet", flags[0], flags[1], songs[0], "-o", out),
        driver("meet", flags[1], flags[0], songs[1], "-o", out),
    ]
    results = [run.communicate(timeout=300) for run in runs]
    codes = [run.returncode for run in runs]
    assert sorted(codes) == [0, 1], results
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    [line] = error_lines(results[loser][1])
    assert f"{out / 'song'}: already exists" in line
    assert "1 of 1 song(s) failed" in results[loser][1]
    assert_complete(out / "song", songs[winner])
    assert sorted(p.name for p in out.iterdir()) == ["song"]
    assert leftovers(out) == []


# --- 3. a killed run's partial folder is cleaned by the next run, a live one's is not -----


def kill_while_writing(
    driver: Callable[..., subprocess.Popen[str]], flag: Path, song: Path, out: Path
) -> subprocess.Popen[str]:
    process = driver("hang", flag, flag, song, "-o", out)
    wait_for(flag, process)
    return process


def test_killed_run_leftover_is_cleaned_by_the_next_run(
    tmp_path: Path,
    make_song: Callable[..., Path],
    driver: Callable[..., subprocess.Popen[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    song = make_song(tmp_path / "songs" / "song.wav")
    process = kill_while_writing(driver, tmp_path / "writing", song, out)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert leftovers(out)  # the killed run's partial folder
    assert not (out / "song").exists()
    before = snapshot(tmp_path, skip=(out,))
    assert separate(song, "-o", out) == 0
    assert leftovers(out) == []
    assert_complete(out / "song", song)
    assert snapshot(tmp_path, skip=(out,)) == before
    assert "left by an interrupted run" in capsys.readouterr().err


def test_live_runs_partial_is_not_touched(
    tmp_path: Path, make_song: Callable[..., Path], driver: Callable[..., subprocess.Popen[str]]
) -> None:
    out = tmp_path / "out"
    slow = make_song(tmp_path / "songs" / "slow.wav", seed=1)
    quick = make_song(tmp_path / "songs" / "quick.wav", seed=2)
    process = kill_while_writing(driver, tmp_path / "writing", slow, out)
    live = snapshot(out)
    assert leftovers(out)  # its partial folder
    assert separate(quick, "-o", out) == 0  # another run into the same root meanwhile
    assert snapshot(out, skip=(out / "quick",)) == live  # the live run's work is untouched
    assert_complete(out / "quick", quick)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert separate(slow, "-o", out) == 0  # now its owner is gone: cleaned
    assert leftovers(out) == []
    assert_complete(out / "slow", slow)


def test_folder_moved_aside_by_a_killed_force_run_is_restored(
    tmp_path: Path, make_song: Callable[..., Path]
) -> None:
    # A run killed between moving the old folder aside and renaming the new one into place
    # leaves the song without a folder: the next run puts the old one back.
    out = tmp_path / "out"
    song = make_song(tmp_path / "songs" / "song.wav", seed=1)
    other = make_song(tmp_path / "songs" / "other.wav", seed=2)
    assert separate(song, "-o", out) == 0
    key = hashlib.sha256(b"song").hexdigest()[:16]
    (out / "song").rename(out / f".stemkit-{key}-4194304-0123abcd.old")
    assert separate(other, "-o", out) == 0
    assert leftovers(out) == []
    assert_complete(out / "song", song)
    assert_complete(out / "other", other)


# --- 4. file-system errors: one line, early where possible, and the batch goes on ---------


@pytest.fixture
def refuse_under(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path, int], None]:
    """Makes every mkdir and open under a folder fail with an errno, like a read-only disk
    (tests run as root, who ignores permission bits)."""

    def refuse(folder: Path, code: int) -> None:
        for name in ("mkdir", "open"):
            real = getattr(os, name)

            def guarded(path: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
                if str(os.fspath(path)).startswith(str(folder)):
                    raise OSError(code, os.strerror(code), str(path))
                return _real(path, *args, **kwargs)

            monkeypatch.setattr(os, name, guarded)

    return refuse


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_unwritable_output_fails_before_the_model_loads(
    tmp_path: Path,
    make_song: Callable[..., Path],
    refuse_under: Callable[[Path, int], None],
    model_loads: list[str],
    code: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    song = make_song(tmp_path / "song.wav")
    before = snapshot(tmp_path)
    refuse_under(out, code)
    assert separate(song, "-o", out) == 2
    assert model_loads == []
    assert snapshot(tmp_path) == before
    err = capsys.readouterr().err
    assert err.strip() == f"stemkit: error: {out}: {os.strerror(code).lower()}; " + (
        "choose an output folder on a writable disk"
        if code == errno.EROFS
        else "choose an output folder you can write to"
    )


def test_output_under_a_file_fails_before_the_model_loads(
    tmp_path: Path,
    make_song: Callable[..., Path],
    model_loads: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("a file, not a folder")
    song = make_song(tmp_path / "song.wav")
    before = snapshot(tmp_path)
    assert separate(song, "-o", notes / "out") == 2
    assert model_loads == []
    assert snapshot(tmp_path) == before
    [line] = capsys.readouterr().err.splitlines()
    assert line == f"stemkit: error: {notes / 'out'}: {notes} is a file, not a folder; " + (
        "choose another output folder"
    )


def test_output_name_too_long_fails_before_the_model_loads(
    tmp_path: Path,
    make_song: Callable[..., Path],
    model_loads: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / ("o" * 300)  # a real name over NAME_MAX (255 bytes)
    song = make_song(tmp_path / "song.wav")
    before = snapshot(tmp_path)
    assert separate(song, "-o", out) == 2
    assert model_loads == []
    assert snapshot(tmp_path) == before
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"stemkit: error: {out}: file name too long")


def test_long_song_name_is_written(tmp_path: Path, make_song: Callable[..., Path]) -> None:
    # 250 characters is a valid name, but not with a ".partial-XXXX" suffix added to it.
    song = make_song(tmp_path / "songs" / ("s" * 250 + ".wav"))
    out = tmp_path / "out"
    before = snapshot(tmp_path, skip=(out,))
    assert separate(song, "-o", out) == 0
    assert_complete(out / ("s" * 250), song)
    assert leftovers(out) == []
    assert snapshot(tmp_path, skip=(out,)) == before


@pytest.fixture
def failing_write(monkeypatch: pytest.MonkeyPatch) -> Callable[[int, set[int]], None]:
    """Makes the stem files number ``calls`` (counted over the run) raise ``OSError(code)``
    on their first block (raw, as any file-system call may), after creating a half-written
    file."""

    def fail(code: int, calls: set[int]) -> None:
        real = BlockWriter.write
        seen: list[Path] = []

        def write(self: BlockWriter, block: Any) -> None:
            if self.path not in seen:
                seen.append(self.path)
                if len(seen) in calls:
                    self.path.write_bytes(b"RIFF")
                    raise OSError(code, os.strerror(code), str(self.path))
            real(self, block)

        monkeypatch.setattr(BlockWriter, "write", write)

    return fail


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.ENAMETOOLONG, errno.EIO])
def test_write_error_is_one_line_and_leaves_nothing(
    tmp_path: Path,
    make_song: Callable[..., Path],
    failing_write: Callable[[int, set[int]], None],
    code: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    song = make_song(tmp_path / "song.wav")
    out = tmp_path / "out"
    before = snapshot(tmp_path, skip=(out,))
    failing_write(code, {1})
    assert separate(song, "-o", out) == 1
    assert snapshot(tmp_path, skip=(out,)) == before
    assert list(out.iterdir()) == []
    err = capsys.readouterr().err
    [line] = error_lines(err)
    reason = os.strerror(code).lower()
    assert line.startswith(f"stemkit: error: {out / 'song' / 'mixture.wav'}: {reason}")
    assert "Traceback" not in err


def test_disk_full_in_the_encoder_is_reported_as_such(
    tmp_path: Path,
    make_song: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The real writer (temporary file, encoder) underneath; the disk fills during the encode.
    def full(self: sf.SoundFile, data: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)

    song = make_song(tmp_path / "song.wav")
    monkeypatch.setattr(sf.SoundFile, "write", full)
    out = tmp_path / "out"
    before = snapshot(tmp_path, skip=(out,))
    assert separate(song, "-o", out) == 1
    assert snapshot(tmp_path, skip=(out,)) == before
    assert list(out.iterdir()) == []
    [line] = error_lines(capsys.readouterr().err)
    assert line == (
        f"stemkit: error: {out / 'song' / 'mixture.wav'}: no space left on device; "
        "free some space or choose another output folder"
    )


def test_batch_goes_on_after_a_failed_song(
    tmp_path: Path,
    make_song: Callable[..., Path],
    failing_write: Callable[[int, set[int]], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    songs = [make_song(tmp_path / "songs" / f"song{i}.wav", seed=i) for i in (1, 2, 3)]
    out = tmp_path / "out"
    before = snapshot(tmp_path, skip=(out,))
    failing_write(errno.ENOSPC, {2})  # the identity model writes one stem per song
    assert separate(*songs, "-o", out) == 1
    assert_complete(out / "song1", songs[0])
    assert_complete(out / "song3", songs[2])
    assert sorted(p.name for p in out.iterdir()) == ["song1", "song3"]
    assert leftovers(out) == []
    assert snapshot(tmp_path, skip=(out,)) == before
    err = capsys.readouterr().err
    [line] = error_lines(err)
    assert line.startswith(f"stemkit: error: {out / 'song2' / 'mixture.wav'}: no space left")
    assert f"1 of 3 song(s) failed: {songs[1]}" in err
