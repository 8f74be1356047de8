"""MUSDB18-HQ listing, splits and the training dataset, on small generated trees."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from stemkit import MUSDB_SOURCES
from stemkit.data import (
    MUSDB_VALID_TRACKS,
    MusdbHQ,
    Track,
    list_tracks,
    split_tracks,
)
from stemkit.errors import DatasetError

RATE = 44100
FILES = ("mixture", *MUSDB_SOURCES)


def write_track(folder: Path, stems: np.ndarray, rate: int = RATE) -> None:
    """One track folder: ``stems`` ``(4, channels, time)`` in MUSDB_SOURCES order, and their sum."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, stem in zip(MUSDB_SOURCES, stems, strict=True):
        sf.write(folder / f"{name}.wav", stem.T, rate, subtype="FLOAT")
    sf.write(folder / "mixture.wav", stems.sum(axis=0).T, rate, subtype="FLOAT")


def read_stem(track: Track, source: str) -> np.ndarray:
    data, _ = sf.read(track.path(source), dtype="float32", always_2d=True)
    return data.T


def clean(**kwargs: object) -> dict[str, object]:
    """Dataset options with every source of randomness but the excerpt choice switched off."""
    return {"random_mix": False, "gain": None, "channel_swap": False, **kwargs}


# --- listing ---------------------------------------------------------------------------------


def test_list_tracks_reads_headers_only(hq_tree: Path) -> None:
    with mock.patch("soundfile.read", side_effect=AssertionError("decoded a file")):
        train = list_tracks(hq_tree, "train")
        test = list_tracks(hq_tree, "test")
    assert [t.name for t in train] == [f"Toy - Train {i}" for i in range(3)]
    assert [t.name for t in test] == ["Toy - Test 0", "Toy - Test 1"]
    track = train[0]
    assert (track.nb_frames, track.sample_rate, track.channels) == (4 * RATE, RATE, 2)
    assert track.duration == pytest.approx(4.0)
    assert track.path("bass") == hq_tree / "train" / "Toy - Train 0" / "bass.wav"
    with pytest.raises(AttributeError):
        track.name = "other"  # type: ignore[misc]


def _bad_tree(tmp_path: Path, make_stems: Callable[..., np.ndarray]) -> Path:
    root = tmp_path / "musdb"
    write_track(root / "train" / "Song A", make_stems(0.2, seed=0))
    write_track(root / "train" / "Song B", make_stems(0.2, seed=1))
    return root


def test_missing_root_or_subset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nowhere: dataset root does not exist"):
        list_tracks(tmp_path / "nowhere", "train")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DatasetError, match="is not a folder"):
        list_tracks(tmp_path / "afile", "train")
    (tmp_path / "root").mkdir()
    with pytest.raises(DatasetError, match=r"root/test: subset folder 'test' not found.*HQ layout"):
        list_tracks(tmp_path / "root", "test")
    with pytest.raises(DatasetError, match="unknown subset"):
        list_tracks(tmp_path / "root", "valid")


def test_root_pointing_at_a_subset_gets_a_hint(
    tmp_path: Path, make_stems: Callable[..., np.ndarray]
) -> None:
    root = _bad_tree(tmp_path, make_stems)
    with pytest.raises(DatasetError, match="pass its parent as the root"):
        list_tracks(root / "train", "train")


def test_empty_subset(tmp_path: Path) -> None:
    (tmp_path / "train" / ".cache").mkdir(parents=True)
    (tmp_path / "train" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"train: no track folders in subset 'train'"):
        list_tracks(tmp_path, "train")


def test_missing_stem_names_the_file(tmp_path: Path, make_stems: Callable[..., np.ndarray]) -> None:
    root = _bad_tree(tmp_path, make_stems)
    (root / "train" / "Song B" / "bass.wav").unlink()
    with pytest.raises(DatasetError) as info:
        list_tracks(root, "train")
    message = str(info.value)
    assert str(root / "train" / "Song B" / "bass.wav") in message
    assert "mixture,vocals,drums,bass,other}.wav" in message


