"""The trainer's dataset choice: format and sampler dispatch, and the errors on bad options."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from test_stem_mp4 import write_stem_mp4

from conftest import RATE, SOURCES, write_hq_track
from stemkit.data.factory import FORMATS, detect_format, full_tracks, training_dataset
from stemkit.data.musdb import MusdbHQ
from stemkit.data.sad import SadDataset
from stemkit.errors import DatasetError, StemkitError
from stemkit.train.config import DataConfig, SadConfig, resolve_config


def _config(root: Path, **options: object) -> DataConfig:
    small_sad = SadConfig(window=1.0, hop=0.5, items=5)
    return DataConfig(root=str(root), segment=0.5, samples_per_track=2, sad=small_sad, **options)  # type: ignore[arg-type]


def test_uniform_sampler_gives_musdb_hq(hq_tree: Path) -> None:
    dataset = training_dataset(_config(hq_tree), seed=3)
    assert type(dataset) is MusdbHQ
    assert len(dataset) == 2 * 2  # 2 training tracks of 3 (one held out), 2 excerpts each
    assert type(full_tracks(_config(hq_tree), "test", seed=3)) is MusdbHQ


def test_sad_sampler_gives_sad_dataset(hq_tree: Path, tmp_path: Path) -> None:
    config = _config(hq_tree, sampler="sad")
    config.sad.index = str(tmp_path / "sad.json")
    dataset = training_dataset(config, seed=3)
    assert isinstance(dataset, SadDataset)
    assert len(dataset) == 5
    assert (tmp_path / "sad.json").is_file()
    stems, _ = dataset[0]
    assert stems.shape == (4, 2, round(0.5 * 44100))
    config.sad.items = None  # falls back to samples_per_track x training tracks
    assert len(training_dataset(config, seed=3)) == 2 * 2


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"sampler": "random"}, "data.sampler='random'"),
        ({"format": "musdb"}, "data.format='musdb'"),
        ({"gain": [1.0]}, "data.gain"),
    ],
)
def test_bad_values_name_the_key(hq_tree: Path, options: dict[str, object], key: str) -> None:
    with pytest.raises(StemkitError, match=key):
        training_dataset(_config(hq_tree, **options), seed=0)


def test_bad_sad_settings_name_the_key(hq_tree: Path) -> None:
    config = _config(hq_tree, sampler="sad")
    config.sad.quantile = 2.0
    with pytest.raises(StemkitError, match=r"data\.sad: SAD quantile"):
        training_dataset(config, seed=0)
    config = _config(hq_tree, sampler="sad", format="mir1k")
    with pytest.raises(StemkitError, match=r"data\.sampler=sad reads the MUSDB18\(-HQ\) layouts"):
        training_dataset(config, seed=0)
    config = _config(hq_tree, sampler="sad")
    config.sad.silence = "targets"
    with pytest.raises(StemkitError, match=r"data\.sad\.silence='targets': choose one of all, "):
        training_dataset(config, seed=0)


def test_silent_target_reaches_the_sad_dataset(hq_tree: Path) -> None:
    config = _config(hq_tree, sampler="sad", sources=["vocals", "drums"])
    config.sad.silence = "target"
    dataset = training_dataset(config, seed=3)
    assert isinstance(dataset, SadDataset)
    # two targets; bass and other are the rest of the mixture, never silenced
    assert (dataset.silence, dataset.nb_targets) == ("target", 2)
    assert dataset.sources[:2] == ("vocals", "drums") and len(dataset.sources) == 4


def _gated_noise(seconds: float, silent: list[tuple[float, float]], seed: int) -> np.ndarray:
    """Stereo noise ``(2, time)`` below about 4 kHz at 0.05 RMS, zero in the ``silent`` spans.

    Low-passed, so that AAC at 160 kbit/s codes it closely (white noise loses its top band).
    """
    rng = np.random.default_rng(seed)
    white = rng.standard_normal((2, int(seconds * RATE) + 9))
    smooth = np.stack([np.convolve(channel, np.ones(10) / 10, mode="valid") for channel in white])
    noise = 0.05 * smooth / smooth.std()
    for start, stop in silent:
        noise[:, int(start * RATE) : int(stop * RATE)] = 0.0
    return noise.astype(np.float32)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_sad_sampler_on_stem_mp4_matches_the_wav_layout(tmp_path: Path) -> None:
    # Silences start and end a quarter into a 1 s window (hop 0.5 s): every window is fully
    # active, fully silent, or 25 % / 75 % active, far from the 50 % rule, so AAC coding noise
    # around the edges cannot flip a decision.
    spans = [
        {"vocals": [(1.25, 2.75)], "drums": [(0.0, 0.75)], "bass": [(2.25, 4.0)]},
        {"vocals": [(0.0, 1.75)], "other": [(1.25, 4.0)]},
        {"drums": [(0.75, 3.25)], "bass": [(0.0, 4.0)]},
    ]
    wav_root, stems_root = tmp_path / "hq", tmp_path / "mp4"
    jobs = []
    for i, silent in enumerate(spans):
        stems = np.stack(
            [
                _gated_noise(4.0, silent.get(source, []), 10 * i + j)
                for j, source in enumerate(SOURCES)
            ]
        )
        write_hq_track(wav_root / "train" / f"Toy - {i}", stems)
        path = stems_root / "train" / f"Toy - {i}.stem.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        jobs.append((path, stems))
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda job: write_stem_mp4(*job), jobs))

    wav = training_dataset(_config(wav_root, sampler="sad"), seed=3)
    mp4 = training_dataset(_config(stems_root, sampler="sad", format="musdb_stems"), seed=3)
    assert isinstance(wav, SadDataset) and isinstance(mp4, SadDataset)
    assert [t.name for t in mp4.index.tracks] == [t.name for t in wav.index.tracks]
    assert mp4.index.windows == wav.index.windows
    assert mp4.fingerprint() == wav.fingerprint()
    # the signals exercise both decisions: 7 windows per track, some dropped, some kept
    counts = wav.index.counts()
    assert 0 < min(counts.values()) and max(counts.values()) < 7 * 2
    assert counts != {source: 7 * 2 for source in SOURCES}
    # same draws, so the same crops; the audio differs by the AAC coding error only
    for item in range(len(wav)):
        (expected, name), (got, mp4_name) = wav[item], mp4[item]
        assert mp4_name == name and got.shape == expected.shape
        error = (got - expected).pow(2).sum() / expected.pow(2).sum().clamp_min(1e-12)
        assert error < 0.1, f"item {item}: {name}"


def test_missing_or_mismatched_root(hq_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(StemkitError, match=r"nowhere: data\.root does not exist.*musdb_hq"):
        full_tracks(_config(tmp_path / "nowhere"), "test", seed=0)
    with pytest.raises(StemkitError, match=r"set data\.format=musdb_hq"):
        training_dataset(_config(hq_tree, format="musdb_stems"), seed=0)
    with pytest.raises(StemkitError, match=f"set data.root={hq_tree}"):
        training_dataset(_config(hq_tree / "train"), seed=0)
    stems_root = tmp_path / "musdb18"
    (stems_root / "test").mkdir(parents=True)
    (stems_root / "test" / "Song.stem.mp4").write_bytes(b"")
    assert detect_format(stems_root) == "musdb_stems"
    assert detect_format(hq_tree) == "musdb_hq"
    with pytest.raises(StemkitError, match=r"set data\.format=musdb_stems"):
        full_tracks(_config(stems_root), "test", seed=0)
    assert set(FORMATS) == {"musdb_hq", "musdb_stems", "mir1k"}


@pytest.mark.parametrize(
    ("preset", "sampler"),
    [
        ("bsrnn_small_musdb18hq.yaml", "sad"),
        ("bsrnn_large_musdb18hq.yaml", "sad"),
        ("bsrnn_opt_musdb18hq.yaml", "uniform"),
    ],
)
def test_bsrnn_presets_choose_the_recipe_sampler(preset: str, sampler: str) -> None:
    path = Path(__file__).parents[2] / "configs" / preset
    config = resolve_config(path)
    assert config.data.sampler == sampler
    assert config.data.format == "musdb_hq"


def test_mir1k_format_is_detected_and_read(hq_tree: Path, tmp_path: Path) -> None:
    from stemkit.data.mir1k import Mir1k
    from stemkit.data.mir1k_writer import write_mir1k_from_musdb

    root = tmp_path / "mir1k"
    write_mir1k_from_musdb(hq_tree, root, clip_seconds=1.0)
    assert detect_format(root) == "mir1k"
    overrides = [
        f"data.root={root}",
        "data.format=mir1k",
        "data.sources=[accompaniment, vocals]",
        "data.segment=0.5",
        "data.samples_per_track=2",
        "data.valid_fraction=0.0",
    ]
    data = resolve_config(None, overrides).data
    train = training_dataset(data, seed=3)
    assert isinstance(train, Mir1k) and train.sample_rate == 8000
    stems, _ = train[0]
    assert stems.shape == (2, 1, 4000)
    test = full_tracks(data, "test", seed=3)
    assert isinstance(test, Mir1k) and test[0][0].shape[:2] == (2, 1)
    resampled = training_dataset(
        resolve_config(None, [*overrides, "data.sample_rate=16000"]).data, 3
    )
    assert resampled[0][0].shape == (2, 1, 8000)
    with pytest.raises(DatasetError, match=r"set data\.format=musdb_hq"):
        training_dataset(
            resolve_config(None, [f"data.root={hq_tree}", "data.format=mir1k"]).data, 3
        )


def test_by_length_reaches_the_dataset(hq_tree: Path) -> None:
    data = resolve_config(None, [f"data.root={hq_tree}", "data.by_length=true"]).data
    dataset = training_dataset(data, seed=0)
    assert isinstance(dataset, MusdbHQ) and dataset.by_length
    assert not training_dataset(resolve_config(None, [f"data.root={hq_tree}"]).data, 0).by_length
