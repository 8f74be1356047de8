"""The sung vocals of the synthetic songs: pitch, vibrato, speech-like spectra, determinism."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemkit.data.synth import render, synthesize, voice
from stemkit.data.synth.compose import SCALES, STEMS, Song, compose
from stemkit.errors import StemkitError

RATE = 44100
#: Short songs whose lead singers cover both registers (high: as written; low: an octave down).
SEEDS = (2, 3)

needs_voice = pytest.mark.skipif(
    not voice.available(), reason="needs espeak-ng and praat-parselmouth"
)


@functools.lru_cache(maxsize=4)
def _sung(seed: int, duration: float = 6.0) -> tuple[Song, voice.VocalPlan, dict[str, np.ndarray]]:
    song = voice.sung_song(compose(seed, duration))
    plan = voice.plan_vocals(song)
    return song, plan, voice.sing(song, plan)


def _pitch(audio: np.ndarray, step: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Praat's F0 track (times, Hz; 0 where unvoiced) of mono audio."""
    import parselmouth

    pitch = parselmouth.Sound(audio.astype(np.float64), RATE).to_pitch(step, 60.0, 1000.0)
    return pitch.xs(), pitch.selected_array["frequency"]


def _hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


@needs_voice
def test_plan_is_seeded_and_keeps_the_notes() -> None:
    song = voice.sung_song(compose(SEEDS[0], 6.0))
    plan = voice.plan_vocals(song)
    assert plan == voice.plan_vocals(song)
    assert plan.describe() != voice.plan_vocals(voice.sung_song(compose(99, 6.0))).describe()
    lead = plan.takes[0]
    notes = song.stem_parts("vocals")[0].notes
    assert lead.name == "lead" and len(lead.syllables) == len(notes)
    assert [n.pitch + lead.singer.transpose for n in notes] == [n.pitch for n in lead.notes]
    assert lead.singer.transpose in (0, -12)
    assert json.dumps(plan.describe())  # JSON-ready for meta.json


@needs_voice
def test_registers_double_and_harmony_across_seeds() -> None:
    kinds: set[str] = set()
    registers: set[int] = set()
    for seed in range(12):
        song = voice.sung_song(compose(seed, 8.0))
        plan = voice.plan_vocals(song)
        registers.add(plan.takes[0].singer.transpose)
        lead = {n.start: n for n in plan.takes[0].notes}
        scale = {(song.tonic + step) % 12 for step in SCALES[song.mode]}
        for take in plan.takes[1:]:
            kinds.add(take.name)
            assert take.gain_db < 0
            if take.name == "double":  # a second take: small timing and pitch deviations
                deviations = [
                    abs(a.start - b.start)
                    for a, b in zip(plan.takes[0].notes, take.notes, strict=True)
                ]
                assert max(deviations) <= 0.025 * RATE + 1 and any(deviations)
                assert all(abs(c) <= 12 for c in take.cents)
            else:  # a diatonic third (3-4 semitones) or fifth (6-8) above the lead
                intervals = {n.pitch - lead[n.start].pitch for n in take.notes}
                assert intervals <= {3, 4} or intervals <= {6, 7, 8}, intervals
                assert all(n.pitch % 12 in scale for n in take.notes)
    assert kinds == {"double", "harmony"}
    assert registers == {0, -12}


@needs_voice
@pytest.mark.parametrize("seed", SEEDS)
def test_sung_pitch_follows_the_melody(seed: int) -> None:
    _, plan, layers = _sung(seed)
    lead = plan.takes[0]
    times, f0 = _pitch(layers["lead"][0])
    inside = agree = 0
    for note in lead.notes:
        in_note = (times >= note.start / RATE) & (times < note.end / RATE) & (f0 > 0)
        if in_note.sum() < 3:
            continue
        # the median over the note leaves the vibrato and the portamento out
        cents = 1200 * np.log2(np.median(f0[in_note]) / _hz(note.pitch))
        inside += int(in_note.sum())
        agree += int(in_note.sum()) if abs(cents) < 50 else 0
    assert inside > 0.5 * sum(n.end - n.start for n in lead.notes) / RATE / 0.01
    assert agree >= 0.8 * inside, (agree, inside)


