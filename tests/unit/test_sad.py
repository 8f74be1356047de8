"""Source activity detection and the SAD-sampled dataset, on generated signals.

Signals run at 1 kHz so that a 6 s window is 6000 frames and a chunk 600: the rules are the same
as at 44.1 kHz and the tests stay fast.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from test_stem_mp4 import write_stem_mp4

from conftest import toy_stems
from stemkit.data.musdb import list_tracks
from stemkit.data.sad import (
    SadDataset,
    SadIndex,
    SadParams,
    _scan_windows,
    active_windows,
    build_sad_index,
    load_or_build_sad_index,
    window_is_active,
)
from stemkit.data.stems_mp4 import list_stem_tracks
from stemkit.errors import DatasetError

RATE = 1000
SOURCES = ("vocals", "bass")


def _noise(seconds: float, amplitude: float = 0.1, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal((channels, round(seconds * RATE)))).astype(np.float32)


def _silence_span(signal: np.ndarray, start: float, stop: float) -> np.ndarray:
    out = signal.copy()
    out[:, round(start * RATE) : round(stop * RATE)] = 0.0
    return out


# ---------------------------------------------------------------- detection


def test_steadily_active_signal_keeps_every_window() -> None:
    assert active_windows(_noise(12.0), RATE) == [(0, 6000), (3000, 9000), (6000, 12000)]


def test_window_silent_for_half_its_duration_is_dropped() -> None:
    # 5 of 10 chunks active: "more than 50 %" fails
    assert active_windows(_silence_span(_noise(6.0), 3.0, 6.0), RATE) == []
    # 6 of 10 chunks active: kept
    assert active_windows(_silence_span(_noise(6.0), 3.6, 6.0), RATE) == [(0, 6000)]
    # a silent stretch 3–6 s removes the two windows that contain it
    assert active_windows(_silence_span(_noise(12.0), 3.0, 6.0), RATE) == [(6000, 12000)]


def test_every_channel_must_be_active() -> None:
    stereo = _noise(6.0)
    stereo[1] = 0.0
    assert active_windows(stereo, RATE) == []
    stereo[1] = _noise(6.0, amplitude=0.01, channels=1, seed=1)[0]
    assert active_windows(stereo, RATE) == [(0, 6000)]


def test_quiet_but_active_signal_above_the_floor_is_kept() -> None:
    # RMS 5e-3 > floor 1e-3: kept; RMS 1e-4 < floor: no chunk exceeds the floored threshold
    assert active_windows(_noise(6.0, amplitude=5e-3), RATE) == [(0, 6000)]
    assert active_windows(_noise(6.0, amplitude=1e-4), RATE) == []
    assert active_windows(_noise(6.0, amplitude=1e-4), RATE, floor=1e-5) == [(0, 6000)]


def test_chunks_of_equal_rms_never_exceed_their_own_quantile() -> None:
    # the comparison is strict: a constant-RMS window is dropped (documented quirk)
    assert not window_is_active(np.ones((2, 6000), dtype=np.float32))


def test_rms_threshold_is_the_quantile_of_the_window() -> None:
    # chunk RMS 1..10 (one channel): the 15 % quantile is 2.35, 8 chunks exceed it → kept;
    # with quantile 0.5 (5.5) exactly 5 exceed it → dropped
    chunks = np.repeat(np.arange(1.0, 11.0), 600)[None, :]
    assert window_is_active(chunks)
    assert not window_is_active(chunks, SadParams(quantile=0.5))
    assert window_is_active(chunks, SadParams(quantile=0.5, min_fraction=0.4))


def test_inputs_and_settings_are_checked() -> None:
    assert active_windows(_noise(5.9), RATE) == [], "shorter than one window"
    torch_input = torch.from_numpy(_noise(9.0))
    assert active_windows(torch_input, RATE) == active_windows(torch_input.numpy(), RATE)
    with pytest.raises(ValueError, match="nb_channels, time"):
        active_windows(np.zeros(6000), RATE)
    with pytest.raises(ValueError, match="hop"):
        active_windows(_noise(6.0), RATE, hop=7.0)
    with pytest.raises(ValueError, match="quantile"):
        SadParams(quantile=1.5)
    with pytest.raises(ValueError, match="min_fraction"):
        SadParams(min_fraction=1.0)


# ---------------------------------------------------------------- index


def _write_tree(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """Three tracks, 13 s each: stems with silent stretches in different places."""
    stems = {
        "Toy - A": {
            "vocals": _silence_span(_noise(13.0, seed=1), 0.0, 4.0),
            "bass": _noise(13.0, seed=2),
        },
        "Toy - B": {
            "vocals": _noise(13.0, seed=3),
            "bass": _silence_span(_noise(13.0, seed=4), 5.0, 13.0),
        },
        "Toy - C": {"vocals": _noise(13.0, seed=5), "bass": _noise(13.0, seed=6)},
    }
    for name, by_source in stems.items():
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for source, signal in by_source.items():
            sf.write(folder / f"{source}.wav", signal.T, RATE, subtype="FLOAT")
        mixture = sum(by_source.values())
        sf.write(folder / "mixture.wav", np.asarray(mixture).T, RATE, subtype="FLOAT")
    return stems


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    root = tmp_path / "data"
    return root, _write_tree(root)


def test_index_matches_the_in_memory_detector(
    tree: tuple[Path, dict[str, dict[str, np.ndarray]]],
) -> None:
    root, stems = tree
    tracks = list_tracks(root, "train", SOURCES)
    index = build_sad_index(tracks, SOURCES)
    for source in SOURCES:
        expected = [
            (i, start, end)
            for i, track in enumerate(tracks)
            for start, end in active_windows(stems[track.name][source], RATE)
        ]
        assert index.windows[source] == expected
    # vocals of A silent 0–4 s: only the windows from 3 s (two thirds active) and 6 s;
    # bass of B silent from 5 s: only 0–6 s, which is active in 8 of its 10 chunks
    assert index.counts() == {"vocals": 2 + 3 + 3, "bass": 3 + 1 + 3}


def test_index_json_round_trip_and_fingerprint(
    tree: tuple[Path, dict[str, dict[str, np.ndarray]]], tmp_path: Path
) -> None:
    root, _ = tree
    tracks = list_tracks(root, "train", SOURCES)
    index = build_sad_index(tracks, SOURCES)
    path = tmp_path / "cache" / "sad.json"
    index.save(path)
    loaded = SadIndex.load(path, tracks)
    assert loaded.windows == index.windows and loaded.params == index.params
    assert loaded.fingerprint == index.fingerprint
    with pytest.raises(DatasetError, match="other tracks or settings"):
        SadIndex.load(path, tracks[:1])
    path.with_name("bad.json").write_text("{}")
    with pytest.raises(DatasetError, match="cannot read this SAD index"):
        SadIndex.load(path.with_name("bad.json"), tracks)
    # a cache built with other settings is rebuilt, and overwritten
    other = SadParams(window=4.0, hop=2.0)
    rebuilt = load_or_build_sad_index(path, tracks, SOURCES, other)
    assert rebuilt.params == other and rebuilt.fingerprint != index.fingerprint
    assert SadIndex.load(path, tracks).params == other
    assert load_or_build_sad_index(path, tracks, SOURCES, other).windows == rebuilt.windows


def test_index_does_not_depend_on_the_read_block(
    tree: tuple[Path, dict[str, dict[str, np.ndarray]]],
) -> None:
    root, _ = tree
    tracks = list_tracks(root, "train", SOURCES)
    expected = build_sad_index(tracks, SOURCES).windows
    # 3 windows per 13 s track; 0 s and 7 s: one window per read; 9 s: reads of 1, 2 windows
    for block_seconds in (0.0, 7.0, 9.0, 1000.0):
        assert build_sad_index(tracks, SOURCES, block_seconds=block_seconds).windows == expected
    longer = build_sad_index(tracks, SOURCES, SadParams(window=20.0, hop=10.0))
    assert longer.counts() == {source: 0 for source in SOURCES}, "no full window in 13 s"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_stem_mp4_blocks_cut_the_same_windows_as_single_reads(tmp_path: Path) -> None:
    path = tmp_path / "train" / "Toy.stem.mp4"
    path.parent.mkdir(parents=True)
    write_stem_mp4(path, toy_stems(4.0, seed=3))
    (track,) = list_stem_tracks(tmp_path, "train")
    win, step = SadParams(window=1.0, hop=0.5).frames(track.sample_rate)
    single = list(_scan_windows(track, "drums", win, step, block_seconds=0.0))
    blocks = list(_scan_windows(track, "drums", win, step, block_seconds=2.6))  # 3, 4 windows
    assert [start for start, _ in single] == [start for start, _ in blocks]
    assert [start for start, _ in single] == list(range(0, 3 * track.sample_rate + 1, step))
    for (_, one), (_, cut) in zip(single, blocks, strict=True):
        assert one.shape == (2, win)
        np.testing.assert_array_equal(one, cut)


# ---------------------------------------------------------------- dataset


def _dataset(root: Path, **options: Any) -> SadDataset:
    """A dataset over every track of the tree (no validation hold-out)."""
    return SadDataset(build_sad_index(list_tracks(root, "train", SOURCES), SOURCES), **options)


def test_dataset_items_have_the_right_shape_and_are_deterministic(
    tree: tuple[Path, dict[str, dict[str, np.ndarray]]],
) -> None:
    root, _ = tree
    data = _dataset(root, segment=3.0, nb_items=8, seed=5)
    assert len(data) == 8 and data.segment_frames == 3000 and data.nb_channels == 2
    stems, name = data[3]
    assert stems.shape == (2, 2, 3000) and stems.dtype == torch.float32
    again, again_name = data[3]
    assert torch.equal(stems, again) and name == again_name
    assert not torch.equal(stems, data[4][0])
    data.set_epoch(1)
    assert not torch.equal(stems, data[3][0])
    data.set_epoch(0)
    assert torch.equal(stems, data[3][0])
    other_seed = _dataset(root, nb_items=8, seed=6)
    assert not torch.equal(stems, other_seed[3][0])
    with pytest.raises(IndexError):
        data[8]


def test_dataset_crops_lie_in_kept_windows_with_bounded_gains(
    tree: tuple[Path, dict[str, dict[str, np.ndarray]]],
) -> None:
    root, stems_by_track = tree
    data = _dataset(root, nb_items=40, silence_p=0.0, normalize=False, seed=1)
    seg = data.segment_frames
    for i in range(len(data)):
        stems, name = data[i]
        for row, part in enumerate(name.split(" | ")):
            source, rest = part.split("=")
            track_name, start_text = rest.rsplit("@", 1)
            start = int(start_text)
            assert source == SOURCES[row]
            position = [t.name for t in data.index.tracks].index(track_name)
            assert any(
                p == position and lo <= start and start + seg <= hi
                for p, lo, hi in data.index.windows[source]
            )
            original = stems_by_track[track_name][source][:, start : start + seg]
            # kept windows may hold some silence: compare where the file is not silent
            audible = original != 0
            assert audible.mean() > 0.5
            ratio = stems[row].numpy()[audible].astype(np.float64) / original[audible]
            np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
            assert 10 ** (-10 / 20) <= ratio[0] <= 10 ** (10 / 20)
            assert not stems[row].numpy()[~audible].any()


def test_dataset_silencing_and_normalisation(
    tree: tuple[Path, dict[str, dict[str, np.ndarray]]],
) -> None:
    root, _ = tree
    silent = _dataset(root, nb_items=4, silence_p=1.0)
    assert torch.count_nonzero(silent[0][0]) == 0, "all silenced, and no division by zero"
    half = _dataset(root, nb_items=60, silence_p=0.5)
    silenced = [
        bool(torch.count_nonzero(stem) == 0) for i in range(len(half)) for stem in half[i][0]
    ]
    assert 0.3 < sum(silenced) / len(silenced) < 0.7
    normed = _dataset(root, nb_items=10, silence_p=0.0)
    for i in range(len(normed)):
        stems, _ = normed[i]
        peak = max(stems.sum(0).abs().max().item(), stems.abs().max().item())
        assert peak == pytest.approx(1.0, rel=1e-6)


def test_silent_target_silences_only_each_items_target(
    tree: tuple[Path, dict[str, dict[str, np.ndarray]]],
) -> None:
    root, _ = tree
    plain = _dataset(root, nb_items=12, silence_p=0.0, normalize=False, seed=3)
    always = _dataset(root, nb_items=12, silence_p=1.0, normalize=False, seed=3, silence="target")
    for i in range(len(always)):
        stems, name = always[i]
        reference, reference_name = plain[i]
        assert name == reference_name, "the same crops and gains whatever the silencing"
        target = i % len(SOURCES)  # the targets take turns
        assert torch.count_nonzero(stems[target]) == 0
        others = [row for row in range(len(SOURCES)) if row != target]
        assert torch.equal(stems[others], reference[others])
    # One target of two sources: the second is another stem of the tracks, never silenced.
    first = _dataset(root, nb_items=12, silence_p=1.0, silence="target", nb_targets=1)
    for i in range(len(first)):
        stems, _ = first[i]
        assert torch.count_nonzero(stems[0]) == 0 and torch.count_nonzero(stems[1]) > 0
    # The recipe's mode silences every source.
    everything = _dataset(root, nb_items=4, silence_p=1.0, silence="all")
    assert all(torch.count_nonzero(everything[i][0]) == 0 for i in range(len(everything)))
    with pytest.raises(DatasetError, match="silence must be one of all, target"):
        _dataset(root, silence="targets")
    with pytest.raises(DatasetError, match="nb_targets"):
        _dataset(root, nb_targets=3)


def test_dataset_rejects_impossible_settings(
    tree: tuple[Path, dict[str, dict[str, np.ndarray]]],
) -> None:
    root, _ = tree
    with pytest.raises(DatasetError, match=r"longer than the 6\.0 s SAD windows"):
        _dataset(root, segment=7.0)
    tracks = list_tracks(root, "train", SOURCES)
    index = build_sad_index(tracks, SOURCES, SadParams(floor=0.5))
    with pytest.raises(DatasetError, match="no active window for source"):
        SadDataset(index)
    with pytest.raises(DatasetError, match="silence_p"):
        SadDataset(build_sad_index(tracks, SOURCES), silence_p=2.0)


def test_from_root_uses_the_split_and_caches_the_index(
    tree: tuple[Path, dict[str, dict[str, np.ndarray]]], tmp_path: Path
) -> None:
    root, _ = tree
    cache = tmp_path / "sad-train.json"
    data = SadDataset.from_root(root, "train", SOURCES, index_path=cache, nb_items=3)
    # 3 tracks: one is held out for validation
    assert len(data.index.tracks) == 2 and cache.is_file()
    again = SadDataset.from_root(root, "train", SOURCES, index_path=cache, nb_items=3)
    assert again.fingerprint() == data.fingerprint()
    assert torch.equal(again[2][0], data[2][0])
