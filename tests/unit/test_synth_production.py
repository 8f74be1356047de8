"""The generator's timbres and production: soundfonts, effects, exact mixing, held-out songs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fluidsynth", reason="needs pyfluidsynth and the FluidSynth library")
pytest.importorskip("pretty_midi")
pytest.importorskip("pedalboard")

from stemkit.cli.main import main
from stemkit.data.synth import synthesize
from stemkit.data.synth.compose import STEMS, compose
from stemkit.data.synth.generate import select_soundfonts, track_name, track_seed
from stemkit.data.synth.production import (
    RANGES,
    SPLITS,
    bus_gain,
    crest_factor_db,
    draw_settings,
    process_stem,
)
from stemkit.data.synth.render import SYSTEM_SOUNDFONT
from stemkit.data.synth.soundfonts import discover, resolve, split_pool
from stemkit.errors import StemkitError

RATE = 44100
DURATION = 3.0
#: int16 peak of -1 dBFS.
LIMIT = int(np.floor(32768 * 10 ** (-1 / 20)))
FLUID = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
#: Two quick soundfonts: FluidR3 is reserved for held-out songs, training uses TimGM6mb.
TWO_FONTS = "FluidR3_GM,TimGM6mb"
needs_two_fonts = pytest.mark.skipif(
    not (FLUID.is_file() and SYSTEM_SOUNDFONT.is_file()),
    reason="needs Debian's fluid-soundfont-gm and timgm6mb-soundfont",
)


def _read(folder: Path, name: str) -> np.ndarray:
    audio, rate = sf.read(folder / f"{name}.wav", dtype="int16", always_2d=True)
    assert rate == RATE
    return audio.T


def _settings(folder: Path) -> dict:
    return json.loads((folder / "settings.json").read_text())


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny songs with the defaults: every soundfont, production on."""
    return synthesize(tmp_path_factory.mktemp("prod") / "data", 2, DURATION, 5, n_test=0)


def test_exact_int16_sum_with_every_effect_on(produced: list[Path]) -> None:
    for folder in produced:
        effects = _settings(folder)["effects"]
        # every stem went through the whole chain, and the bus through compressor and limiter
        for stem in STEMS:
            expected = {name.split(".", 1)[1] for name in RANGES if name.startswith(stem + ".")}
            assert set(effects[stem]) == (expected - {"pan_abs"}) | {"pan"}
            assert effects[stem]["reverb_wet"] > 0 or stem == "bass"
        assert effects["bus"]["limiter_drive_db"] >= 2.0
        stems = np.stack([_read(folder, s) for s in STEMS]).astype(np.int32)
        mixture = _read(folder, "mixture").astype(np.int32)
        np.testing.assert_array_equal(mixture, stems.sum(axis=0))
        assert max(np.abs(mixture).max(), np.abs(stems).max()) <= LIMIT  # never clips
        assert np.all(np.abs(stems).max(axis=(1, 2)) > 100)  # every stem sounds
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["production"] and meta["effects"] == effects


def test_same_seed_same_bytes_serial_and_parallel(produced: list[Path], tmp_path: Path) -> None:
    again = synthesize(tmp_path / "again", 2, DURATION, 5, n_test=0)
    parallel = synthesize(tmp_path / "parallel", 2, DURATION, 5, n_test=0, workers=2)
    for a, b, c in zip(produced, again, parallel, strict=True):
        names = sorted(p.name for p in a.iterdir())
        assert names == sorted(p.name for p in b.iterdir()) == sorted(p.name for p in c.iterdir())
        for name in names:
            assert (a / name).read_bytes() == (b / name).read_bytes() == (c / name).read_bytes()


def test_production_is_not_a_no_op(produced: list[Path], tmp_path: Path) -> None:
    (dry,) = synthesize(tmp_path / "dry", 1, DURATION, 5, n_test=0, production=False)
    wet = produced[0]
    assert _settings(dry)["effects"] is None
    assert _settings(dry)["soundfonts"] == _settings(wet)["soundfonts"]
    for stem in STEMS:
        a, b = _read(dry, stem).astype(np.float64), _read(wet, stem).astype(np.float64)
        a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
        assert np.sum(a * b) < 0.999, stem  # same notes, audibly different stem


