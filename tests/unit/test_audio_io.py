"""Reading, writing, resampling and channel handling of audio files, and their error messages."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from stemkit.audio import (
    ClippingWarning,
    audio_info,
    match_channels,
    read_audio,
    resample,
    write_audio,
)
from stemkit.errors import AudioError

RATE = 44100
needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="ffmpeg/ffprobe not installed",
)


def signal(
    seconds: float = 1.0, channels: int = 2, seed: int = 0, rate: int = RATE, noise: float = 0.05
) -> np.ndarray:
    """Sines plus ``noise`` (its standard deviation), ``(channels, time)`` float32.

    Lossy codecs drop most of the noise, so their tests use pure sines.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    rows = [
        0.5 * np.sin(2 * np.pi * (220 + 110 * c) * t) + noise * rng.standard_normal(t.size)
        for c in range(channels)
    ]
    return np.stack(rows).astype(np.float32)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    n = min(reference.shape[-1], estimate.shape[-1])
    error = reference[..., :n] - estimate[..., :n]
    return float(10 * np.log10(np.sum(reference[..., :n] ** 2) / np.sum(error**2)))


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extension", "subtype", "tolerance"),
    [
        (".wav", "PCM_16", 2.0**-15),
        (".wav", "PCM_24", 2.0**-23),
        (".wav", "FLOAT", 0.0),
        (".flac", "PCM_16", 2.0**-15),
        (".flac", "PCM_24", 2.0**-23),
    ],
)
def test_round_trip_is_exact_within_quantisation(
    tmp_path: Path, extension: str, subtype: str, tolerance: float
) -> None:
    audio = signal()
    path = write_audio(tmp_path / f"x{extension}", torch.from_numpy(audio), RATE, subtype=subtype)
    back, rate = read_audio(path)
    assert rate == RATE
    assert back.dtype == torch.float32
    assert back.shape == audio.shape
    assert np.abs(back.numpy() - audio).max() <= tolerance
    info = audio_info(path)
    assert (info.frames, info.sample_rate, info.channels) == (RATE, RATE, 2)
    assert info.duration == pytest.approx(1.0)
    assert info.format == extension[1:].upper()


@pytest.mark.parametrize(("extension", "subtype"), [(".ogg", "VORBIS"), (".mp3", "MPEG_LAYER_III")])
def test_lossy_formats_read_back_close(tmp_path: Path, extension: str, subtype: str) -> None:
    audio = signal(noise=0.0)
    path = tmp_path / f"x{extension}"
    sf.write(path, audio.T, RATE, subtype=subtype)
    back, rate = read_audio(path)
    assert rate == RATE and back.shape[0] == 2
    assert abs(back.shape[1] - audio.shape[1]) <= 2048
    assert snr_db(audio, back.numpy()) > 30  # measured 40 dB (ogg) and 41 dB (mp3)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True)


@needs_ffmpeg
def test_m4a_decodes_with_container_length(tmp_path: Path) -> None:
    audio = signal(noise=0.0)
    sf.write(tmp_path / "x.wav", audio.T, RATE, subtype="FLOAT")
    _ffmpeg("-i", str(tmp_path / "x.wav"), "-c:a", "aac", "-b:a", "192k", str(tmp_path / "x.m4a"))
    info = audio_info(tmp_path / "x.m4a")
    assert (info.frames, info.sample_rate, info.channels, info.format) == (RATE, RATE, 2, "aac")
    back, rate = read_audio(tmp_path / "x.m4a")
    assert rate == RATE
    assert back.shape == audio.shape  # encoder padding is dropped
    assert snr_db(audio, back.numpy()) > 20  # measured 27.6 dB (ffmpeg aac, 192k)
    excerpt, _ = read_audio(tmp_path / "x.m4a", start=1234, frames=5000)
    assert torch.equal(excerpt, back[:, 1234:6234])


@needs_ffmpeg
def test_stem_mp4_streams_are_selectable(tmp_path: Path) -> None:
    low = signal(channels=1, noise=0.0)
    high = np.sin(2 * np.pi * 1000.0 * np.arange(RATE) / RATE)[None].astype(np.float32) * 0.5
    for name, audio in (("low", low), ("high", high)):
        sf.write(tmp_path / f"{name}.wav", audio.T, RATE, subtype="FLOAT")
    target = tmp_path / "song.stem.mp4"
    _ffmpeg(
        "-i", str(tmp_path / "low.wav"), "-i", str(tmp_path / "high.wav"),
        "-map", "0", "-map", "1", "-c:a", "aac", "-b:a", "192k", str(target),
    )  # fmt: skip
    first, _ = read_audio(target, channels=1)
    second, _ = read_audio(target, channels=1, stream=1)
    assert snr_db(low, first.numpy()) > 20 and snr_db(high, second.numpy()) > 20
    assert audio_info(target, stream=1).channels == 1
    with pytest.raises(AudioError, match="no audio stream 2; it has 2"):
        read_audio(target, stream=2)


