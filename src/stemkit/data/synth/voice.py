"""A sung vocals stem: espeak-ng syllables moved onto the melody with Praat's PSOLA.

Each note of the lead melody gets one syllable of seeded pseudo-word lyrics. espeak-ng speaks
every distinct syllable once (a subprocess writing a WAV at its fixed 22 050 Hz rate; the
same input gives the same bytes) and Praat, through parselmouth, resynthesises each phrase
pitch-synchronously (a Manipulation with its duration tier and pitch tier replaced): the
consonant keeps its spoken length and ends on the note onset, the vowel is stretched to the
note's length, and the pitch follows the note contour with portamento into each note and a
delayed vibrato (5-6 Hz, 30-80 cents). Formants are shifted per singer by playing the spoken
syllables at a different rate before the resynthesis, which sets pitch and duration anyway.

A song's vocals hold the lead singer, optionally a doubled second take (small timing and
pitch deviations, panned off centre) and harmony backing vocals a diatonic third or fifth
above the lead on some phrases (another singer), plus a breath (band-passed noise) before
each phrase, all in the one vocals stem as in MUSDB18. Everything is drawn from the track
seed, in streams separate from the composition's, so the notes do not depend on the voice.

The PitchTier of a Praat Manipulation is on the time axis of the original sound, not of the
resynthesis, so the note contour (built in output time) is mapped back through the inverse of
the duration warp before it replaces the pitch tier. With a duration tier, Praat's overlap-add
spaces its voiceless grains at random (8-12 ms); its generator is seeded per phrase from the
track seed, so the same seed gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stemkit.data.synth.compose import SCALES, Note, Song
from stemkit.errors import StemkitError

#: espeak-ng writes WAV files at this rate.
ESPEAK_RATE = 22050
#: Seconds of the rest before a phrase that the breath may take (the silent span ends there).
BREATH_ALLOWANCE = 0.45
#: Consonants and vowels of the lyrics, as espeak-ng phoneme mnemonics (English voice).
CONSONANTS = ("l", "m", "n", "d", "b", "s", "k", "h", "w", "j", "r", "v", "t", "g", "f", "")
VOWELS = ("a:", "i:", "u:", "O:", "eI", "aI", "oU", "A:", "e@")
#: espeak-ng variants by singer register: (variant, base-pitch range of ``-p``).
_VARIANTS: dict[str, tuple[str, ...]] = {
    "high": ("f1", "f2", "f3", "f4", "f5"),
    "low": ("m1", "m2", "m3", "m4", "m6", "m7"),
}
#: The seed-sequence key of the voice's random stream (the composition uses the first ones).
_VOICE_STREAM = 0x766F696365
_INSTALL_HINT = (
    "the sung vocals need espeak-ng ('apt-get install espeak-ng' on Debian/Ubuntu, "
    "'brew install espeak-ng' on macOS) and praat-parselmouth (pip install 'stemkit[data]'); "
    "or pass --voice synth for the synthesizer voice"
)
_FRAME = 0.005  # analysis hop of the syllable envelope, seconds
_PITCH_STEP = 0.005  # spacing of the pitch points, seconds
_MIN_SEGMENT = 0.004  # shortest source segment in the duration warp, seconds
#: Gain of the sung stem: brings it to the level of the FluidSynth stems (their RMS over
#: active samples is about -33 to -37 dBFS; a sung lead at this gain about -31 to -34).
LEVEL_DB = -15.0


@dataclass(frozen=True)
class Singer:
    """One voice: the espeak-ng voice, its formant shift and the singing style.

    Attributes:
        espeak_voice: ``-v`` argument, e.g. ``"en+f3"``.
        espeak_pitch: ``-p`` argument (0-99): the spoken pitch the resynthesis starts from.
        formant: formant scale factor (the syllables are played at ``formant`` times their rate).
        transpose: semitones added to the written melody (-12: an octave down).
        vibrato_hz: vibrato rate.
        vibrato_cents: vibrato depth (half the peak-to-peak swing).
        vibrato_delay: seconds after the note onset before the vibrato fades in.
        glide: portamento length into a note that follows closely, in seconds.
    """

    espeak_voice: str
    espeak_pitch: int
    formant: float
    transpose: int
    vibrato_hz: float
    vibrato_cents: float
    vibrato_delay: float
    glide: float


@dataclass(frozen=True)
class Take:
    """One sung line of the vocals stem: a singer, notes with syllables, a gain and a pan.

    Attributes:
        name: ``lead``, ``double`` or ``harmony``.
        singer: the voice.
        notes: sung notes (pitches already transposed), sorted by start.
        syllables: one espeak-ng phoneme string per note.
        cents: pitch deviation per note, in cents (a doubled take is never exactly in tune).
        gain_db: level relative to the lead.
        pan: -1 (left) to 1 (right).
        seed: seeds the vibrato phases and rates of this take.
    """

    name: str
    singer: Singer
    notes: tuple[Note, ...]
    syllables: tuple[str, ...]
    cents: tuple[float, ...]
    gain_db: float
    pan: float
    seed: int


@dataclass(frozen=True)
class VocalPlan:
    """Everything drawn for a song's vocals (the lyrics, the singers and the takes)."""

    takes: tuple[Take, ...]
    words: tuple[str, ...]
    breaths: tuple[tuple[int, int], ...]
    breath_gain_db: float

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for meta.json."""
        return {
            "lyrics": " ".join(self.words),
            "takes": [
                {
                    "name": take.name,
                    **dataclasses.asdict(take.singer),
                    "n_notes": len(take.notes),
                    "gain_db": round(take.gain_db, 3),
                    "pan": round(take.pan, 3),
                }
                for take in self.takes
            ],
            "breaths_samples": [list(span) for span in self.breaths],
        }


# ---------------------------------------------------------------------------------------------
# availability


def espeak_path() -> str | None:
    """The espeak-ng program, or None if it is not installed."""
    return shutil.which("espeak-ng")


def available() -> bool:
    """True if espeak-ng and parselmouth are both installed."""
    if espeak_path() is None:
        return False
    try:
        import parselmouth  # noqa: F401
    except ImportError:
        return False
    return True


def install_hint() -> str:
    """What to install for the sung voice (or how to do without it)."""
    return _INSTALL_HINT


def require() -> None:
    """Raise a :class:`StemkitError` naming what to install if the sung voice cannot run."""
    if not available():
        raise StemkitError(f"cannot sing the vocals: {_INSTALL_HINT}")


@functools.lru_cache(maxsize=1)
def engine_versions() -> str:
    """Versions of espeak-ng and Praat (part of the dataset version, saved in meta.json)."""
    require()
    import parselmouth

    out = subprocess.run(
        [str(espeak_path()), "--version"], capture_output=True, text=True, check=False
    ).stdout
    espeak = out.split(":")[1].split()[0] if ":" in out else out.strip()
    praat = f"parselmouth {parselmouth.__version__} (Praat {parselmouth.PRAAT_VERSION})"
    return f"espeak-ng {espeak}; {praat}"


# ---------------------------------------------------------------------------------------------
# planning


def phrases(song: Song) -> list[list[int]]:
    """Indices of the lead notes grouped into phrases: notes between two silent spans."""
    notes = _lead_notes(song)
    stops = sorted(stop for _, stop in song.silent_spans.get("vocals", ()) if stop > 0)
    groups: dict[int, list[int]] = {}
    for i, note in enumerate(notes):
        groups.setdefault(sum(stop <= note.start for stop in stops), []).append(i)
    return [groups[key] for key in sorted(groups)]


def plan_vocals(song: Song) -> VocalPlan:
    """Draw the lyrics, singers, takes and breaths of ``song`` from its track seed."""
    rng = np.random.default_rng(np.random.SeedSequence(song.track_seed, spawn_key=(_VOICE_STREAM,)))
    notes = _lead_notes(song)
    groups = phrases(song)
    syllables, words = _lyrics(rng, len(notes))
    register = "high" if rng.random() < 0.55 else "low"
    lead = _singer(rng, register)
    other_register = register if rng.random() < 0.7 else ("low" if register == "high" else "high")
    harmony_singer = _singer(rng, other_register)
    # The backing singer sings in the lead's octave whatever its own register.
    harmony_singer = dataclasses.replace(harmony_singer, transpose=lead.transpose)
    lead_notes = tuple(_shift(note, lead.transpose) for note in notes)
    takes = [Take("lead", lead, lead_notes, syllables, (0.0,) * len(notes), 0.0, 0.0, _seed(rng))]

    if rng.random() < 0.6:
        double_singer = dataclasses.replace(
            lead,
            formant=lead.formant * float(rng.uniform(0.97, 1.03)),
            vibrato_hz=float(rng.uniform(5.0, 6.0)),
        )
        jitter = rng.normal(0.0, 0.012, len(notes)).clip(-0.025, 0.025) * song.sample_rate
        double_notes = tuple(
            _nudge(note, int(offset), song.n_samples)
            for note, offset in zip(lead_notes, jitter, strict=True)
        )
        cents = tuple(float(c) for c in rng.uniform(-12.0, 12.0, len(notes)))
        takes.append(
            Take(
                "double",
                double_singer,
                double_notes,
                syllables,
                cents,
                float(rng.uniform(-8.0, -4.0)),
                float(rng.choice((-1.0, 1.0)) * rng.uniform(0.2, 0.5)),
                _seed(rng),
            )
        )

    if rng.random() < 0.6 and groups:
        steps = 2 if rng.random() < 0.65 else 4  # a diatonic third or fifth above
        chosen = [g for g in groups if rng.random() < 0.5] or [groups[-1]]
        indices = [i for group in chosen for i in group]
        scale = SCALES[song.mode]
        harmony_notes = tuple(
            _diatonic_above(lead_notes[i], steps, song.tonic, scale) for i in indices
        )
        takes.append(
            Take(
                "harmony",
                harmony_singer,
                harmony_notes,
                tuple(syllables[i] for i in indices),
                tuple(float(c) for c in rng.uniform(-6.0, 6.0, len(indices))),
                float(rng.uniform(-10.0, -6.0)),
                float(rng.uniform(-0.6, 0.6)),
                _seed(rng),
            )
        )

    breaths = []
    for group in groups:
        onset = notes[group[0]].start
        length = round(float(rng.uniform(0.22, 0.36)) * song.sample_rate)
        end = onset - round(0.09 * song.sample_rate)
        start = max(end - length, onset - round(BREATH_ALLOWANCE * song.sample_rate), 0)
        if end - start >= 0.1 * song.sample_rate:
            breaths.append((start, end))
    return VocalPlan(
        takes=tuple(takes),
        words=words,
        breaths=tuple(breaths),
        breath_gain_db=float(rng.uniform(-30.0, -22.0)),
    )


def sung_song(song: Song) -> Song:
    """``song`` with the vocal silent spans ended :data:`BREATH_ALLOWANCE` before each phrase.

    The sung voice breathes before its phrases, inside what the synthesizer voice leaves as
    exact silence; the spans kept are still exact digital zeros in the rendered stem.
    """
    allowance = round(BREATH_ALLOWANCE * song.sample_rate)
    spans = []
    for start, stop in song.silent_spans.get("vocals", ()):
        if stop < song.n_samples:
            stop -= allowance
        if stop - start > 0:
            spans.append((start, stop))
    return dataclasses.replace(song, silent_spans={**song.silent_spans, "vocals": tuple(spans)})


def _lead_notes(song: Song) -> tuple[Note, ...]:
    return tuple(note for part in song.stem_parts("vocals") for note in part.notes)


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31))


def _singer(rng: np.random.Generator, register: str) -> Singer:
    variants = _VARIANTS[register]
    high = register == "high"
    return Singer(
        espeak_voice=f"en+{variants[int(rng.integers(0, len(variants)))]}",
        espeak_pitch=int(rng.integers(55, 85) if high else rng.integers(45, 75)),
        formant=float(rng.uniform(1.0, 1.12) if high else rng.uniform(0.92, 1.05)),
        transpose=0 if high else -12,
        vibrato_hz=float(rng.uniform(5.0, 6.0)),
        vibrato_cents=float(rng.uniform(30.0, 80.0)),
        vibrato_delay=float(rng.uniform(0.12, 0.3)),
        glide=float(rng.uniform(0.04, 0.1)),
    )


def _lyrics(rng: np.random.Generator, n_syllables: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Seeded pseudo-words of 1-3 syllables: one syllable per note, and the words."""
    syllables: list[str] = []
    words: list[str] = []
    while len(syllables) < n_syllables:
        word = []
        for _ in range(int(rng.integers(1, 4))):
            consonant = CONSONANTS[int(rng.integers(0, len(CONSONANTS)))]
            word.append(consonant + VOWELS[int(rng.integers(0, len(VOWELS)))])
        syllables.extend(word)
        words.append("".join(word))
    return tuple(syllables[:n_syllables]), tuple(words)