@needs_voice
def test_vibrato_in_the_4_to_7_hz_band() -> None:
    _, plan, layers = _sung(SEEDS[0])
    lead = plan.takes[0]
    step = 0.005
    times, f0 = _pitch(layers["lead"][0], step)
    long_notes = [n for n in lead.notes if n.end - n.start >= 0.6 * RATE]
    assert long_notes
    for note in long_notes:
        # from after the vibrato's onset to before the next syllable's consonant
        start = note.start / RATE + lead.singer.vibrato_delay + 0.2
        span = (times >= start) & (times < note.end / RATE - 0.1) & (f0 > 0)
        cents = 1200 * np.log2(f0[span] / _hz(note.pitch))
        assert cents.size * step >= 0.25
        t = np.arange(cents.size) * step
        # least-squares fit of offset + drift + sinusoid over a grid of rates
        fits = {}
        for rate in np.arange(1.0, 15.0, 0.05):
            basis = np.stack(
                [np.ones_like(t), t, np.sin(2 * np.pi * rate * t), np.cos(2 * np.pi * rate * t)], 1
            )
            coef, *_ = np.linalg.lstsq(basis, cents, rcond=None)
            residual = cents - basis @ coef
            fits[float(rate)] = (float(np.var(residual)), float(np.hypot(coef[2], coef[3])))
        rate = min(fits, key=lambda r: fits[r][0])
        steady = cents - np.polyval(np.polyfit(t, cents, 1), t)
        explained = 1 - fits[rate][0] / float(np.var(steady))
        assert 4.0 <= rate <= 7.0 and rate == pytest.approx(lead.singer.vibrato_hz, abs=0.5)
        assert explained > 0.7, explained
        assert 20 <= fits[rate][1] <= 100  # 30-80 cents, as drawn


def _centroid_spread(audio: np.ndarray) -> float:
    """Standard deviation (octaves) of the spectral centroid over the loud 20 ms frames."""
    n = int(0.02 * RATE)
    frames = audio[: audio.size // n * n].reshape(-1, n) * np.hanning(n)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    energy = power.sum(axis=1)
    loud = energy > 1e-3 * energy.max()
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    centroid = (power[loud] * freqs).sum(axis=1) / energy[loud]
    return float(np.std(np.log2(centroid)))


@needs_voice
def test_spectrum_moves_like_speech_unlike_the_synth_voice() -> None:
    song, _, layers = _sung(SEEDS[0])
    synth = render.render_stem(song, "vocals", render.default_soundfont(), voice="synth")
    sung_spread = _centroid_spread(layers["lead"][0])
    synth_spread = _centroid_spread(synth[0])
    assert sung_spread > 1.5 * synth_spread, (sung_spread, synth_spread)


@needs_voice
def test_breaths_before_phrases_outside_the_silent_spans() -> None:
    song, plan, layers = _sung(SEEDS[1], 8.0)
    assert plan.breaths
    onsets = [song.stem_parts("vocals")[0].notes[g[0]].start for g in voice.phrases(song)]
    for start, stop in plan.breaths:
        assert any(0 < onset - stop <= 0.2 * RATE for onset in onsets)
        assert np.abs(layers["breaths"][:, start:stop]).max() > 0
        assert not any(a < stop and start < b for a, b in song.silent_spans["vocals"])
    outside = np.ones(song.n_samples, dtype=bool)
    for start, stop in plan.breaths:
        outside[start:stop] = False
    assert not np.any(layers["breaths"][:, outside])


@needs_voice
def test_espeak_is_deterministic() -> None:
    first = voice._spoken("la:", "en+f3", 60).copy()
    voice._spoken.cache_clear()
    assert voice._spoken("la:", "en+f3", 60).tobytes() == first.tobytes()


@pytest.fixture(scope="module")
def sung_dataset(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    if not voice.available():
        pytest.skip("needs espeak-ng and praat-parselmouth")
    root = tmp_path_factory.mktemp("sung")
    return synthesize(root / "a", 1, 4.0, 5, n_test=0, voice="sung")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@needs_voice
def test_same_seed_same_bytes(sung_dataset: list[Path], tmp_path: Path) -> None:
    voice._spoken.cache_clear()  # espeak-ng runs again
    [again] = synthesize(tmp_path / "b", 1, 4.0, 5, n_test=0, voice="sung")
    assert _files(again) == _files(sung_dataset[0])


@needs_voice
def test_mixture_is_exact_sum_of_stems_with_sung_vocals(sung_dataset: list[Path]) -> None:
    [folder] = sung_dataset
    read = {
        name: sf.read(folder / f"{name}.wav", dtype="int16", always_2d=True)[0].T.astype(np.int32)
        for name in ("mixture", *STEMS)
    }
    np.testing.assert_array_equal(read["mixture"], sum(read[s] for s in STEMS))
    assert np.abs(read["vocals"]).max() > 1000
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["voice"]["kind"] == "sung" and "espeak-ng" in meta["voice"]["engine"]
    assert meta["sung_vocals"]["lyrics"] and meta["sung_vocals"]["takes"][0]["name"] == "lead"
    for start, stop in meta["composition"]["silent_spans_samples"]["vocals"]:
        assert not np.any(read["vocals"][:, start + int(0.05 * RATE) : stop])


def test_voice_option(monkeypatch: pytest.MonkeyPatch) -> None:
    assert render.resolve_voice("synth") == "synth"
    with pytest.raises(StemkitError, match="--voice"):
        render.resolve_voice("choir")
    monkeypatch.setattr(voice, "available", lambda: False)
    with pytest.warns(UserWarning, match="espeak-ng"):
        assert render.resolve_voice(None) == "synth"
    with pytest.raises(StemkitError, match="apt-get install espeak-ng"):
        render.resolve_voice("sung")


@needs_voice
def test_voice_defaults_to_sung_when_installed() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert render.resolve_voice(None) == "sung"