# --- conversions -----------------------------------------------------------------------


def test_resampling_keeps_frequency_and_length_ratio(tmp_path: Path) -> None:
    t = np.arange(RATE) / RATE
    sine = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    sf.write(tmp_path / "sine.wav", sine, RATE, subtype="FLOAT")
    audio, rate = read_audio(tmp_path / "sine.wav", sample_rate=16000, channels=1)
    assert rate == 16000
    assert abs(audio.shape[1] - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(audio[0].numpy()))
    peak_hz = np.argmax(spectrum) * 16000 / audio.shape[1]
    assert peak_hz == pytest.approx(1000.0, abs=1.0)
    # The amplitude survives too (no gain change from the filter in its pass band).
    assert float(audio[0, 1000:-1000].abs().max()) == pytest.approx(0.5, abs=0.01)


def test_resample_function_is_identity_at_equal_rates() -> None:
    audio = torch.randn(2, 100)
    assert torch.equal(resample(audio, 8000, 8000), audio)
    assert resample(audio, 8000, 16000).shape == (2, 200)
    with pytest.raises(ValueError, match="positive"):
        resample(audio, 0, 16000)


def test_mono_is_copied_to_stereo(tmp_path: Path) -> None:
    mono = signal(channels=1)
    sf.write(tmp_path / "mono.wav", mono.T, RATE, subtype="FLOAT")
    stereo, _ = read_audio(tmp_path / "mono.wav")
    assert stereo.shape == (2, RATE)
    assert torch.equal(stereo[0], torch.from_numpy(mono[0]))
    assert torch.equal(stereo[1], stereo[0])
    kept, _ = read_audio(tmp_path / "mono.wav", channels=None)
    assert kept.shape == (1, RATE)


def test_six_channels_need_downmix(tmp_path: Path) -> None:
    audio = signal(0.2, channels=6)
    sf.write(tmp_path / "surround.wav", audio.T, RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"6 channels but 2 are expected; pass downmix=True"):
        read_audio(tmp_path / "surround.wav")
    mixed, _ = read_audio(tmp_path / "surround.wav", downmix=True)
    assert mixed.shape == (2, audio.shape[1])
    np.testing.assert_allclose(mixed[0].numpy(), audio.mean(axis=0), atol=1e-6)
    assert torch.equal(mixed[0], mixed[1])
    mono, _ = read_audio(tmp_path / "surround.wav", channels=1, downmix=True)
    assert torch.equal(mono[0], mixed[0])


def test_stereo_cannot_become_four_channels() -> None:
    with pytest.raises(ValueError, match="cannot turn 2 channels into 4"):
        match_channels(torch.zeros(2, 10), 4)


# --- excerpts ------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", [".wav", ".flac", ".mp3"])
def test_seek_read_equals_slice_of_full_read(tmp_path: Path, extension: str) -> None:
    path = tmp_path / f"x{extension}"
    sf.write(path, signal(2.0).T, RATE)
    full, _ = read_audio(path)
    for start in (0, 1, 12345, 50000):
        excerpt, _ = read_audio(path, start=start, frames=4000)
        assert torch.equal(excerpt, full[:, start : start + 4000]), start
    tail, _ = read_audio(path, start=full.shape[1] - 10, frames=100)
    assert torch.equal(tail, full[:, -10:])  # cut at the end of the file


def test_start_past_end_is_an_error(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "x.wav", signal(0.1), RATE)
    with pytest.raises(AudioError, match="past the end"):
        read_audio(path, start=RATE)
    with pytest.raises(ValueError):
        read_audio(path, start=-1)


# --- bad input -----------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="no such file") as caught:
        read_audio(tmp_path / "absent.wav")
    assert caught.value.path == str(tmp_path / "absent.wav")


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty \(0 bytes\)"):
        read_audio(tmp_path / "empty.wav")


def test_file_with_zero_length_audio(tmp_path: Path) -> None:
    sf.write(tmp_path / "silent.wav", np.zeros((0, 2), dtype=np.float32), RATE)
    with pytest.raises(AudioError, match="zero length"):
        read_audio(tmp_path / "silent.wav")


