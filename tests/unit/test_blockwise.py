"""Streamed separation pieces equal their in-memory counterparts bit for bit.

- :func:`stemkit.inference.blockwise.separate_blocks` against
  :func:`stemkit.inference.separate` on the whole mixture: the identity model (which must give
  its input back exactly) and a small random-weight bidirectional Open-Unmix with Wiener EM
  (whose output near the end depends on where the last chunk starts) and a small Demucs v1
  (waveform, bidirectional LSTM), over lengths around the
  chunk grid (the last-chunk rule: it ends with the song), batch sizes, overlaps, shifts,
  whole-song segments and blocks of ragged sizes.
- :class:`stemkit.audio.blocks.BlockResampler` against :func:`stemkit.audio.resample`.
- :class:`stemkit.audio.blocks.BlockReader` against :func:`stemkit.audio.read_audio`,
  and its errors half-way through a file.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from stemkit.audio import read_audio, resample
from stemkit.audio.blocks import BlockReader, BlockResampler, BlockWriter
from stemkit.errors import AudioError
from stemkit.inference import separate
from stemkit.inference.blockwise import separate_blocks
from stemkit.models import build
from stemkit.models.base import SeparationModel

RATE = 8000


def ragged(signal: torch.Tensor, seed: int) -> Iterator[torch.Tensor]:
    """``signal`` in blocks of mixed sizes, from one sample to more than a segment."""
    sizes = random.Random(seed)
    start = 0
    while start < signal.shape[-1]:
        size = sizes.choice([0, 1, 7, 333, 2048, 9001])
        yield signal[:, start : start + size]
        start += size


@pytest.fixture(scope="module")
def tiny_umx() -> SeparationModel:
    torch.manual_seed(0)
    return build(
        "umx",
        sources=("vocals", "drums"),
        hidden_size=8,
        nb_layers=1,
        sample_rate=RATE,
        n_fft=256,
        n_hop=64,
        bandwidth=3000,
        niter=1,
    ).eval()


@pytest.fixture(scope="module")
def tiny_demucs() -> SeparationModel:
    torch.manual_seed(0)
    return build("demucs", sources=("vocals", "drums"), sample_rate=RATE, channels=4, depth=3)


SETTINGS = [
    {"segment": 1.0, "overlap": 0.25},
    {"segment": 0.5, "overlap": 0.5, "batch_size": 3},
    {"segment": 1.0, "overlap": 0.1, "shifts": 2},
    {"segment": 0.3, "overlap": 0.0, "batch_size": 2, "shifts": 3},
    {"segment": None},
]
# one segment = 8000 samples, hop 6000 at overlap 0.25: shorter than a segment, exactly one,
# one more, a last chunk on the grid (8000 + 2 · 6000) and just past it
LENGTHS = [300, 8000, 8001, 20000, 20001]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(map(str, s.values())))
@pytest.mark.parametrize("model_name", ["identity", "umx", "demucs"])
def test_streamed_stems_equal_whole_song_separation(
    model_name: str,
    settings: dict[str, Any],
    tiny_umx: SeparationModel,
    tiny_demucs: SeparationModel,
) -> None:
    model = {
        "identity": build("identity", sources=("a", "b"), sample_rate=RATE),
        "umx": tiny_umx,
        "demucs": tiny_demucs,
    }[model_name]
    for length in LENGTHS:
        mixture = 0.3 * torch.randn(2, length, generator=torch.Generator().manual_seed(length))
        expected = separate(model, mixture, generator=torch.Generator().manual_seed(1), **settings)
        pieces = separate_blocks(
            model, ragged(mixture, length), generator=torch.Generator().manual_seed(1), **settings
        )
        got = torch.cat(list(pieces), dim=-1)
        assert got.shape == expected.shape
        assert torch.equal(got, expected), (length, (got - expected).abs().max())
        if model_name == "identity":
            assert torch.equal(got, mixture.expand(2, -1, -1))


def test_output_follows_the_input(tiny_umx: SeparationModel) -> None:
    # Stems come out while the song goes in: after n input samples, at least
    # n - (segment + (batch - 1) · hop) - block of them are final.
    segment, hop, block = RATE, 6000, 1000
    mixture = torch.randn(2, 10 * RATE, generator=torch.Generator().manual_seed(0))
    fed = 0

    def feed() -> Iterator[torch.Tensor]:
        nonlocal fed
        for start in range(0, mixture.shape[-1], block):
            fed += block
            yield mixture[:, start : start + block]

    given = 0
    for stems in separate_blocks(tiny_umx, feed(), segment=1.0, overlap=0.25):
        given += stems.shape[-1]
        if fed < mixture.shape[-1]:
            assert given >= fed - segment - hop - block
    assert given == mixture.shape[-1]


def test_bad_blocks_are_refused(tiny_umx: SeparationModel) -> None:
    with pytest.raises(ValueError, match="channel"):
        list(separate_blocks(tiny_umx, [torch.zeros(1, 100)], segment=1.0))
    with pytest.raises(ValueError, match="no samples"):
        list(separate_blocks(tiny_umx, [torch.zeros(2, 0)], segment=1.0))
    with pytest.raises(ValueError, match="overlap"):
        list(separate_blocks(tiny_umx, [torch.zeros(2, 100)], segment=1.0, overlap=0.7))


@pytest.mark.parametrize(("orig", "new"), [(44100, 8000), (8000, 44100), (48000, 44100)])
def test_block_resampler_equals_resample(orig: int, new: int) -> None:
    signal = torch.randn(2, 3 * orig + 17, generator=torch.Generator().manual_seed(orig))
    resampler = BlockResampler(orig, new, 2)
    pieces = [resampler.process(block) for block in ragged(signal, 3)] + [resampler.flush()]
    assert torch.equal(torch.cat(pieces, dim=-1), resample(signal, orig, new))


def _write(path: Path, data: np.ndarray, rate: int, subtype: str = "FLOAT") -> Path:
    sf.write(path, data.T, rate, subtype=subtype)
    return path


@pytest.mark.parametrize(("suffix", "subtype"), [(".wav", "FLOAT"), (".flac", "PCM_24")])
@pytest.mark.parametrize("channels", [1, 2])
def test_block_reader_equals_read_audio(
    tmp_path: Path, suffix: str, subtype: str, channels: int
) -> None:
    data = 0.3 * np.random.default_rng(0).standard_normal((channels, 20011)).astype(np.float32)
    path = _write(tmp_path / f"song{suffix}", data, 22050, subtype)
    whole, _ = read_audio(path, channels=2)
    with BlockReader(path, channels=2, block_frames=4096) as reader:
        assert (reader.sample_rate, reader.file_channels, reader.frames) == (22050, channels, 20011)
        blocks = list(reader)
        assert reader.frames_read == 20011
    assert all(block.shape[-1] <= 4096 for block in blocks)
    assert torch.equal(torch.cat(blocks, dim=-1), whole)


def test_block_reader_through_ffmpeg_equals_read_audio(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg is not installed")
    data = 0.3 * np.random.default_rng(1).standard_normal((2, 30000)).astype(np.float32)
    source = _write(tmp_path / "source.wav", data, 44100)
    song = tmp_path / "song.m4a"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(source), "-c:a", "aac", str(song)], check=True
    )
    whole, _ = read_audio(song)
    with BlockReader(song, block_frames=5000) as reader:
        got = torch.cat(list(reader), dim=-1)
    assert torch.equal(got, whole)


def test_nan_half_way_is_an_audio_error(tmp_path: Path) -> None:
    data = np.zeros((2, 50000), dtype=np.float32)
    data[1, 30001] = np.nan
    path = _write(tmp_path / "song.wav", data, RATE)
    with BlockReader(path, block_frames=4096) as reader:
        blocks = iter(reader)
        next(blocks)  # the first blocks are fine
        with pytest.raises(AudioError, match=r"NaN or infinite samples \(first at sample 30001\)"):
            list(blocks)


def test_block_reader_refuses_what_read_audio_refuses(tmp_path: Path) -> None:
    surround = _write(tmp_path / "six.wav", np.zeros((6, 100), dtype=np.float32), RATE)
    with pytest.raises(AudioError, match="downmix"):
        BlockReader(surround, channels=2)
    empty = _write(tmp_path / "empty.wav", np.zeros((2, 0), dtype=np.float32), RATE)
    with pytest.raises(AudioError, match="zero length"):
        BlockReader(empty)
    (tmp_path / "noise.flac").write_bytes(b"not a flac file at all" * 10)
    with pytest.raises(AudioError, match="not a readable flac"):
        BlockReader(tmp_path / "noise.flac")


@pytest.mark.parametrize(("suffix", "subtype"), [(".wav", "PCM_16"), (".flac", "PCM_24")])
def test_block_writer_file_equals_write_audio(tmp_path: Path, suffix: str, subtype: str) -> None:
    from stemkit.audio import write_audio

    signal = 0.5 * torch.randn(2, 30011, generator=torch.Generator().manual_seed(2))
    write_audio(tmp_path / f"whole{suffix}", signal, 44100, subtype=subtype, clip="clamp")
    with BlockWriter(tmp_path / f"blocks{suffix}", 44100, 2, subtype=subtype, clip="clamp") as out:
        for block in ragged(signal, 5):
            out.write(block)
    whole, _ = sf.read(tmp_path / f"whole{suffix}", dtype="int32")
    blocks, _ = sf.read(tmp_path / f"blocks{suffix}", dtype="int32")
    assert np.array_equal(whole, blocks)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"blocks{suffix}", f"whole{suffix}"]


def test_block_writer_warns_once_with_the_counts_of_the_whole_file(tmp_path: Path) -> None:
    signal = torch.zeros(2, 10000)
    signal[0, 10] = 2.0
    signal[1, 9000] = -3.0
    with (
        pytest.warns(UserWarning, match=r"clipped 2 of 20000 samples .0.01 %, peak 3.000."),
        BlockWriter(tmp_path / "a.wav", RATE, 2) as out,
    ):
        for block in signal.split(4096, dim=-1):
            out.write(block)


def test_block_writer_leaves_nothing_when_aborted(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="NaN"), BlockWriter(tmp_path / "a.wav", RATE, 2) as out:
        out.write(torch.zeros(2, 100))
        out.write(torch.full((2, 100), float("nan")))
    assert list(tmp_path.iterdir()) == []