def _shift(note: Note, semitones: int) -> Note:
    return dataclasses.replace(note, pitch=note.pitch + semitones)


def _nudge(note: Note, offset: int, n_samples: int) -> Note:
    start = int(np.clip(note.start + offset, 0, n_samples - 1))
    return dataclasses.replace(note, start=start, end=max(start + 1, note.end + offset))


def _diatonic_above(note: Note, steps: int, tonic: int, scale: Sequence[int]) -> Note:
    pitch = note.pitch
    for _ in range(steps):
        pitch += 1
        while (pitch - tonic) % 12 not in scale:
            pitch += 1
    return dataclasses.replace(note, pitch=pitch)


# ---------------------------------------------------------------------------------------------
# rendering


def sing(song: Song, plan: VocalPlan | None = None) -> dict[str, np.ndarray]:
    """Render each take of the vocals (and the breaths) separately.

    Returns:
        ``{name: (2, song.n_samples) float32}`` for each take and ``"breaths"``, before the
        gating of the silent spans.
    """
    require()
    plan = plan or plan_vocals(song)
    groups = phrases(song)
    out: dict[str, np.ndarray] = {}
    for take in plan.takes:
        mono = np.zeros(song.n_samples, dtype=np.float64)
        rng = np.random.default_rng(take.seed)
        for group in _take_phrases(take, groups, song):
            _sing_phrase(mono, take, group, rng, song.sample_rate)
        out[take.name] = _pan(mono * 10 ** (take.gain_db / 20), take.pan)
    breath = _breaths(plan, song)
    out["breaths"] = _pan(breath, 0.0)
    return out


