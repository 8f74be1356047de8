"""``Separator.separate_file`` streams (decode, resample, separate, encode in blocks) and writes
the files the in-memory path writes: read the whole song, resample, ``separate``, resample back,
``write_audio``. Equal sample for sample for wav, flac, mp3 and opus; Ogg Vorbis's encoder
decides on the sizes it is given, so its streamed file is compared with a bound.

Errors half-way (a corrupt block, a full disk) leave no folder behind.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

import stemkit.inference.files
from stemkit.api import Separator, StemFiles, _at_rate
from stemkit.audio import read_audio, resample, write_audio
from stemkit.errors import AudioError
from stemkit.inference import separate
from stemkit.models import build
from stemkit.models.base import SeparationModel
from stemkit.outputs import OutputError

# the in-memory reference warns of the clipping the streamed files report through logging
pytestmark = pytest.mark.filterwarnings("ignore::stemkit.audio.ClippingWarning")

MODEL_RATE = 8000
SONG_RATE = 11025


def tiny_umx(**options: Any) -> SeparationModel:
    torch.manual_seed(0)
    model = build(
        "umx",
        sources=("vocals", "drums", "bass"),
        hidden_size=8,
        nb_layers=1,
        sample_rate=MODEL_RATE,
        n_fft=256,
        n_hop=64,
        bandwidth=3000,
        niter=1,
        **options,
    )
    return model.eval()


def make_song(path: Path, seconds: float, rate: int = SONG_RATE, scale: float = 0.3) -> Path:
    rng = np.random.default_rng(7)
    data = scale * rng.standard_normal((2, round(seconds * rate))).astype(np.float32)
    sf.write(path, data.T, rate, subtype="FLOAT")
    return path


def in_memory(
    separator: Separator,
    song: Path,
    folder: Path,
    output: StemFiles,
    stems: list[str] | None = None,
    two_stems: str | None = None,
) -> dict[str, Path]:
    """The stem files as ``separate_to_folder`` wrote them before it streamed."""
    audio, song_rate = read_audio(song, channels=separator.audio_channels)
    frames = audio.shape[-1]
    mixture = resample(audio, song_rate, separator.sample_rate)
    separated = separator._separate(mixture)
    sources = list(separator.sources)
    selected = separator.selection(stems, two_stems)
    if two_stems is not None:
        stem = separated[sources.index(two_stems)]
        signals = {selected[0]: stem, selected[1]: mixture - stem}
    else:
        signals = {name: separated[sources.index(name)] for name in selected}
    rate = output.rate_for(song_rate, separator.sample_rate)
    folder.mkdir()
    written = {}
    for name, signal in signals.items():
        signal = _at_rate(
            signal, separator.sample_rate, rate, frames if rate == song_rate else None
        )
        written[name] = write_audio(
            folder / f"{name}{output.extension}",
            signal,
            rate,
            subtype=output.subtype,
            clip=output.clip,
            bitrate=output.bitrate,
        )
    return written


def snr(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10((reference**2).sum() / ((reference - estimate) ** 2).sum()))


CASES = [
    # (separator settings, StemFiles settings, stems, two_stems)
    ({"segment": 1.0, "shifts": 1, "seed": 3}, {"format": "wav"}, None, None),
    ({"segment": 0.7, "batch_size": 2}, {"format": "flac", "rate": "model"}, None, "vocals"),
    (
        {"segment": 1.0, "shifts": 2, "seed": 4},
        {"format": "wav", "subtype": "FLOAT"},
        ["bass"],
        None,
    ),
    ({"segment": 1.0}, {"format": "wav", "clip": "rescale"}, None, "drums"),
    ({"segment": 1.0}, {"format": "mp3", "bitrate": 128}, ["vocals"], None),
    ({}, {"format": "opus"}, ["drums"], None),  # whole song (Open-Unmix's default)
]


@pytest.mark.parametrize(("settings", "files", "stems", "two_stems"), CASES)
def test_streamed_files_equal_the_in_memory_ones(
    tmp_path: Path,
    settings: dict[str, Any],
    files: dict[str, Any],
    stems: list[str] | None,
    two_stems: str | None,
) -> None:
    # 3.3 s at 11025 Hz: resampled to the model's 8 kHz and back; loud, so that it clips
    song = make_song(tmp_path / "song.wav", 3.3, scale=1.5)
    output = StemFiles.of(**files)
    ours = _separate(
        Separator(tiny_umx(), **settings), song, tmp_path / "out", output, stems, two_stems
    )
    reference = in_memory(
        Separator(tiny_umx(), **settings), song, tmp_path / "ref", output, stems, two_stems
    )
    assert [path.name for path in ours] == [path.name for path in reference.values()]
    for path, expected in zip(ours, reference.values(), strict=True):
        got, rate = sf.read(path, dtype="float32")
        want, want_rate = sf.read(expected, dtype="float32")
        assert rate == want_rate and got.shape == want.shape
        assert np.array_equal(got, want), f"{path.name}: max diff {np.abs(got - want).max()}"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["song"]


def _separate(
    separator: Separator,
    song: Path,
    root: Path,
    output: StemFiles,
    stems: list[str] | None,
    two_stems: str | None,
) -> list[Path]:
    from stemkit import outputs

    root.mkdir()
    destination = outputs.destination(root, outputs.folder_name(song))
    return separator.separate_to_folder(
        song, destination, output=output, stems=stems, two_stems=two_stems
    )


def test_ogg_vorbis_is_within_a_fraction_of_the_codec_error(tmp_path: Path) -> None:
    # libvorbis's analysis depends on the size of each write, so a file encoded in blocks is
    # not the file encoded at once; the two must differ by far less than either differs from
    # the signal (measured: 65 dB between them, 39 dB to the signal): at least 10 dB less.
    song = make_song(tmp_path / "song.wav", 3.0, rate=44100, scale=0.2)
    separator = Separator(build("identity", sample_rate=44100), segment=1.0)
    [ours] = separator.separate_file(song, tmp_path / "out", format="ogg")
    [reference] = in_memory(separator, song, tmp_path / "ref", StemFiles.of("ogg")).values()
    source, _ = sf.read(song, dtype="float32")
    got, _ = sf.read(ours, dtype="float32")
    want, _ = sf.read(reference, dtype="float32")
    assert got.shape == want.shape == source.shape
    assert snr(want, got) > snr(source, want) + 10


def test_identity_gives_the_song_back_exactly(tmp_path: Path) -> None:
    song = make_song(tmp_path / "song.wav", 4.0, rate=44100)
    separator = Separator(build("identity", sources=("a", "b"), sample_rate=44100), segment=1.0)
    float_wav = StemFiles.of("wav", subtype="FLOAT")
    paths = _separate(separator, song, tmp_path / "out", float_wav, None, None)
    source, _ = sf.read(song, dtype="float32")
    for path in paths:
        assert np.array_equal(sf.read(path, dtype="float32")[0], source)


def test_whole_song_models_use_long_segments_past_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Open-Unmix separates whole songs; past WHOLE_SONG_LIMIT a file is cut into chunks of
    # LONG_SONG_SEGMENT (scaled down here: 2 s and 1 s).
    monkeypatch.setattr(stemkit.inference.files, "LONG_SONG_SEGMENT", 1.0)
    model = tiny_umx()
    separator = Separator(model)
    assert separator.segment is None
    separator.whole_song_limit = 2.0
    float_wav = StemFiles.of("wav", subtype="FLOAT")
    for seconds, segment in ((1.9, None), (3.1, 1.0)):
        song = make_song(tmp_path / f"song{seconds}.wav", seconds, rate=MODEL_RATE)
        [path] = _separate(separator, song, tmp_path / f"out{seconds}", float_wav, ["bass"], None)
        mixture, _ = read_audio(song)
        expected = separate(model, mixture, segment=segment, overlap=0.25)[2]
        assert np.array_equal(sf.read(path, dtype="float32")[0], expected.numpy().T), seconds
    # an explicit whole-song request is honoured at any length
    assert Separator(model, segment=0).whole_song_limit is None


def test_corrupt_block_half_way_leaves_no_folder(tmp_path: Path) -> None:
    data = np.zeros((2, 5 * 44100), dtype=np.float32)
    data[0, 4 * 44100] = np.inf  # in a later block than the first (65536 samples)
    song = tmp_path / "song.wav"
    sf.write(song, data.T, 44100, subtype="FLOAT")
    out = tmp_path / "out"
    separator = Separator(build("identity", sample_rate=44100), segment=1.0)
    with pytest.raises(AudioError, match=r"NaN or infinite samples \(first at sample 176400\)"):
        separator.separate_file(song, out)
    assert list(out.iterdir()) == []
    # a song inside the output root is still named as itself, not as its stem folder
    inside = song.rename(out / "song.wav")
    with pytest.raises(AudioError) as caught:
        separator.separate_file(inside, out)
    assert caught.value.path == str(inside) and "NaN" in caught.value.reason
    assert list(out.iterdir()) == [inside]


def test_full_disk_half_way_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    song = make_song(tmp_path / "song.wav", 5.0, rate=44100)
    real = sf.SoundFile.write
    calls = [0]

    def fill_up(self: sf.SoundFile, data: Any) -> None:
        calls[0] += 1
        if calls[0] == 5:  # some blocks are written: the disk fills mid-file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)
        real(self, data)

    monkeypatch.setattr(sf.SoundFile, "write", fill_up)
    out = tmp_path / "out"
    separator = Separator(build("identity", sources=("a", "b"), sample_rate=44100), segment=1.0)
    with pytest.raises(OutputError, match="no space left on device"):
        separator.separate_file(song, out)
    assert calls[0] == 5
    assert list(out.iterdir()) == []


def test_clipping_is_reported_once_per_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    song = make_song(tmp_path / "song.wav", 4.0, rate=44100, scale=2.0)
    separator = Separator(build("identity", sample_rate=44100), segment=1.0)
    with caplog.at_level(logging.WARNING, logger="stemkit"):
        [path] = separator.separate_file(song, tmp_path / "out")
    [message] = [r.getMessage() for r in caplog.records if "clipped" in r.getMessage()]
    # the identity's stem is the song: write_audio's warning on it, with the same counts
    with pytest.warns(UserWarning) as caught:
        write_audio(tmp_path / "whole.wav", read_audio(song)[0], 44100)
    assert message == str(caught[0].message).replace(str(tmp_path / "whole.wav"), str(path))
