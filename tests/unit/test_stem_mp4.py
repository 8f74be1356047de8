"""MUSDB18 .stem.mp4 datasets: items against ffmpeg's full decode, splits, bad files."""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import RATE, SOURCES, toy_stems
from stemkit.data.musdb import MUSDB_VALID_TRACKS, MusdbHQ
from stemkit.data.stems_mp4 import STEM_STREAMS, MusdbStems, list_stem_tracks
from stemkit.errors import DatasetError

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")

SECONDS = 1.0
#: Toy stems are in the order vocals, drums, bass, other; the file holds mixture, drums, bass,
#: other, vocals.
FILE_ORDER = ("mixture", "drums", "bass", "other", "vocals")


def write_stem_mp4(path: Path, stems: np.ndarray, nb_streams: int = 5) -> None:
    """Encode ``stems`` (vocals, drums, bass, other) as a MUSDB18-like .stem.mp4 (AAC)."""
    by_name = dict(zip(SOURCES, stems, strict=True))
    by_name["mixture"] = stems.sum(axis=0)
    scratch = path.parent / f".{path.name}.wavs"
    scratch.mkdir(parents=True, exist_ok=True)
    command = ["ffmpeg", "-v", "error", "-y", "-nostdin"]
    for name in FILE_ORDER[:nb_streams]:
        sf.write(scratch / f"{name}.wav", by_name[name].T, RATE, subtype="FLOAT")
        command += ["-i", str(scratch / f"{name}.wav")]
    for i in range(nb_streams):
        command += ["-map", f"{i}:a"]
    # Perceptual noise substitution makes the decoder draw noise, which differs after a seek;
    # without it, a seeked excerpt must equal the full decode bit for bit.
    command += ["-c:a", "aac", "-b:a", "160k", "-aac_pns", "0", str(path)]
    subprocess.run(command, check=True)
    shutil.rmtree(scratch)


def full_decode(path: Path, stream: int) -> np.ndarray:
    """The whole stream as ffmpeg decodes it from the start: ``(channels, time)``."""
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-map", f"0:a:{stream}",
         "-f", "f32le", "-c:a", "pcm_f32le", "-"],
        capture_output=True, check=True,
    )  # fmt: skip
    return np.frombuffer(result.stdout, "<f4").reshape(-1, 2).T


