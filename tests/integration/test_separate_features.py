"""``stemkit separate`` as a musician uses it: refused untrained models, the model line,
karaoke (``--two-stems``), lossy formats, ffmpeg-only inputs, folders resumed after a kill
(``--skip-existing``) and device choice. Songs are generated here; nothing touches the network.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import stemkit
import stemkit.audio.io
from stemkit import models
from stemkit.artifacts.checkpoint import save_checkpoint
from stemkit.cli import main as cli
from stemkit.errors import StemkitError
from stemkit.outputs import MARKER
from stemkit.runtime import resolve_device

RATE = 44100
SECONDS = 2
HAS_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


@pytest.fixture(autouse=True)
def only_separate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMANDS", ("separate",))


@pytest.fixture
def make_song(make_stems: Callable[..., np.ndarray]) -> Callable[..., Path]:
    """Writes a stereo song (the sum of four toy stems) at ``path``; float wav by default."""

    def make(path: Path, seed: int = 3, seconds: float = SECONDS, **write: object) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        options = {"subtype": "FLOAT"} if path.suffix == ".wav" else {}
        options.update(write)  # type: ignore[arg-type]
        sf.write(path, make_stems(seconds, seed=seed).sum(axis=0).T, RATE, **options)
        return path

    return make


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("stemkit: error:")]


# -- 1. no silent garbage -------------------------------------------------------------------


def test_untrained_architecture_is_refused_and_allowed_with_random_weights(
    tmp_path: Path, make_song: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    song = make_song(tmp_path / "song.wav")
    out = tmp_path / "out"
    assert cli.main(["separate", str(song), "--model", "xumx", "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    (line,) = error_lines(err)
    assert "--model xumx has no trained weights" in line
    assert "bundled model (default)" in line and "checkpoint file" in line
    assert "stemkit models import-openunmix" in line and "--random-weights" in line
    assert not out.exists() or list(out.iterdir()) == []

    argv = ["separate", str(song), "--model", "umx", "--random-weights", "-o", str(out)]
    assert cli.main(argv) == 0
    assert "RANDOM weights" in capsys.readouterr().err
    assert (out / "song" / "vocals.wav").is_file()


def test_the_bundled_models_line_says_generated_songs(
    tmp_path: Path, make_song: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    song = make_song(tmp_path / "song.wav")
    assert cli.main(["separate", str(song), "-o", str(tmp_path / "out")]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("stemkit: model: default (")
    assert "trained on generated songs only; expect weak results on real music" in first


def test_a_checkpoints_line_names_its_training_data(
    tmp_path: Path, make_song: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    song = make_song(tmp_path / "song.wav")
    model = models.build("identity", sources=["a", "b"])
    checkpoint = save_checkpoint(
        tmp_path / "mine.pt",
        model,  # type: ignore[arg-type]
        config={"data": {"root": "data/musdb18hq", "format": "musdb_hq"}},
        provenance={"data_fingerprint": "0123abcd", "git_commit": "feedface" * 5},
    )
    argv = ["separate", str(song), "--model", str(checkpoint), "-o", str(tmp_path / "out")]
    assert cli.main(argv) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert "trained on data/musdb18hq, musdb_hq layout" in first
    assert "data fingerprint 0123abcd" in first and "code feedfacefe" in first


def test_each_song_records_what_separating_it_cost(
    tmp_path: Path, make_song: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """In the song's marker: the audio's duration exactly and the Green Algorithms energy of
    the measured CPU time and memory; on stderr: the batch's total."""
    songs = [make_song(tmp_path / f"s{i}.wav", seed=i) for i in (1, 2)]
    out = tmp_path / "out"
    argv = ["separate", *map(str, songs), "-o", str(out), "--model", "identity"]
    assert cli.main(argv) == 0
    energies = []
    for song in songs:
        cost = json.loads((out / song.stem / MARKER).read_text())["cost"]
        assert cost["audio_seconds"] == SECONDS
        c = cost["constants"]
        joules = (
            cost["cpu_seconds"] * c["watts_per_core"]
            + cost["memory_gb"] * cost["seconds"] * c["watts_per_gb_memory"]
        ) * c["pue"]
        assert cost["energy_kwh"] == pytest.approx(joules / 3.6e6, rel=1e-12)
        assert cost["seconds"] > 0 and cost["memory_gb"] > 0
        energies.append(cost["energy_kwh"])
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "real time" in x]
    assert line.startswith(f"stemkit: 2 song(s), {2 * SECONDS}s of audio in ")
    assert f"{sum(energies) * 1000:.2f} Wh" in line