@pytest.mark.parametrize("what", ["length", "rate", "channels"])
def test_mismatched_stems_name_the_odd_file(
    tmp_path: Path, make_stems: Callable[..., np.ndarray], what: str
) -> None:
    root = _bad_tree(tmp_path, make_stems)
    odd = root / "train" / "Song A" / "drums.wav"
    data, rate = sf.read(odd, always_2d=True)
    if what == "length":
        sf.write(odd, data[:-10], rate, subtype="FLOAT")
    elif what == "rate":
        sf.write(odd, data, 22050, subtype="FLOAT")
    else:
        sf.write(odd, data[:, :1], rate, subtype="FLOAT")
    expected = {"length": "length in frames", "rate": "sample rate", "channels": "channel count"}
    with pytest.raises(DatasetError, match=expected[what]) as info:
        list_tracks(root, "train")
    assert str(odd) in str(info.value)


def test_unreadable_stem_names_the_file(
    tmp_path: Path, make_stems: Callable[..., np.ndarray]
) -> None:
    root = _bad_tree(tmp_path, make_stems)
    broken = root / "train" / "Song A" / "other.wav"
    broken.write_bytes(b"not a wav file at all")
    with pytest.raises(DatasetError, match="cannot read") as info:
        list_tracks(root, "train")
    assert str(broken) in str(info.value)


@pytest.mark.parametrize("inside_subset", [True, False])
def test_stem_mp4_release_is_recognised(tmp_path: Path, inside_subset: bool) -> None:
    folder = tmp_path / "train" if inside_subset else tmp_path
    folder.mkdir(exist_ok=True)
    (folder / "Artist - Song.stem.mp4").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"MUSDB18 '\.stem\.mp4' files.*MUSDB18-HQ") as info:
        list_tracks(tmp_path, "train")
    assert "Artist - Song.stem.mp4" in str(info.value)


def test_tracks_with_different_rates_cannot_be_mixed(
    tmp_path: Path, make_stems: Callable[..., np.ndarray]
) -> None:
    root = tmp_path / "musdb"
    write_track(root / "train" / "A", make_stems(0.2, seed=0))
    write_track(root / "train" / "B", make_stems(0.2, seed=1, rate=22050), rate=22050)
    write_track(root / "train" / "C", make_stems(0.2, seed=2))
    with pytest.raises(DatasetError, match="must share rate") as info:
        MusdbHQ(root, split="train", valid_fraction=0.3)
    assert str(root / "train" / "B" / "mixture.wav") in str(info.value)


# --- splits ----------------------------------------------------------------------------------


def _fake(names: list[str]) -> list[Track]:
    return [Track(name, Path(name), 1000, RATE, 2) for name in names]


def test_fraction_split_is_deterministic_and_partitions() -> None:
    names = [f"Artist {i:02d} - Song" for i in range(20)]
    tracks = _fake(names)
    valid = split_tracks(tracks, "valid", 0.15, seed=1)
    train = split_tracks(tracks, "train", 0.15, seed=1)
    assert len(valid) == 3 and len(train) == 17
    assert {t.name for t in valid} | {t.name for t in train} == set(names)
    assert not {t.name for t in valid} & {t.name for t in train}
    assert [t.name for t in valid] == sorted(t.name for t in valid)
    # the input order does not matter; the seed does
    assert split_tracks(tracks[::-1], "valid", 0.15, seed=1) == valid
    others = {tuple(t.name for t in split_tracks(tracks, "valid", 0.15, seed=s)) for s in range(5)}
    assert len(others) > 1


def test_fraction_split_small_sets() -> None:
    two = _fake(["A", "B"])
    assert len(split_tracks(two, "valid", 0.15, seed=0)) == 1
    assert len(split_tracks(two, "train", 0.15, seed=0)) == 1
    assert len(split_tracks(two, "valid", 0.99, seed=0)) == 1, "never all tracks"
    one = _fake(["A"])
    assert split_tracks(one, "train", 0.15, seed=0) == one
    with pytest.raises(DatasetError, match="no validation tracks"):
        split_tracks(one, "valid", 0.15, seed=0)
    with pytest.raises(DatasetError, match="valid_fraction"):
        split_tracks(two, "valid", 1.0, seed=0)
    with pytest.raises(DatasetError, match="unknown split"):
        split_tracks(two, "validation", 0.15, seed=0)