def _burst(seconds: float = 0.3, total: float = 2.0) -> np.ndarray:
    """A decaying noise burst followed by silence: ``(2, time)`` float32."""
    rng = np.random.default_rng(0)
    n, length = int(seconds * RATE), int(total * RATE)
    audio = np.zeros((2, length), dtype=np.float32)
    audio[:, :n] = rng.standard_normal((2, n)) * np.exp(-np.arange(n) / (0.1 * RATE)) * 0.3
    return audio


def test_reverb_leaves_a_tail_after_the_note() -> None:
    settings = dict(draw_settings(3)["vocals"])
    settings.update(delay_mix=0.0, reverb_wet=0.25, reverb_room=0.7)
    dry_settings = {**settings, "reverb_wet": 0.0}
    burst = _burst()
    after = slice(int(0.5 * RATE), int(1.5 * RATE))  # from 0.2 s after the burst ends
    wet = process_stem(burst, settings, RATE, tempo=120)
    dry = process_stem(burst, dry_settings, RATE, tempo=120)
    tail_wet = float(np.mean(wet[:, after] ** 2))
    tail_dry = float(np.mean(dry[:, after] ** 2))
    assert tail_wet > 1e-6 and tail_wet > 100 * tail_dry


def test_compression_and_limiter_reduce_the_crest_factor() -> None:
    rng = np.random.default_rng(1)
    mix = rng.standard_normal((2, 4 * RATE)) * 0.05
    mix[:, :: RATE // 3] += 0.9  # sparse peaks, far above the body of the signal
    for split in SPLITS:
        bus = draw_settings(11, split)["bus"]
        gains = bus_gain(mix, bus, RATE)
        assert gains.shape == (mix.shape[1],) and np.all((gains > 0) & (gains <= 1))
        assert crest_factor_db(mix) - crest_factor_db(mix * gains) > 1.0, split
        # the limiter alone takes much of its drive off the peaks (its release also lowers the
        # signal around them a little)
        limiter = bus_gain(mix, {**bus, "ratio": 1.0}, RATE)
        reduction = crest_factor_db(mix) - crest_factor_db(mix * limiter)
        assert reduction > 0.5 * bus["limiter_drive_db"], (split, reduction)
    # a stem compressor with a low threshold and a high ratio narrows the loudness range
    # between loud and quiet passages
    rng = np.random.default_rng(0)
    envelope = np.repeat(np.tile([1.0, 0.1], 4), RATE // 4)
    passages = (rng.standard_normal((2, envelope.size)) * 0.1 * envelope).astype(np.float32)
    stem = dict(draw_settings(3)["drums"])
    stem.update(comp_threshold_db=-30.0, comp_ratio=8.0, drive_db=0.0, reverb_wet=0.0)
    stem.update(delay_mix=0.0)

    def loudness_range(audio: np.ndarray) -> float:
        power = np.mean(audio.astype(np.float64) ** 2, axis=0)
        loud, quiet = power[envelope == 1.0].mean(), power[envelope != 1.0].mean()
        return 10 * float(np.log10(loud / quiet))

    squeezed = loudness_range(process_stem(passages, stem, RATE, 120))
    plain = loudness_range(process_stem(passages, {**stem, "comp_ratio": 1.0}, RATE, 120))
    assert plain > 18 and squeezed < plain - 6


def test_effect_ranges_of_training_and_heldout_are_disjoint() -> None:
    for name, (train, heldout) in RANGES.items():
        assert train[0] <= train[1] and heldout[0] <= heldout[1], name
        assert heldout[1] < train[0] or heldout[0] > train[1], name
    for seed in range(5):
        for which, split in enumerate(SPLITS):
            for group, values in draw_settings(seed, split).items():
                for param, value in values.items():
                    key = f"{group}.{'pan_abs' if param == 'pan' else param}"
                    low, high = RANGES[key][which]
                    assert low <= abs(value) if param == "pan" else low <= value, key
                    assert (abs(value) if param == "pan" else value) <= high, key


@needs_two_fonts
def test_heldout_uses_a_soundfont_and_effects_training_never_uses(tmp_path: Path) -> None:
    root = tmp_path / "data"
    train = synthesize(root, 2, DURATION, 9, soundfonts=TWO_FONTS, n_test=0)
    held = synthesize(root, 2, DURATION, 9, soundfonts=TWO_FONTS, heldout=True)
    assert [p.parent.name for p in held] == ["test", "test"]
    assert [p.name for p in held] == [track_name(i, heldout=True) for i in range(2)]
    train_fonts = {f for p in train for f in _settings(p)["soundfonts"].values()}
    held_fonts = {f for p in held for f in _settings(p)["soundfonts"].values()}
    assert train_fonts == {"TimGM6mb"} and held_fonts == {"FluidR3_GM"}
    for folder, which in [(p, 0) for p in train] + [(p, 1) for p in held]:
        settings = _settings(folder)
        assert settings["split"] == SPLITS[which]
        assert settings["track_seed"] == track_seed(9, settings["index"], heldout=which == 1)
        for group, values in settings["effects"].items():
            for param, value in values.items():
                key = f"{group}.{'pan_abs' if param == 'pan' else param}"
                low, high = RANGES[key][1 - which]  # never inside the other split's range
                assert not low <= (abs(value) if param == "pan" else value) <= high, key
    assert {_settings(p)["track_seed"] for p in train}.isdisjoint(
        {_settings(p)["track_seed"] for p in held}
    )
    with pytest.raises(StemkitError, match="--test-tracks"):
        synthesize(root, 2, DURATION, 9, soundfonts=TWO_FONTS, heldout=True, n_test=1)


def test_heldout_needs_two_soundfonts(tmp_path: Path) -> None:
    with pytest.raises(StemkitError, match="--heldout needs a soundfont that training"):
        synthesize(tmp_path / "out", 1, DURATION, 0, soundfonts="TimGM6mb", heldout=True)
    assert not (tmp_path / "out").exists()


def test_soundfont_discovery(tmp_path: Path) -> None:
    installed = discover()
    assert installed, "at least the TimGM6mb fallback"
    names = [font.name for font in installed]
    assert len(set(names)) == len(names) == len({font.path for font in installed})
    assert all(font.path.suffix in (".sf2", ".sf3") for font in installed)
    if SYSTEM_SOUNDFONT.is_file():
        assert "TimGM6mb" in names
    # a folder of our own: links count once, files FluidSynth cannot load are skipped
    folder = tmp_path / "sf2"
    folder.mkdir()
    (folder / "broken.sf2").write_bytes(b"not a soundfont" * 100)
    fallback = (
        installed[[f.name for f in installed].index("TimGM6mb")]
        if "TimGM6mb" in names
        else installed[0]
    )
    (folder / "default-GM.sf2").symlink_to(fallback.path)
    (folder / "again.sf2").symlink_to(fallback.path)
    found = discover((folder,))
    assert [(f.name, f.path) for f in found] == [(fallback.name, fallback.path)]
    # an empty folder falls back to TimGM6mb
    (tmp_path / "empty").mkdir()
    assert discover((tmp_path / "empty",))[0].name == "TimGM6mb"


def test_soundfont_names_resolve_and_unknown_names_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    installed = discover()
    assert resolve("all") == resolve(None) == installed
    assert resolve(installed[0].name.upper()) == (installed[0],)
    with pytest.raises(StemkitError, match=r"unknown soundfont 'NoSuchFont'.*installed"):
        resolve("TimGM6mb,NoSuchFont")
    out = tmp_path / "out"
    assert main(["data", "synth", str(out), "--tracks", "1", "--soundfonts", "NoSuchFont"]) != 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown soundfont 'NoSuchFont'" in line
    assert all(font.name in line for font in installed)
    assert not out.exists()


@needs_two_fonts
def test_soundfont_per_part(tmp_path: Path) -> None:
    import pretty_midi

    bundled = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    spec = [FLUID, SYSTEM_SOUNDFONT, bundled]
    training, reserved = split_pool(resolve(spec), str(bundled))
    assert reserved is not None and reserved.path == bundled and len(training) == 2
    fonts = select_soundfonts(spec, heldout_soundfont=str(bundled))
    assert [f.path for f in fonts] == [FLUID, SYSTEM_SOUNDFONT]
    folders = synthesize(
        tmp_path / "parts",
        3,
        DURATION,
        4,
        soundfonts=spec,
        heldout_soundfont=str(bundled),
        soundfont_mode="part",
        n_test=0,
    )
    drawn = [_settings(p)["soundfonts"] for p in folders]
    assert any(len(set(d.values())) > 1 for d in drawn)  # parts of one song on two soundfonts
    for folder, parts in zip(folders, drawn, strict=True):
        song = compose(_settings(folder)["track_seed"], DURATION)
        assert set(parts) == {part.name for part in song.parts}
        stems = np.stack([_read(folder, s) for s in STEMS]).astype(np.int32)
        np.testing.assert_array_equal(_read(folder, "mixture"), stems.sum(axis=0))
