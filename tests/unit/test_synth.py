"""The synthetic multitrack generator: layout, exactness, determinism, errors, command line."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fluidsynth", reason="needs pyfluidsynth and the FluidSynth library")
pytest.importorskip("pretty_midi")

from stemkit.cli import data as data_cli
from stemkit.data.synth import render, synthesize, track_name, track_seed
from stemkit.data.synth.compose import GRID, PROGRAM_POOLS, STEMS, compose
from stemkit.data.synth.generate import GENERATOR_VERSION, TRACK_FILES, mix_exact
from stemkit.data.synth.render import default_soundfont, lr_correlation
from stemkit.data.synth.soundfonts import discover, split_pool
from stemkit.errors import DatasetError, StemkitError

RATE = 44100
SEED = 7
DURATION = 3.0
N_TRACKS = 3
#: int16 peak of -1 dBFS.
LIMIT = int(np.floor(32768 * 10 ** (-1 / 20)))


def _read(folder: Path, name: str) -> np.ndarray:
    """Decoded int16 samples ``(channels, time)``."""
    audio, rate = sf.read(folder / f"{name}.wav", dtype="int16", always_2d=True)
    assert rate == RATE
    return audio.T


def _tracks(root: Path) -> dict[str, Path]:
    return {p.name: p for split in ("train", "test") for p in sorted((root / split).iterdir())}


def _assert_same_track(a: Path, b: Path) -> None:
    for name in ("mixture", *STEMS):
        np.testing.assert_array_equal(_read(a, name), _read(b, name))
    assert json.loads((a / "meta.json").read_text()) == json.loads((b / "meta.json").read_text())
    assert (a / "song.mid").read_bytes() == (b / "song.mid").read_bytes()


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("synth") / "data"
    return root, synthesize(root, N_TRACKS, DURATION, SEED)


def test_layout_and_files(dataset: tuple[Path, list[Path]]) -> None:
    root, folders = dataset
    assert sorted(p.name for p in root.iterdir()) == ["test", "train"]
    # default test split: max(1, round(0.2 * 3)) = 1 track, the last index
    assert [p.parent.name for p in folders] == ["train", "train", "test"]
    assert [p.name for p in folders] == [track_name(i) for i in range(N_TRACKS)]
    for split in ("train", "test"):
        assert sorted((root / split).iterdir()) == sorted(
            p for p in folders if p.parent.name == split
        )
    for folder in folders:
        assert sorted(p.name for p in folder.iterdir()) == sorted(TRACK_FILES)


def test_audio_format(dataset: tuple[Path, list[Path]]) -> None:
    for folder in dataset[1]:
        for name in ("mixture", *STEMS):
            info = sf.info(str(folder / f"{name}.wav"))
            assert (info.samplerate, info.channels, info.subtype) == (RATE, 2, "PCM_16")
            assert info.frames == round(DURATION * RATE)


def test_mixture_is_exact_integer_sum_without_clipping(dataset: tuple[Path, list[Path]]) -> None:
    for folder in dataset[1]:
        stems = np.stack([_read(folder, s) for s in STEMS]).astype(np.int32)
        mixture = _read(folder, "mixture").astype(np.int32)
        np.testing.assert_array_equal(mixture, stems.sum(axis=0))
        assert np.abs(mixture).max() <= LIMIT
        assert np.abs(stems).max() <= LIMIT
        # normalised to the -1 dBFS target: the mixture or, where stems partly cancel in the
        # produced mix (filters shift phases), the loudest stem
        assert max(np.abs(mixture).max(), np.abs(stems).max()) >= LIMIT - 8


def test_stems_active_and_vocals_have_exact_silence(dataset: tuple[Path, list[Path]]) -> None:
    for folder in dataset[1]:
        for stem in STEMS:
            x = _read(folder, stem).astype(np.float64) / 32768
            windows = x[:, : 3 * RATE].reshape(2, 3, RATE)
            rms_db = 10 * np.log10(np.mean(windows**2, axis=(0, 2)) + 1e-20)
            active = np.mean(rms_db > -50)
            assert active >= (1 / 3 if stem == "vocals" else 2 / 3), (folder.name, stem, rms_db)
            assert lr_correlation(x) > 0.0, (folder.name, stem)
        vocals = _read(folder, "vocals")
        silent = np.all(vocals == 0, axis=0)
        spans = json.loads((folder / "meta.json").read_text())["composition"]
        spans = spans["silent_spans_samples"]["vocals"]
        # meta.json lists where the vocals are exactly zero: the rests less the breath the
        # sung voice takes before a phrase and the effects' tail after one (rests too short
        # for that are left out)
        for start, stop in spans:
            assert silent[start + int(0.05 * RATE) : stop].all()
        assert not silent.all()


def test_meta(dataset: tuple[Path, list[Path]]) -> None:
    # Songs draw their soundfont from the training pool (every installed one but the one kept
    # for held-out songs), so the meta names the song's own soundfont and the pool.
    training, _ = split_pool(discover())
    for index, folder in enumerate(dataset[1]):
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["generator_version"] == GENERATOR_VERSION
        assert (meta["seed"], meta["index"], meta["name"]) == (SEED, index, folder.name)
        assert meta["track_seed"] == track_seed(SEED, index)
        assert [f["name"] for f in meta["soundfont_pool"]] == [f.name for f in training]
        by_file = {f.path.name: f for f in training}
        font = by_file[meta["soundfont"]["file"]].path
        assert meta["soundfont"] == {
            "file": font.name,
            "sha256": hashlib.sha256(font.read_bytes()).hexdigest(),
        }
        assert meta["fluidsynth_version"].count(".") == 2
        assert meta["synth_settings"]["synth.dynamic-sample-loading"] == 1
        assert 88 <= meta["composition"]["tempo_bpm"] <= 131
        parts = {p["name"]: p for p in meta["composition"]["parts"]}
        assert parts["lead"]["stem"] == "vocals" and parts["lead"]["program"] in (52, 53, 54)
        assert parts["drums"]["is_drum"] and parts["drums"]["channel"] == 10
        assert parts["bass"]["program"] in PROGRAM_POOLS["bass"]
        assert set(meta["composition"]["gains_db"]) == set(STEMS)
        assert all(abs(g) <= 6 for g in meta["composition"]["gains_db"].values())
        assert not any(k in json.dumps(meta).lower() for k in ("timestamp", "created", "date"))


def test_song_mid_matches_composition(dataset: tuple[Path, list[Path]]) -> None:
    import pretty_midi

    folder = dataset[1][0]
    meta = json.loads((folder / "meta.json").read_text())
    midi = pretty_midi.PrettyMIDI(str(folder / "song.mid"))
    assert len(midi.instruments) == len(meta["composition"]["parts"])
    assert sum(inst.is_drum for inst in midi.instruments) == 1
    assert midi.estimate_tempo() > 0
    # MIDI stores whole microseconds per beat
    assert midi.get_tempo_changes()[1][0] == pytest.approx(meta["composition"]["tempo_bpm"], 1e-5)
    song = compose(meta["track_seed"], DURATION)
    for inst, part in zip(midi.instruments, song.parts, strict=True):
        starts = np.array([n.start for n in inst.notes]) * RATE
        expected = np.array([n.start for n in part.notes])
        # MIDI ticks at 960 per beat keep the grid times within 0.3 ms
        np.testing.assert_allclose(np.sort(starts), np.sort(expected), atol=0.0003 * RATE)


def test_same_seed_same_output_with_two_workers(
    dataset: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    other = synthesize(tmp_path / "again", N_TRACKS, DURATION, SEED, workers=2)
    assert [p.relative_to(tmp_path / "again") for p in other] == [
        p.relative_to(dataset[0]) for p in dataset[1]
    ]
    for a, b in zip(dataset[1], other, strict=True):
        _assert_same_track(a, b)


def test_track_does_not_depend_on_dataset_size(
    dataset: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    (single,) = synthesize(tmp_path / "one", 1, DURATION, SEED)
    assert single.parent.name == "test"
    _assert_same_track(dataset[1][0], single)


def test_different_seed_different_output(dataset: tuple[Path, list[Path]], tmp_path: Path) -> None:
    (other,) = synthesize(tmp_path / "seed8", 1, DURATION, SEED + 1)
    assert not np.array_equal(_read(other, "mixture"), _read(dataset[1][0], "mixture"))
    assert track_seed(SEED, 0) != track_seed(SEED + 1, 0)


def test_rerun_keeps_existing_tracks_and_refuses_conflicts(tmp_path: Path) -> None:
    root = tmp_path / "data"
    stale = root / "test" / f".{track_name(0)}.partial-1"  # left by an interrupted run
    stale.mkdir(parents=True)
    (stale / "drums.wav").write_bytes(b"half")
    (folder,) = synthesize(root, 1, 2.0, 1)
    assert [p.name for p in (root / "test").iterdir()] == [folder.name]
    stamp = (folder / "mixture.wav").stat().st_mtime_ns
    assert synthesize(root, 1, 2.0, 1) == [folder]
    assert (folder / "mixture.wav").stat().st_mtime_ns == stamp
    with pytest.raises(DatasetError, match="other settings"):
        synthesize(root, 1, 2.0, 2)
    assert [p.name for p in (root / "test").iterdir()] == [folder.name]


def test_bad_soundfont_gives_clear_error_and_no_output(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sf2"
    with pytest.raises(StemkitError, match=r"nope\.sf2.*not found"):
        synthesize(tmp_path / "out", 1, 2.0, 0, soundfont=missing)
    garbage = tmp_path / "garbage.sf2"
    garbage.write_bytes(b"not a soundfont" * 100)
    with pytest.raises(StemkitError, match=r"garbage\.sf2.*cannot load"):
        synthesize(tmp_path / "out", 1, 2.0, 0, soundfont=garbage)
    assert not (tmp_path / "out").exists()


def test_soundfont_bundled_with_pretty_midi(tmp_path: Path) -> None:
    import pretty_midi

    font = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    (folder,) = synthesize(tmp_path / "pm", 1, 2.0, 0, soundfont=font)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["soundfont"]["sha256"] == hashlib.sha256(font.read_bytes()).hexdigest()
    stems = np.stack([_read(folder, s) for s in STEMS]).astype(np.int32)
    assert np.all(np.abs(stems).max(axis=(1, 2)) > 100)  # every stem sounds
    np.testing.assert_array_equal(_read(folder, "mixture"), stems.sum(axis=0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_tracks": 0}, "--tracks"),
        ({"duration": 1.0}, "--duration"),
        ({"n_test": 3}, "--test-tracks"),
        ({"workers": 0}, "--workers"),
        ({"seed": -1}, "--seed"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, int | float], message: str) -> None:
    args: dict[str, int | float] = {"n_tracks": 2, "duration": 2.0, "seed": 0}
    args.update(kwargs)
    with pytest.raises(StemkitError, match=message):
        synthesize(tmp_path / "out", **args)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_compose_is_deterministic_and_on_grid() -> None:
    a, b = compose(123, 8.0), compose(123, 8.0)
    assert a == b
    assert compose(124, 8.0) != a
    assert {part.stem for part in a.parts} == set(STEMS)
    for part in a.parts:
        assert part.notes, part.name
        for note in part.notes:
            assert note.start % GRID == 0 and note.end % GRID == 0
            assert 0 <= note.start < note.end <= a.music_end
        by_pitch: dict[int, int] = {}
        for note in part.notes:  # no overlapping notes of one pitch on a channel
            assert note.start >= by_pitch.get(note.pitch, 0)
            by_pitch[note.pitch] = note.end
    assert a.n_samples == 8 * RATE and a.music_end <= a.n_samples - RATE + GRID
    with pytest.raises(StemkitError, match="at least"):
        compose(1, 1.5)


def test_compose_respects_allowed_programs() -> None:
    allowed = {0, 33, 48, 54}
    song = compose(5, 4.0, allowed_programs=allowed)
    assert all(part.program in allowed for part in song.parts if not part.is_drum)
    with pytest.raises(StemkitError, match="lead"):
        compose(5, 4.0, allowed_programs={0, 33, 48})


def test_longer_song_has_vocal_intro_and_rest_spans() -> None:
    song = compose(11, 30.0)
    spans = song.silent_spans["vocals"]
    bar = 4 * 60 / song.tempo * RATE
    assert spans[0][0] == 0 and spans[0][1] >= 2 * bar - GRID  # a two-bar intro
    assert len(spans) >= 2


def test_mix_exact_on_random_stems() -> None:
    rng = np.random.default_rng(0)
    stems = {s: rng.standard_normal((2, 5000)).astype(np.float32) * 0.3 for s in STEMS}
    stems["bass"] = -stems["drums"] * 1.5  # partial cancellation: a stem peaks above the mix
    ints, mixture, gain = mix_exact(stems, {s: 0.0 for s in STEMS})
    assert gain > 0 and mixture.dtype == np.int16
    total = np.sum([a.astype(np.int32) for a in ints.values()], axis=0)
    np.testing.assert_array_equal(mixture, total)
    assert max(int(np.abs(a.astype(np.int32)).max()) for a in [mixture, *ints.values()]) <= LIMIT
    with pytest.raises(StemkitError, match="silent"):
        mix_exact({s: np.zeros((2, 10), np.float32) for s in STEMS}, {s: 0.0 for s in STEMS})


def test_missing_fluidsynth_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "fluidsynth", None)  # makes the import fail
    render._fluidsynth.cache_clear()
    try:
        with pytest.raises(StemkitError, match=r"apt-get install libfluidsynth3.*stemkit\[data\]"):
            synthesize(tmp_path / "out", 1, 2.0, 0)
    finally:
        monkeypatch.undo()
        render._fluidsynth.cache_clear()
    assert not (tmp_path / "out").exists()


def test_preset_screening(monkeypatch: pytest.MonkeyPatch) -> None:
    font = default_soundfont()
    scores = render.screen_programs(font, (0, 33, 52, 53))
    assert all(-1.0 <= c <= 1.0 for c in scores.values())
    assert scores[0] > 0.5  # a piano chord is nearly mono
    assert render.usable_programs(font, scores) == set(scores)  # none anti-phase here
    cut = sorted(scores.values())[1]
    monkeypatch.setattr(render, "MIN_LR_CORRELATION", cut)
    assert render.usable_programs(font, scores) == {p for p, c in scores.items() if c >= cut}


def test_lr_correlation() -> None:
    x = np.sin(np.linspace(0, 100, 1000))
    assert lr_correlation(np.stack([x, x])) == pytest.approx(1.0)
    assert lr_correlation(np.stack([x, -x])) == pytest.approx(-1.0)
    assert lr_correlation(np.zeros((2, 10))) == 0.0


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="stemkit")
    data_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "cli"
    args = parser.parse_args(
        [
            "data",
            "synth",
            str(out),
            "--tracks",
            "2",
            "--duration",
            "2",
            "--seed",
            "3",
            "--test-tracks",
            "0",
        ]
    )
    assert args.func(args) == 0
    assert sorted(p.name for p in (out / "train").iterdir()) == [track_name(0), track_name(1)]
    assert list((out / "test").iterdir()) == []
    assert "2 tracks" in capsys.readouterr().err
    bad = parser.parse_args(["data", "synth", str(tmp_path / "x"), "--soundfont", "/no/such.sf2"])
    with pytest.raises(StemkitError, match="not found"):
        bad.func(bad)