def render_vocals(song: Song) -> np.ndarray:
    """The sung vocals stem of ``song``: ``(2, song.n_samples)`` float32, before gating."""
    layers = sing(song)
    total = np.zeros((2, song.n_samples), dtype=np.float32)
    for audio in layers.values():
        total += audio
    return total * np.float32(10 ** (LEVEL_DB / 20))


def _take_phrases(take: Take, groups: list[list[int]], song: Song) -> list[list[int]]:
    """The take's note indices split where the lead's phrases split."""
    lead = _lead_notes(song)
    bounds = [lead[group[0]].start for group in groups[1:]]
    split: dict[int, list[int]] = {}
    for i, note in enumerate(take.notes):
        # Timing jitter may move a note a little before its phrase's first lead onset.
        key = sum(bound <= note.start + 0.05 * song.sample_rate for bound in bounds)
        split.setdefault(key, []).append(i)
    return [split[key] for key in sorted(split)]


def _pan(mono: np.ndarray, pan: float) -> np.ndarray:
    """Constant-power pan of a mono signal to ``(2, time)`` float32."""
    angle = (pan + 1) * np.pi / 4
    return np.stack([mono * np.cos(angle), mono * np.sin(angle)]).astype(np.float32) * np.float32(
        np.sqrt(2)
    )