def test_garbage_bytes_with_wav_name(tmp_path: Path) -> None:
    path = tmp_path / "fake.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioError, match="not a readable wav file; it may be corrupt"):
        read_audio(path)
    with pytest.raises(AudioError, match="not a readable"):
        audio_info(path)


def test_unknown_extension_lists_supported_ones(tmp_path: Path) -> None:
    path = tmp_path / "song.xyz"
    path.write_bytes(b"data")
    with pytest.raises(AudioError, match=r"unsupported extension '\.xyz'.*\.wav, \.flac"):
        read_audio(path)


def test_nan_samples_are_refused(tmp_path: Path) -> None:
    audio = signal(0.1)
    audio[1, 777] = np.nan
    sf.write(tmp_path / "nan.wav", audio.T, RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite samples \\(first at sample 777\\)"):
        read_audio(tmp_path / "nan.wav")


def test_folder_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(AudioError, match="folder"):
        read_audio(tmp_path / "dir.wav")


def test_missing_ffmpeg_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "song.m4a"
    path.write_bytes(b"not really aac")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(AudioError, match="needs the ffprobe program; install ffmpeg"):
        read_audio(path)


@needs_ffmpeg
def test_corrupt_m4a(tmp_path: Path) -> None:
    path = tmp_path / "song.m4a"
    path.write_bytes(np.random.default_rng(1).bytes(2048))
    with pytest.raises(AudioError, match="not a readable m4a file"):
        read_audio(path)


# --- writing -------------------------------------------------------------------------------


def test_write_refuses_nan_and_leaves_nothing(tmp_path: Path) -> None:
    audio = torch.zeros(2, 100)
    audio[0, 5] = float("inf")
    with pytest.raises(AudioError, match="NaN or infinite"):
        write_audio(tmp_path / "x.wav", audio, RATE)
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_unsupported_container_and_subtype(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"cannot write \.m4a; use \.wav, \.flac, \.mp3"):
        write_audio(tmp_path / "x.m4a", torch.zeros(2, 10), RATE)
    with pytest.raises(AudioError, match=r"use \.wav for FLOAT"):
        write_audio(tmp_path / "x.flac", torch.zeros(2, 10), RATE, subtype="FLOAT")


def test_clipping_warns_with_count(tmp_path: Path) -> None:
    audio = torch.zeros(1, 1000)
    audio[0, :10] = 1.5
    audio[0, 10:15] = -2.0
    with pytest.warns(ClippingWarning, match=r"clipped 15 of 1000 samples .*peak 2\.000"):
        write_audio(tmp_path / "loud.wav", audio, RATE)
    back, _ = read_audio(tmp_path / "loud.wav", channels=1)
    assert float(back.max()) == pytest.approx(1.0, abs=2**-15)
    assert float(back.min()) == -1.0


def test_clip_modes(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    audio = torch.tensor([[0.5, 2.0, -1.0]])
    write_audio(tmp_path / "clamped.wav", audio, RATE, clip="clamp", subtype="PCM_24")
    write_audio(tmp_path / "rescaled.wav", audio, RATE, clip="rescale", subtype="PCM_24")
    write_audio(tmp_path / "float.wav", audio, RATE, subtype="FLOAT")
    assert not [w for w in recwarn if issubclass(w.category, ClippingWarning)]
    clamped, _ = read_audio(tmp_path / "clamped.wav", channels=None)
    rescaled, _ = read_audio(tmp_path / "rescaled.wav", channels=None)
    as_float, _ = read_audio(tmp_path / "float.wav", channels=None)
    np.testing.assert_allclose(clamped[0], [0.5, 1.0, -1.0], atol=2**-23)
    np.testing.assert_allclose(rescaled[0], [0.25, 1.0, -0.5], atol=2**-23)
    assert torch.equal(as_float, audio)  # float keeps values beyond full scale


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.wav"
    write_audio(target, torch.full((2, 100), 0.25), RATE)
    before = target.read_bytes()

    def crash(file: str, *args: object, **kwargs: object) -> None:
        Path(file).write_bytes(b"RIFF half")  # a partial file...
        raise KeyboardInterrupt  # ...then the process is interrupted

    monkeypatch.setattr(sf, "write", crash)
    with pytest.raises(KeyboardInterrupt):
        write_audio(target, torch.zeros(2, 100), RATE)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.wav"]