# -- 2. karaoke -----------------------------------------------------------------------------


def test_two_stems_add_up_to_the_mixture(tmp_path: Path, make_song: Callable[..., Path]) -> None:
    song = make_song(tmp_path / "song.wav")
    out = tmp_path / "out"
    argv = ["separate", str(song), "-o", str(out), "--two-stems", "vocals", "--bits", "32", "-q"]
    assert cli.main(argv) == 0
    folder = out / "song"
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "no_vocals.wav", "vocals.wav"]
    assert json.loads((folder / MARKER).read_text())["stems"] == ["vocals", "no_vocals"]
    vocals, _ = sf.read(folder / "vocals.wav", dtype="float32")
    rest, _ = sf.read(folder / "no_vocals.wav", dtype="float32")
    mixture, _ = sf.read(song, dtype="float32")
    assert np.abs(vocals).max() > 1e-3  # a real stem, not silence
    assert np.abs(vocals + rest - mixture).max() <= 1e-6


def test_two_stems_of_an_unknown_stem_is_refused(
    tmp_path: Path, make_song: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    song = make_song(tmp_path / "song.wav")
    argv = ["separate", str(song), "-o", str(tmp_path / "out"), "--two-stems", "kazoo", "-q"]
    assert cli.main(argv) == 2
    assert "this model gives vocals, drums, bass, other" in capsys.readouterr().err


# -- 3. formats -----------------------------------------------------------------------------

#: --format → (decoded rate, allowed length difference in samples). libsndfile reads the
#: LAME/Xing gapless header of mp3 and the pre-skip and final granule position of Ogg, so the
#: lengths come back exact; a decoder ignoring them would add up to one mp3 frame (1152
#: samples plus the encoder delay) or trim to whole Opus frames (960 samples at 48 kHz).
#: Opus is written at 48 kHz, so its length is the song's resampled: 2 s = 96000 samples.
FORMAT_CASES = {
    "flac": (RATE, 0),
    "mp3": (RATE, 0),
    "ogg": (RATE, 0),
    "opus": (48000, 0),
}


@pytest.mark.parametrize("fmt", sorted(FORMAT_CASES))
def test_formats_decode_back_with_the_right_length_and_rate(
    fmt: str, tmp_path: Path, make_song: Callable[..., Path]
) -> None:
    song = make_song(tmp_path / "song.wav")
    out = tmp_path / "out"
    extra = ["--mp3-bitrate", "128"] if fmt == "mp3" else []
    argv = ["separate", str(song), "-o", str(out), "--model", "identity", "--format", fmt]
    assert cli.main([*argv, *extra, "-q"]) == 0
    path = out / "song" / f"mixture.{fmt}"
    rate, slack = FORMAT_CASES[fmt]
    decoded, decoded_rate = sf.read(path, dtype="float32")
    assert decoded_rate == rate
    assert abs(decoded.shape[0] - SECONDS * rate) <= slack
    assert decoded.shape[1] == 2
    if rate == RATE:  # the identity model: the song itself, through the codec
        original, _ = sf.read(song, dtype="float32")
        n = min(len(original), len(decoded))
        correlation = np.corrcoef(original[:n, 0], decoded[:n, 0])[0, 1]
        assert correlation > 0.95, correlation
    if fmt == "mp3" and HAS_FFMPEG:
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=bit_rate", "-of", "csv=p=0", path],
            capture_output=True,
            text=True,
            check=True,
        )
        assert probe.stdout.strip() == "128000"