def test_official_validation_names_win() -> None:
    official = sorted(MUSDB_VALID_TRACKS)[:3]
    tracks = _fake([*official, "Toy - A", "Toy - B", "Toy - C"])
    for seed in (0, 1, 2):
        assert [t.name for t in split_tracks(tracks, "valid", 0.5, seed=seed)] == official
        assert [t.name for t in split_tracks(tracks, "train", 0.5, seed=seed)] == [
            "Toy - A",
            "Toy - B",
            "Toy - C",
        ]
    with pytest.raises(DatasetError, match="no training tracks"):
        split_tracks(_fake(official), "train", 0.15, seed=0)
    assert len(MUSDB_VALID_TRACKS) == 14


def test_official_names_on_disk(tmp_path: Path, make_stems: Callable[..., np.ndarray]) -> None:
    names = ["Johnny Lokke - Promises & Lies", "Leaf - Summerghost", "Someone - Else"]
    for i, name in enumerate(names):
        write_track(tmp_path / "train" / name, make_stems(0.1, seed=i))
    valid = MusdbHQ(tmp_path, split="valid", segment=None)
    train = MusdbHQ(tmp_path, split="train", segment=None)
    assert [t.name for t in valid.tracks] == names[:2]
    assert [t.name for t in train.tracks] == names[2:]
    assert [valid[i][1] for i in range(len(valid))] == names[:2]


def test_splits_of_the_fixture_tree(hq_tree: Path) -> None:
    train = MusdbHQ(hq_tree, "train", segment=None)
    valid = MusdbHQ(hq_tree, "valid", segment=None)
    test = MusdbHQ(hq_tree, "test", segment=None)
    assert len(valid) == 1 and len(train) == 2
    assert {t.name for t in train.tracks} | {t.name for t in valid.tracks} == {
        f"Toy - Train {i}" for i in range(3)
    }
    assert [t.name for t in test.tracks] == ["Toy - Test 0", "Toy - Test 1"]
    # the training seed does not move the validation split
    assert MusdbHQ(hq_tree, "valid", segment=None, seed=7).tracks == valid.tracks


# --- items -----------------------------------------------------------------------------------