@pytest.fixture(scope="module")
def stems_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 train tracks (one an official validation name) and 1 test track of 2 s."""
    root = tmp_path_factory.mktemp("musdb18")
    names = ["Toy - A", "Toy - B", sorted(MUSDB_VALID_TRACKS)[0]]
    jobs = [(root / "train" / f"{name}.stem.mp4", i) for i, name in enumerate(names)]
    jobs.append((root / "test" / "Toy - T.stem.mp4", 9))
    for path, _ in jobs:
        path.parent.mkdir(parents=True, exist_ok=True)
    # ffmpeg runs in its own process, so two threads encode two files at a time.
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda job: write_stem_mp4(job[0], toy_stems(SECONDS, seed=job[1])), jobs))
    return root


def test_listing_reads_the_container(stems_tree: Path) -> None:
    tracks = list_stem_tracks(stems_tree, "train")
    assert [t.name for t in tracks] == sorted(["Toy - A", "Toy - B", sorted(MUSDB_VALID_TRACKS)[0]])
    for track in tracks:
        assert (track.nb_frames, track.sample_rate, track.channels) == (SECONDS * RATE, RATE, 2)
        assert track.path("vocals") == track.file == track.folder / f"{track.name}.stem.mp4"


def test_excerpts_equal_the_full_decode_exactly(stems_tree: Path) -> None:
    data = MusdbStems(
        stems_tree, "train", segment=0.5, samples_per_track=1, gain=None, channel_swap=False
    )
    decoded: dict[tuple[Path, str], np.ndarray] = {}
    for index in range(len(data)):
        stems, _ = data[index]
        for row, excerpt in enumerate(data.excerpts(index)):
            key = (excerpt.track.path(excerpt.source), excerpt.source)
            if key not in decoded:
                decoded[key] = full_decode(key[0], STEM_STREAMS[excerpt.source])
            reference = decoded[key][:, excerpt.start : excerpt.start + excerpt.frames]
            np.testing.assert_array_equal(stems[row].numpy(), reference)
    # Both decoding paths, from the first packet (near the start) and after a seek, at any
    # sample offset, up to the last frame.
    track = data.tracks[0]
    reference = full_decode(track.file, STEM_STREAMS["bass"])
    for start in (0, 1, 1000, int(0.4 * RATE) - 1, int(0.4 * RATE) + 7, 30001):
        excerpt = track.read("bass", start, 4410)
        np.testing.assert_array_equal(excerpt, reference[:, start : start + 4410])
    tail = track.read("bass", track.nb_frames - 100, 100)
    np.testing.assert_array_equal(tail, reference[:, track.nb_frames - 100 : track.nb_frames])
    with pytest.raises(DatasetError, match="expected 200 frames"):
        track.read("bass", track.nb_frames - 100, 200)


def test_full_tracks_match_the_source_signals_within_aac_error(stems_tree: Path) -> None:
    data = MusdbStems(stems_tree, "test", segment=None)
    stems, name = data[0]
    assert name == "Toy - T"
    original = toy_stems(SECONDS, seed=9)
    assert stems.shape == original.shape
    for source, decoded, reference in zip(SOURCES, stems.numpy(), original, strict=True):
        error = decoded - reference
        snr = 10 * np.log10((reference**2).sum() / (error**2).sum())
        # AAC at 160 kb/s keeps the tones within 27-33 dB and the noise bursts of the drums
        # within 7 dB; a stream off by one AAC frame (1024 samples) gives -3 to 8 dB.
        assert snr > (5.0 if source == "drums" else 20.0), source


def test_same_draws_as_the_wav_layout(stems_tree: Path, tmp_path: Path) -> None:
    """Splits, lengths, excerpt plans and fingerprints agree with MusdbHQ on the same songs."""
    full = [MusdbStems(stems_tree, split, segment=None) for split in ("train", "valid")]
    for stems, name in (item for dataset in full for item in dataset):
        folder = tmp_path / "train" / name
        folder.mkdir(parents=True)
        for source, stem in zip(SOURCES, stems.numpy(), strict=True):
            sf.write(folder / f"{source}.wav", stem.T, RATE, subtype="FLOAT")
        sf.write(folder / "mixture.wav", stems.sum(dim=0).numpy().T, RATE, subtype="FLOAT")
    options = {"segment": 0.3, "samples_per_track": 1, "seed": 5}
    mp4 = MusdbStems(stems_tree, "train", **options)  # type: ignore[arg-type]
    wav = MusdbHQ(tmp_path, "train", **options)  # type: ignore[arg-type]
    assert [t.name for t in mp4.tracks] == [t.name for t in wav.tracks] == ["Toy - A", "Toy - B"]
    assert mp4.fingerprint() == wav.fingerprint()
    mp4.set_epoch(3)
    wav.set_epoch(3)
    for index in range(len(mp4)):
        (a, name_a), (b, name_b) = mp4[index], wav[index]
        assert name_a == name_b
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    valid = MusdbStems(stems_tree, "valid", segment=None)
    assert [t.name for t in valid.tracks] == [sorted(MUSDB_VALID_TRACKS)[0]]


def test_wrong_stream_count_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train" / "Three.stem.mp4"
    path.parent.mkdir()
    write_stem_mp4(path, toy_stems(0.5, seed=1), nb_streams=3)
    with pytest.raises(DatasetError, match=r"Three\.stem\.mp4: holds 3 audio stream"):
        list_stem_tracks(tmp_path, "train")


def test_corrupt_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train" / "Broken.stem.mp4"
    path.parent.mkdir()
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    with pytest.raises(DatasetError, match=r"Broken\.stem\.mp4: not a readable"):
        MusdbStems(tmp_path, "train")


def test_layout_errors(stems_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        list_stem_tracks(tmp_path / "nowhere", "train")
    (tmp_path / "train" / "Song").mkdir(parents=True)
    (tmp_path / "train" / "Song" / "mixture.wav").write_bytes(b"")
    with pytest.raises(DatasetError, match="musdb_hq"):
        list_stem_tracks(tmp_path, "train")
    with pytest.raises(DatasetError, match="piano are not in MUSDB18"):
        list_stem_tracks(stems_tree, "train", sources=("vocals", "piano"))