@pytest.mark.skipif(not HAS_FFMPEG, reason="needs the ffmpeg program")
def test_mp3_falls_back_to_ffmpeg_when_libsndfile_cannot_write_it(
    tmp_path: Path, make_song: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stemkit.audio.io, "_sndfile_writes_mp3", lambda: False)
    song = make_song(tmp_path / "song.wav")
    argv = ["separate", str(song), "-o", str(tmp_path / "out"), "--model", "identity"]
    assert cli.main([*argv, "--format", "mp3", "-q"]) == 0
    info = sf.info(tmp_path / "out" / "song" / "mixture.mp3")
    assert (info.samplerate, info.channels, info.frames) == (RATE, 2, SECONDS * RATE)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--format", "mp3", "--bits", "24"], "--bits sets the sample size of wav and flac"),
        (["--mp3-bitrate", "128"], "--bitrate applies to --format mp3 and opus only"),
        (["--format", "mp3", "--bitrate", "100"], "--bitrate 100: mp3 takes 32, 40"),
        (["--format", "opus", "--bitrate", "600"], "--bitrate 600: opus takes 6 to 512 kbit/s"),
        (["--sample-rate", "fast"], "--sample-rate 'fast'"),
    ],
)
def test_format_options_that_do_not_fit_are_refused(
    extra: list[str],
    message: str,
    tmp_path: Path,
    make_song: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    song = make_song(tmp_path / "song.wav")
    argv = ["separate", str(song), "-o", str(tmp_path / "out"), "--model", "identity", "-q"]
    assert cli.main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_opus_bitrate_sets_the_size(tmp_path: Path, make_song: Callable[..., Path]) -> None:
    """libopus is variable-rate: on the toy song (noise-like, so it needs every bit it is
    given) the file's average rate lands near the target; a quarter either way leaves room for
    the Ogg pages and another libopus version's rate control, and still tells 64 from 192."""
    song = make_song(tmp_path / "song.wav")
    argv = ["separate", str(song), "--model", "identity", "--format", "opus", "-q"]
    for kbps in (64, 192):
        out = tmp_path / f"out{kbps}"
        assert cli.main([*argv, "-o", str(out), "--bitrate", str(kbps)]) == 0
        size = (out / "song" / "mixture.opus").stat().st_size
        achieved = size * 8 / SECONDS / 1000
        assert 0.75 * kbps <= achieved <= 1.25 * kbps, (kbps, achieved)


def test_sample_rate_in_hz(tmp_path: Path, make_song: Callable[..., Path]) -> None:
    song = make_song(tmp_path / "song.wav")
    argv = ["separate", str(song), "-o", str(tmp_path / "out"), "--model", "identity", "-q"]
    assert cli.main([*argv, "--sample-rate", "16000"]) == 0
    info = sf.info(tmp_path / "out" / "song" / "mixture.wav")
    assert (info.samplerate, info.frames) == (16000, SECONDS * 16000)


def test_aiff_input_is_separated_exactly(tmp_path: Path, make_song: Callable[..., Path]) -> None:
    song = make_song(tmp_path / "song.aiff", subtype="FLOAT")
    out = tmp_path / "out"
    argv = ["separate", str(song), "-o", str(out), "--model", "identity", "--bits", "32", "-q"]
    assert cli.main(argv) == 0
    stem, rate = sf.read(out / "song" / "mixture.wav", dtype="float32")
    original, _ = sf.read(song, dtype="float32")
    assert rate == RATE and np.array_equal(stem, original)


@pytest.mark.skipif(not HAS_FFMPEG, reason="needs the ffmpeg program")
@pytest.mark.parametrize(
    ("name", "codec", "slack"),
    [
        # Windows Media Audio: only ffmpeg reads it; the decoder drops part of a last block.
        ("song.wma", ["-c:a", "wmav2"], 2048),
        # A wav holding mp3 data: libsndfile reads the header but not the codec, so the
        # ffmpeg fallback decodes it (with the mp3 encoder's delay and padding).
        ("mp3inside.wav", ["-c:a", "libmp3lame", "-f", "wav"], 2 * 1152),
    ],
)
def test_ffmpeg_only_inputs_are_separated(
    name: str, codec: list[str], slack: int, tmp_path: Path, make_song: Callable[..., Path]
) -> None:
    source = make_song(tmp_path / "source.wav")
    song = tmp_path / name
    command = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(source), *codec, str(song)]
    subprocess.run(command, check=True)
    out = tmp_path / "out"
    assert cli.main(["separate", str(song), "-o", str(out), "--model", "identity", "-q"]) == 0
    info = sf.info(out / Path(name).stem / "mixture.wav")
    assert (info.samplerate, info.channels) == (RATE, 2)
    assert abs(info.frames - SECONDS * RATE) <= slack