def test_training_items_shape_dtype_and_length(hq_tree: Path) -> None:
    ds = MusdbHQ(hq_tree, segment=0.5, samples_per_track=3)
    assert len(ds) == 3 * len(ds.tracks) == 6
    assert (ds.sample_rate, ds.nb_channels, ds.segment_frames) == (RATE, 2, RATE // 2)
    stems, name = ds[5]
    assert stems.shape == (4, 2, RATE // 2) and stems.dtype == torch.float32
    assert isinstance(name, str) and name
    with pytest.raises(IndexError):
        ds[6]
    batch, names = next(iter(DataLoader(ds, batch_size=4)))
    assert batch.shape == (4, 4, 2, RATE // 2) and len(names) == 4
    vocals = MusdbHQ(hq_tree, sources=("vocals",), segment=0.1)
    # a vocals-only item still holds every stem (vocals first), so its sum is the whole mixture
    assert vocals.stem_sources == ("vocals", "drums", "bass", "other")
    assert vocals[0][0].shape == (4, 2, round(0.1 * RATE))


def test_full_tracks_are_exact_and_unaugmented(hq_tree: Path) -> None:
    ds = MusdbHQ(hq_tree, "test", segment=None, gain=(0.1, 0.2), channel_swap=True)
    assert len(ds) == 2
    for index, track in enumerate(ds.tracks):
        stems, name = ds[index]
        assert name == track.name
        assert stems.shape == (4, 2, track.nb_frames)
        for row, source in zip(stems, MUSDB_SOURCES, strict=True):
            np.testing.assert_array_equal(row.numpy(), read_stem(track, source))


def _locate(excerpt: np.ndarray, full: np.ndarray) -> int:
    """Where ``excerpt`` ``(channels, n)`` sits in ``full``, found by search alone."""
    n = excerpt.shape[-1]
    for start in np.flatnonzero(full[0] == excerpt[0, 0]):
        if np.array_equal(full[:, start : start + n], excerpt):
            return int(start)
    raise AssertionError("excerpt not found in the file")


def test_excerpt_is_the_slice_of_the_file(hq_tree: Path) -> None:
    ds = MusdbHQ(hq_tree, **clean(segment=0.25, samples_per_track=4))
    n = ds.segment_frames
    assert n is not None
    for index in range(len(ds)):
        stems, name = ds[index]
        plan = ds.excerpts(index)
        track = ds.tracks[index // 4]
        assert name == track.name
        assert {(e.track, e.start, e.frames) for e in plan} == {(track, plan[0].start, n)}
        assert 0 <= plan[0].start <= track.nb_frames - n
        for row, source in zip(stems.numpy(), MUSDB_SOURCES, strict=True):
            full = read_stem(track, source)
            np.testing.assert_array_equal(row, full[:, plan[0].start : plan[0].start + n])
            assert _locate(row, full) == plan[0].start


def test_training_reads_are_bounded_seeks(hq_tree: Path) -> None:
    ds = MusdbHQ(hq_tree, segment=0.2, samples_per_track=4)
    with mock.patch("soundfile.read", wraps=sf.read) as spy:
        for index in range(len(ds)):
            ds[index]
    assert spy.call_count == 4 * len(ds)
    for call in spy.call_args_list:
        frames, start = call.kwargs.get("frames"), call.kwargs.get("start")
        assert isinstance(frames, int) and 0 < frames <= ds.segment_frames
        assert isinstance(start, int) and start >= 0


def test_short_tracks_are_zero_padded(
    tmp_path: Path, make_stems: Callable[..., np.ndarray]
) -> None:
    for i in range(2):
        write_track(tmp_path / "train" / f"Short {i}", make_stems(0.1, seed=i))
    ds = MusdbHQ(tmp_path, split="train", valid_fraction=0.5, **clean(segment=0.3))
    stems, _ = ds[0]
    n = round(0.1 * RATE)
    assert stems.shape == (4, 2, round(0.3 * RATE))
    assert ds.excerpts(0)[0].frames == n and ds.excerpts(0)[0].start == 0
    np.testing.assert_array_equal(stems[0, :, :n].numpy(), read_stem(ds.tracks[0], "vocals"))
    assert torch.count_nonzero(stems[..., n:]) == 0


def test_items_depend_on_seed_epoch_and_index_only(hq_tree: Path) -> None:
    ds = MusdbHQ(hq_tree, segment=0.1, samples_per_track=3)
    twin = MusdbHQ(hq_tree, segment=0.1, samples_per_track=3)
    forward = [ds[i] for i in range(len(ds))]
    backward = [twin[i] for i in reversed(range(len(twin)))][::-1]
    for (a, name_a), (b, name_b) in zip(forward, backward, strict=True):
        assert torch.equal(a, b) and name_a == name_b
    ds.set_epoch(1)
    assert ds.epoch == 1
    assert all(not torch.equal(ds[i][0], forward[i][0]) for i in range(len(ds)))
    ds.set_epoch(0)
    assert torch.equal(ds[2][0], forward[2][0])
    other_seed = MusdbHQ(hq_tree, segment=0.1, samples_per_track=3, seed=43)
    assert not torch.equal(other_seed[2][0], forward[2][0])


def test_items_do_not_depend_on_workers(hq_tree: Path) -> None:
    ds = MusdbHQ(hq_tree, segment=0.05, samples_per_track=4)
    serial = torch.cat([b for b, _ in DataLoader(ds, batch_size=3)])
    parallel = torch.cat([b for b, _ in DataLoader(ds, batch_size=3, num_workers=2)])
    assert torch.equal(serial, parallel)
    # persistent workers follow set_epoch through the shared epoch counter
    loader = DataLoader(ds, batch_size=4, num_workers=2, persistent_workers=True)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        loaded = torch.cat([b for b, _ in loader])
        assert torch.equal(loaded, torch.stack([ds[i][0] for i in range(len(ds))]))
    assert not torch.equal(loaded, serial)


def test_gain_is_per_source_and_within_bounds(hq_tree: Path) -> None:
    plain = MusdbHQ(hq_tree, **clean(segment=0.1, samples_per_track=4))
    gained = MusdbHQ(hq_tree, **clean(segment=0.1, samples_per_track=4, gain=(0.25, 1.25)))
    gains = []
    for index in range(len(plain)):
        reference, _ = plain[index]
        stems, _ = gained[index]
        assert gained.excerpts(index) == plain.excerpts(index)
        for row, ref in zip(stems, reference, strict=True):
            gain = (row.norm() / ref.norm()).item()
            torch.testing.assert_close(row, gain * ref, rtol=1e-5, atol=1e-7)
            assert 0.25 <= gain < 1.25
            gains.append(gain)
    assert len(set(np.round(gains, 6))) == len(gains), "each source gets its own gain"
    assert max(gains) - min(gains) > 0.5


def test_channel_swap_swaps_some_sources(hq_tree: Path) -> None:
    plain = MusdbHQ(hq_tree, **clean(segment=0.1, samples_per_track=4))
    swapping = MusdbHQ(hq_tree, **clean(segment=0.1, samples_per_track=4, channel_swap=True))
    outcomes = []
    for index in range(len(plain)):
        for row, ref in zip(swapping[index][0], plain[index][0], strict=True):
            assert not torch.equal(ref, ref.flip(0)), "toy stems pan the channels differently"
            swapped = torch.equal(row, ref.flip(0))
            assert swapped or torch.equal(row, ref)
            outcomes.append(swapped)
    assert 0 < sum(outcomes) < len(outcomes)


def test_random_mix_draws_sources_from_different_tracks(tmp_path: Path) -> None:
    # every sample encodes (track, source, frame) exactly in float32, so an excerpt tells where
    # it was read from
    rate, nb_frames, nb_tracks = 8000, 4000, 5
    frame = np.arange(nb_frames, dtype=np.float32)
    for k in range(nb_tracks):
        stems = np.stack(
            [np.stack([code, code]) for code in (1e6 * (k + 1) + 1e5 * s + frame for s in range(4))]
        ).astype(np.float32)
        write_track(tmp_path / "train" / f"Track {k}", stems, rate=rate)
    ds = MusdbHQ(tmp_path, split="train", valid_fraction=0.2, segment=0.1, samples_per_track=8)
    options = clean(segment=0.1, samples_per_track=8, random_mix=True)
    ds_clean = MusdbHQ(tmp_path, split="train", valid_fraction=0.2, **options)
    seen: dict[str, set[int]] = {source: set() for source in MUSDB_SOURCES}
    mixed_items = 0
    for index in range(len(ds_clean)):
        stems, name = ds_clean[index]
        plan = ds_clean.excerpts(index)
        picked = set()
        rows = stems.numpy().astype(np.float64)
        for s, (row, excerpt) in enumerate(zip(rows, plan, strict=True)):
            k = int(row[0, 0] // 1e6) - 1
            assert int(row[0, 0] % 1e6 // 1e5) == s
            start = int(row[0, 0] % 1e5)
            assert excerpt.track.name == f"Track {k}" and excerpt.start == start
            np.testing.assert_array_equal(np.diff(row[0]), 1.0)
            seen[excerpt.source].add(k)
            picked.add(k)
        mixed_items += len(picked) > 1
        if len(picked) > 1:
            assert f"drums={plan[1].track.name}" in name
    assert mixed_items > len(ds_clean) // 2
    assert all(len(tracks) == len(ds.tracks) for tracks in seen.values())
    # the augmented dataset draws the same excerpts
    assert ds.excerpts(3) == ds_clean.excerpts(3)


def test_fingerprint(hq_tree: Path, tmp_path: Path, make_stems: Callable[..., np.ndarray]) -> None:
    a = MusdbHQ(hq_tree, "test", segment=None)
    assert len(a.fingerprint()) == 16
    assert a.fingerprint() == MusdbHQ(hq_tree, "test", segment=1.0, seed=3).fingerprint()
    assert a.fingerprint() != MusdbHQ(hq_tree, "train", segment=None).fingerprint()
    write_track(tmp_path / "test" / "Toy - Test 0", make_stems(4.0, seed=100))
    write_track(tmp_path / "test" / "Toy - Test 1", make_stems(3.0, seed=101))
    assert MusdbHQ(tmp_path, "test", segment=None).fingerprint() != a.fingerprint()


def test_bad_options_are_rejected(hq_tree: Path) -> None:
    for kwargs, message in (
        ({"segment": 0.0}, "segment"),
        ({"samples_per_track": 0}, "samples_per_track"),
        ({"gain": (1.0, 0.5)}, "gain"),
        ({"seed": -1}, "seed"),
        ({"sources": ("vocals", "vocals")}, "distinct"),
        ({"sources": "vocals"}, "list of names"),
        ({"split": "validation"}, "unknown split"),
    ):
        with pytest.raises(DatasetError, match=message):
            MusdbHQ(hq_tree, **kwargs)  # type: ignore[arg-type]