@functools.lru_cache(maxsize=512)
def _spoken(syllable: str, voice: str, pitch: int) -> np.ndarray:
    """espeak-ng's rendering of one stressed syllable, trimmed of silence (float64, read-only)."""
    import soundfile as sf

    command = [str(espeak_path()), "-v", voice, "-p", str(pitch), "-s", "130", "-z", "--stdout"]
    result = subprocess.run([*command, f"[['{syllable}]]"], capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        message = result.stderr.decode(errors="replace").strip()
        raise StemkitError(f"espeak-ng failed on [[{syllable}]] with voice {voice}: {message}")
    audio, rate = sf.read(io.BytesIO(result.stdout), dtype="float64")
    if rate != ESPEAK_RATE or audio.ndim != 1:
        raise StemkitError(f"espeak-ng wrote {rate} Hz audio, expected {ESPEAK_RATE} Hz mono")
    loud = np.flatnonzero(np.abs(audio) > 1e-3 * np.abs(audio).max())
    audio = audio[loud[0] : loud[-1] + 1] if loud.size else audio
    audio.setflags(write=False)
    return audio


def _segments(audio: np.ndarray, rate: float) -> tuple[int, int]:
    """Vowel onset and vowel end (sample indices) of a spoken consonant-vowel syllable.

    The vowel is the loud part: from the first frame at half the peak frame energy to the
    last frame at a third of it; what comes before is the consonant, after it the decay.
    """
    hop = max(1, round(_FRAME * rate))
    n_frames = max(1, len(audio) // hop)
    frames = audio[: n_frames * hop].reshape(n_frames, hop)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    onset = int(np.argmax(rms >= 0.5 * rms.max())) * hop
    end = (n_frames - int(np.argmax(rms[::-1] >= 0.33 * rms.max()))) * hop
    end = int(min(max(end, onset + hop), len(audio)))
    return onset, end


def _sing_phrase(
    out: np.ndarray, take: Take, indices: list[int], rng: np.random.Generator, sample_rate: int
) -> None:
    """Resynthesise one phrase of ``take`` and add it into ``out`` (mono, song time)."""
    import parselmouth
    from parselmouth.praat import call, run

    singer = take.singer
    rate = ESPEAK_RATE * singer.formant  # played faster: formants scaled by ``formant``
    notes = [take.notes[i] for i in indices]
    onsets = [n.start / sample_rate for n in notes]
    ends = [n.end / sample_rate for n in notes]
    pad = 0.05

    # Source pieces, each (audio or None for silence, source length s, output length s).
    pieces: list[tuple[np.ndarray | None, float, float]] = []
    voiced: list[tuple[float, float, int]] = []  # output spans with their note index
    spoken = [_spoken(take.syllables[i], singer.espeak_voice, singer.espeak_pitch) for i in indices]
    cons_out: list[float] = []
    for k, audio in enumerate(spoken):
        onset, _ = _segments(audio, rate)
        room = 0.12 if k == 0 else min(0.12, 0.4 * (onsets[k] - onsets[k - 1]))
        cons_out.append(min(onset / rate, room))
    phrase_start = onsets[0] - cons_out[0] - pad
    cursor = phrase_start
    pieces.append((None, pad, pad))
    cursor += pad
    for k, audio in enumerate(spoken):
        onset, end = _segments(audio, rate)
        begin = onsets[k] - cons_out[k]
        if begin - cursor > 1e-4:
            pieces.append((None, _MIN_SEGMENT * 4, begin - cursor))
            cursor = begin
        stop = ends[k] if k + 1 == len(notes) else min(ends[k], onsets[k + 1] - cons_out[k + 1])
        stop = max(stop, onsets[k] + 0.03)
        length = stop - onsets[k]
        tail_src = (len(audio) - end) / rate
        tail_out = min(tail_src, 0.25 * length)
        if onset / rate >= _MIN_SEGMENT:
            pieces.append((audio[:onset], onset / rate, onsets[k] - cursor))
        elif onsets[k] - cursor > 1e-4:
            pieces.append((None, _MIN_SEGMENT, onsets[k] - cursor))
        vowel = audio[onset:end]
        if len(vowel) / rate < _MIN_SEGMENT:
            vowel = audio[onset:]
            tail_src, tail_out = 0.0, 0.0
        pieces.append((vowel, len(vowel) / rate, length - tail_out))
        if tail_src >= _MIN_SEGMENT and tail_out > 0:
            pieces.append((audio[end:], tail_src, tail_out))
        voiced.append((onsets[k] - cons_out[k], stop, k))
        cursor = stop
    pieces.append((None, pad, pad))

    # Source signal and the warp knots (source time, output time relative to phrase_start).
    chunks: list[np.ndarray] = []
    src_knots = [0.0]
    out_knots = [0.0]
    for piece, src_len, out_len in pieces:
        n = round(src_len * rate)
        chunks.append(np.zeros(n) if piece is None else np.asarray(piece)[:n])
        src_knots.append(src_knots[-1] + len(chunks[-1]) / rate)
        out_knots.append(out_knots[-1] + max(out_len, 1e-4))
    source = np.concatenate(chunks)
    sound = parselmouth.Sound(source, sampling_frequency=rate)
    manipulation = call(sound, "To Manipulation", 0.01, 60, 600)
    total_src = sound.duration

    durations = call("Create DurationTier", "warp", 0.0, total_src)
    eps = 5e-4
    for i in range(len(src_knots) - 1):
        a, b = src_knots[i], src_knots[i + 1]
        if b - a <= 2 * eps:
            continue
        scale = (out_knots[i + 1] - out_knots[i]) / (b - a)
        call(durations, "Add point", a + eps, scale)
        call(durations, "Add point", b - eps, scale)
    call([manipulation, durations], "Replace duration tier")

    pitch = call("Create PitchTier", "notes", 0.0, total_src)
    times, hz = _contour(voiced, notes, take, indices, onsets, phrase_start, rng)
    src_times = np.interp(times, out_knots, src_knots)
    for t, f in zip(src_times, hz, strict=True):
        call(pitch, "Add point", float(t), float(f))
    call([pitch, manipulation], "Replace pitch tier")
    # With a duration tier, Praat's overlap-add spaces the voiceless grains at random periods:
    # seed its generator for this phrase, then give it back to unpredictable seeding.
    run(f"random_initializeWithSeedUnsafelyButPredictably ({int(rng.integers(0, 2**31))})")
    try:
        sung = call(manipulation, "Get resynthesis (overlap-add)")
    finally:
        run("random_initializeSafelyAndUnpredictably ()")

    import soxr

    audio = soxr.resample(sung.values[0], rate, sample_rate, quality="HQ")
    gains = np.array([n.velocity / 100 for n in notes])
    level = float(np.mean(gains))
    start = round(phrase_start * sample_rate)
    first = max(0, -start)
    stop = min(len(out), start + len(audio))
    if stop > start + first:
        audio = audio[first : stop - start] * level
        fade = min(len(audio) // 2, round(0.01 * sample_rate))
        if fade > 0:
            ramp = np.linspace(0.0, 1.0, fade)
            audio[:fade] *= ramp
            audio[-fade:] *= ramp[::-1]
        out[start + first : stop] += audio


def _contour(
    voiced: list[tuple[float, float, int]],
    notes: list[Note],
    take: Take,
    indices: list[int],
    onsets: list[float],
    phrase_start: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Pitch points (output time relative to the phrase start, Hz) over the voiced spans."""
    singer = take.singer
    times: list[np.ndarray] = []
    values: list[np.ndarray] = []
    previous: float | None = None
    previous_end = -1.0
    for begin, stop, k in voiced:
        midi = notes[k].pitch + take.cents[indices[k]] / 100
        t = np.arange(begin, stop, _PITCH_STEP)
        if t.size == 0:
            continue
        semis = np.full(t.shape, midi)
        onset = onsets[k]
        # Portamento: glide from the previous note when it ends close to this one.
        if previous is not None and begin - previous_end < 0.15:
            g = singer.glide
            x = np.clip((t - (onset - g / 2)) / g, 0.0, 1.0)
            semis = previous + (midi - previous) * (0.5 - 0.5 * np.cos(np.pi * x))
        # Delayed vibrato, fading in over 0.2 s, with a per-note rate and phase.
        rate = singer.vibrato_hz * float(rng.uniform(0.97, 1.03))
        phase = float(rng.uniform(0, 2 * np.pi))
        depth = singer.vibrato_cents / 100 * np.clip((t - onset - singer.vibrato_delay) / 0.2, 0, 1)
        semis = semis + depth * np.sin(2 * np.pi * rate * (t - onset) + phase)
        times.append(t - phrase_start)
        values.append(440.0 * 2 ** ((semis - 69) / 12))
        previous, previous_end = midi, stop
    if not times:
        return np.zeros(1), np.full(1, 200.0)
    return np.concatenate(times), np.concatenate(values)


def _breaths(plan: VocalPlan, song: Song) -> np.ndarray:
    """Band-passed noise bursts (an inhalation) before each phrase, mono float64."""
    out = np.zeros(song.n_samples, dtype=np.float64)
    rng = np.random.default_rng(
        np.random.SeedSequence(song.track_seed, spawn_key=(_VOICE_STREAM, 1))
    )
    lead_peak = 0.35  # about the level of the resynthesised lead
    gain = lead_peak * 10 ** (plan.breath_gain_db / 20)
    for start, stop in plan.breaths:
        n = stop - start
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / song.sample_rate)
        centre = float(rng.uniform(1200, 2500))
        shape = np.exp(-0.5 * (np.log(np.maximum(freqs, 1.0) / centre) / 0.6) ** 2)
        noise = np.fft.irfft(spectrum * shape, n)
        noise /= np.abs(noise).max() + 1e-12
        x = np.linspace(0.0, 1.0, n)
        envelope = np.sin(np.pi * np.clip(x / 0.6, 0, 1) / 2) ** 2 * np.cos(
            np.pi / 2 * np.clip((x - 0.6) / 0.4, 0, 1)
        )
        out[start:stop] += gain * noise * envelope
    return out