# -- 4. folders, globs and resume -------------------------------------------------------------


def test_folders_keep_their_subfolders_and_globs_are_expanded(
    tmp_path: Path, make_song: Callable[..., Path]
) -> None:
    album = tmp_path / "album"
    make_song(album / "cd1" / "01.wav", seed=1)
    make_song(album / "cd2" / "01.wav", seed=2)  # the same name in another subfolder
    make_song(album / "cd2" / "02.flac", seed=3)
    (album / "cover.jpg").write_bytes(b"\xff\xd8 not audio")
    (album / "notes.txt").write_text("not audio\n")
    out = tmp_path / "out"
    assert cli.main(["separate", str(album), "-o", str(out), "--model", "identity", "-q"]) == 0
    found = sorted(str(p.parent.relative_to(out)) for p in out.rglob(MARKER))
    assert found == ["cd1/01", "cd2/01", "cd2/02"]

    globbed = tmp_path / "globbed"
    pattern = str(album / "**" / "*.flac")
    assert cli.main(["separate", pattern, "-o", str(globbed), "--model", "identity", "-q"]) == 0
    assert sorted(str(p.parent.relative_to(globbed)) for p in globbed.rglob(MARKER)) == ["cd2/02"]


def test_filename_template_names_folders_and_files(
    tmp_path: Path, make_song: Callable[..., Path]
) -> None:
    song = make_song(tmp_path / "My Song.wav")
    out = tmp_path / "out"
    template = "{track} (stems)/{track} - {stem}.{ext}"
    argv = ["separate", str(song), "-o", str(out), "--model", "identity", "--format", "flac"]
    assert cli.main([*argv, "--filename", template, "-q"]) == 0
    folder = out / "My Song (stems)"
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "My Song - mixture.flac"]
    marker = json.loads((folder / MARKER).read_text())
    assert marker["files"] == ["My Song - mixture.flac"]
    # the same template resumes: the folder is recognised as complete
    assert cli.main([*argv, "--filename", template, "--skip-existing", "-q"]) == 0


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{track}_{stem}.{ext}", "a song's stems go in one folder"),
        ("{stem}/{track}.{ext}", "a song's stems go in one folder"),
        ("{track}/{stem}.wav", "needs {stem} and {ext}"),
        ("{track}/{track}.{ext}", "needs {stem} and {ext}"),
        ("{track}/x/{stem}.{ext}", "a song's stems go in one folder"),
        ("{track}/{stem}.{ext}{model}", "unknown placeholder(s) {model}"),
        ("{track/{stem}.{ext}", "file name template"),
        ("../{track}/{stem}.{ext}", "a song's stems go in one folder"),
    ],
)
def test_bad_filename_templates_are_refused_before_any_work(
    template: str,
    message: str,
    tmp_path: Path,
    make_song: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    song = make_song(tmp_path / "song.wav")
    out = tmp_path / "out"
    argv = ["separate", str(song), "-o", str(out), "--model", "identity", "-q"]
    assert cli.main([*argv, "--filename", template]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert message in line and repr(template) in line
    assert not out.exists()


def test_a_folder_without_audio_and_an_empty_glob_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    assert cli.main(["separate", str(tmp_path / "empty"), "-o", str(out), "-q"]) == 2
    assert "no audio files in this folder" in capsys.readouterr().err
    assert cli.main(["separate", str(tmp_path / "*.mp3"), "-o", str(out), "-q"]) == 2
    assert "matches no audio file" in capsys.readouterr().err
    assert not out.exists()


def test_killed_batch_resumes_with_skip_existing(
    tmp_path: Path, make_song: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    album = tmp_path / "album"
    count = 8
    for i in range(count):
        make_song(album / f"{i:02d}.wav", seed=i, seconds=3)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(stemkit.__file__).parents[1])}
    command = [sys.executable, "-m", "stemkit.cli.main", "separate", str(album), "-o", str(out)]
    # The bundled model, so that each song takes a moment: the run is killed right after it
    # reports its first finished song, long before the eighth.
    process = subprocess.Popen(
        [*command, "-q", "--threads", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.strip(), "the run finished no song"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    finished = sorted(p.parent for p in out.rglob(MARKER))
    assert 1 <= len(finished) < count, finished
    stamps = {p: p.stat().st_mtime_ns for folder in finished for p in folder.iterdir()}

    base = ["separate", str(album), "-o", str(out)]
    assert cli.main([*base, "-q"]) == 2  # without --skip-existing the finished ones are in the way
    assert "--skip-existing" in capsys.readouterr().err
    assert cli.main([*base, "--skip-existing"]) == 0
    err = capsys.readouterr().err
    assert f"skipping {len(finished)} song(s) already separated" in err
    left = count - len(finished)
    assert f"[{left}/{left}] separating" in err
    assert sorted(p.parent.name for p in out.rglob(MARKER)) == [f"{i:02d}" for i in range(count)]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished songs untouched
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # partial cleaned


def test_skip_existing_redoes_an_incomplete_folder_only_with_force(
    tmp_path: Path, make_song: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    song = make_song(tmp_path / "song.wav")
    out = tmp_path / "out"
    base = ["separate", str(song), "-o", str(out), "--model", "identity", "-q"]
    assert cli.main(base) == 0
    (out / "song" / "mixture.wav").unlink()  # no longer what its marker lists
    assert cli.main([*base, "--skip-existing"]) == 2
    assert "already exist" in capsys.readouterr().err
    assert cli.main([*base, "--skip-existing", "--force"]) == 0
    assert (out / "song" / "mixture.wav").is_file()


# -- 5. devices -------------------------------------------------------------------------------


@pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(),
    reason="auto picks the accelerator here",
)
def test_device_auto_resolves_to_cpu_here(
    tmp_path: Path, make_song: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    song = make_song(tmp_path / "song.wav")
    assert (
        cli.main(["separate", str(song), "-o", str(tmp_path / "out"), "--model", "identity"]) == 0
    )
    assert capsys.readouterr().err.splitlines()[0].endswith("; on cpu")


WRONG_DEVICES = [
    ("warp-drive", "is not a device"),
    ("cuda:-1", "is not a device"),
    ("meta", "stemkit does not run on meta"),
    ("cuda", "no CUDA device is available"),
    ("cuda:7", "no CUDA device is available"),
    ("mps", "MPS is not available"),
]


@pytest.mark.parametrize(("device", "message"), WRONG_DEVICES, ids=[d for d, _ in WRONG_DEVICES])
def test_wrong_devices_are_one_line(
    device: str,
    message: str,
    tmp_path: Path,
    make_song: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    if device.startswith("cuda") and "available" in message and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("MPS is available here")
    song = make_song(tmp_path / "song.wav")
    argv = ["separate", str(song), "-o", str(tmp_path / "out"), "--device", device]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"stemkit: error: --device {device!r}") or err.startswith(
        f"stemkit: error: --device {device}"
    )
    assert message in err
    assert not (tmp_path / "out").exists()


def test_a_cuda_index_out_of_range_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(StemkitError, match=r"has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_an_output_folder_inside_the_input_folder_is_not_searched(
    tmp_path: Path, make_song: Callable[..., Path]
) -> None:
    album = tmp_path / "album"
    make_song(album / "01.wav")
    out = album / "separated"
    base = ["separate", str(album), "-o", str(out), "--model", "identity", "-q"]
    assert cli.main(base) == 0
    # Run again: the stems written inside the album are not taken for songs.
    assert cli.main([*base, "--skip-existing"]) == 0
    assert sorted(str(p.parent.relative_to(out)) for p in out.rglob(MARKER)) == ["01"]
