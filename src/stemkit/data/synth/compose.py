"""Seeded composition of short pop-like songs as note lists, one part list per stem.

A song is a loop of a diatonic four-chord progression, one chord per 4/4 bar, played by four
stems: ``drums`` (General MIDI kit on channel 10), ``bass`` (the chord roots), ``other`` (chord
comping plus an optional pad) and ``vocals`` (a lead melody on a voice-like patch, with an
intro and rest bars that the renderer turns into exact digital silence, as in MUSDB18).

Songs of three 4-bar blocks or more follow a form (:data:`SECTIONS`: intro, verse, chorus,
break, outro) that decides which parts play in each block, so sources come and go as in real
songs; the chorus brings the pad and the B-section drum and comping patterns. Every note is
humanised: a seeded per-part timing spread (on the grid) and velocity spread, scaled by the
section's dynamics.

Every time is an integer sample index on a 64-sample grid: FluidSynth applies events at
64-sample block boundaries, so notes on that grid sound exactly where the note list says.
All randomness comes from one track seed, split into independent streams per aspect, so that
restricting the program pools (preset screening) changes only the programs, not the notes.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stemkit.errors import StemkitError

#: Output sample rate of the generator, in Hz.
SAMPLE_RATE = 44100
#: FluidSynth's block size: every event time is a multiple of it.
GRID = 64
#: The stems of a song, in the order the files and the meta list them.
STEMS: tuple[str, ...] = ("drums", "bass", "other", "vocals")
#: Seconds kept free of note onsets at the end of a song, for releases and the fade-out.
TAIL_SECONDS = 1.0
#: Shortest song the composer accepts, in seconds.
MIN_DURATION = 2.0
#: Range of the random per-stem gain, in dB (uniform in [-x, +x]).
GAIN_RANGE_DB = 6.0
#: The sections of a song's form, in 4-bar blocks.
SECTIONS: tuple[str, ...] = ("intro", "verse", "chorus", "break", "outro")
#: Bars per section block.
BLOCK_BARS = 4
#: Fewest blocks for a song to get a form; shorter songs are one verse.
MIN_FORM_BLOCKS = 3
#: Velocity factor of each section (its dynamics).
SECTION_DYNAMICS: dict[str, float] = {
    "intro": 0.85,
    "verse": 0.9,
    "chorus": 1.0,
    "break": 0.85,
    "outro": 0.9,
}
#: Range of each part's timing spread (standard deviation of the onset offset), in ms.
TIMING_SPREAD_MS: dict[str, tuple[float, float]] = {
    "drums": (1.0, 4.0),
    "bass": (2.0, 6.0),
    "comp": (3.0, 9.0),
    "pad": (0.0, 3.0),
    "lead": (3.0, 9.0),
}
#: Range of each part's velocity spread (standard deviation), in MIDI velocity steps.
VELOCITY_SPREAD = (2.0, 7.0)

#: General MIDI programs (0-based) each melodic part draws from. Synth Strings 1 (50) and 2
#: (51) are left out: some soundfonts render them strongly anti-phase (L/R correlation < 0),
#: which no real mix sounds like. The renderer screens the rest per soundfont as well.
PROGRAM_POOLS: dict[str, tuple[int, ...]] = {
    "bass": (32, 33, 34, 35, 38, 39),
    "comp": (0, 1, 2, 4, 5, 16, 24, 25, 26, 27),
    "pad": (48, 49, 88, 89, 90, 92, 94),
    "lead": (52, 53, 54),
}

#: The stem each part is rendered into.
PART_STEMS: dict[str, str] = {
    "drums": "drums",
    "bass": "bass",
    "comp": "other",
    "pad": "other",
    "lead": "vocals",
}
#: Range of the random reverb send (MIDI controller 91) of each part: dry bass, wet pads.
_REVERB_SENDS: dict[str, tuple[int, int]] = {
    "drums": (20, 61),
    "bass": (0, 25),
    "comp": (25, 71),
    "pad": (40, 91),
    "lead": (35, 81),
}
#: MIDI channel (0-based) of each part; channel 9 is the General MIDI percussion channel.
CHANNELS: dict[str, int] = {"drums": 9, "bass": 0, "comp": 1, "pad": 2, "lead": 3}

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
}
#: Diatonic four-chord loops as 0-based scale degrees, one chord per bar.
PROGRESSIONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "major": (
        (0, 4, 5, 3),  # I-V-vi-IV
        (5, 3, 0, 4),  # vi-IV-I-V
        (0, 5, 3, 4),  # I-vi-IV-V
        (0, 3, 4, 3),  # I-IV-V-IV
        (0, 3, 5, 4),  # I-IV-vi-V
        (1, 4, 0, 0),  # ii-V-I-I
        (0, 2, 3, 4),  # I-iii-IV-V
    ),
    "minor": (
        (0, 5, 2, 6),  # i-VI-III-VII
        (0, 3, 6, 2),  # i-iv-VII-III
        (0, 6, 5, 6),  # i-VII-VI-VII
        (0, 5, 3, 4),  # i-VI-iv-v
    ),
}
_ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII")

# General MIDI percussion keys.
KICK, SNARE, CLOSED_HAT, PEDAL_HAT, OPEN_HAT, CRASH, RIDE = 36, 38, 42, 44, 46, 49, 51
TOMS = (50, 48, 47, 45)  # high to low


@dataclass(frozen=True)
class Note:
    """One note: sample indices on the :data:`GRID`, MIDI pitch and velocity."""

    start: int
    end: int
    pitch: int
    velocity: int


@dataclass(frozen=True)
class Part:
    """One instrument of a stem: a MIDI channel, a program and its notes.

    Attributes:
        name: ``drums``, ``bass``, ``comp``, ``pad`` or ``lead``.
        stem: the stem the part is rendered into.
        channel: 0-based MIDI channel (9 for drums).
        program: 0-based General MIDI program (the kit number for drums).
        is_drum: True for the percussion channel (bank 128).
        pan: MIDI controller 10 value (64 is centre).
        reverb: MIDI controller 91 value (reverb send).
        notes: the notes, sorted by start.
    """

    name: str
    stem: str
    channel: int
    program: int
    is_drum: bool
    pan: int
    reverb: int
    notes: tuple[Note, ...]


@dataclass(frozen=True)
class Song:
    """A composed song: everything the renderer and the meta file need.

    Attributes:
        track_seed: the seed everything here was drawn from.
        sample_rate: in Hz.
        n_samples: length of every stem, in samples.
        music_end: no note sounds after this sample; the rest is the release tail.
        tempo: beats per minute.
        tonic: pitch class of the key (0 = C).
        mode: ``major`` or ``minor``.
        progression: the chord loop as 0-based scale degrees.
        n_bars: bars started before ``music_end``.
        parts: every part of every stem.
        sections: the section of each bar (all ``verse`` for a song too short for a form).
        gains_db: per-stem gain applied before mixing.
        silent_spans: per stem, ``(start, stop)`` sample ranges that must be exactly zero
            (the vocal intro and rests); the renderer ramps into each span whose start follows
            a note.
    """

    track_seed: int
    sample_rate: int
    n_samples: int
    music_end: int
    tempo: int
    tonic: int
    mode: str
    progression: tuple[int, ...]
    n_bars: int
    parts: tuple[Part, ...]
    gains_db: dict[str, float]
    silent_spans: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    sections: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The key as text, e.g. ``"A minor"``."""
        return f"{NOTE_NAMES[self.tonic]} {self.mode}"

    @property
    def progression_roman(self) -> list[str]:
        """The chord loop in Roman numerals (upper case major, lower case minor, ° diminished)."""
        return [_roman(degree, self.mode) for degree in self.progression]

    def stem_parts(self, stem: str) -> tuple[Part, ...]:
        """The parts rendered into ``stem``."""
        return tuple(part for part in self.parts if part.stem == stem)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary of the composition (no notes; those go to ``song.mid``)."""
        return {
            "tempo_bpm": self.tempo,
            "key": self.key,
            "progression": self.progression_roman,
            "n_bars": self.n_bars,
            "form": [self.sections[i] for i in range(0, len(self.sections), BLOCK_BARS)],
            "music_end_samples": self.music_end,
            "parts": [
                {
                    "name": part.name,
                    "stem": part.stem,
                    "channel": part.channel + 1,
                    "program": part.program,
                    "program_name": "Standard drum kit" if part.is_drum else _gm_name(part.program),
                    "is_drum": part.is_drum,
                    "pan": part.pan,
                    "reverb_send": part.reverb,
                    "n_notes": len(part.notes),
                }
                for part in self.parts
            ],
            "gains_db": {stem: round(gain, 4) for stem, gain in self.gains_db.items()},
            "silent_spans_samples": {
                stem: [list(span) for span in spans] for stem, spans in self.silent_spans.items()
            },
        }

    def to_midi(self) -> Any:
        """The song as a ``pretty_midi.PrettyMIDI`` object (one instrument per part).

        Note times are the grid times in seconds; MIDI ticks at 960 per beat keep them within
        a quarter of a millisecond.
        """
        pretty_midi = _import_pretty_midi()
        midi = pretty_midi.PrettyMIDI(resolution=960, initial_tempo=float(self.tempo))
        key_number = self.tonic + (12 if self.mode == "minor" else 0)
        midi.key_signature_changes.append(pretty_midi.KeySignature(key_number, 0.0))
        midi.time_signature_changes.append(pretty_midi.TimeSignature(4, 4, 0.0))
        for part in self.parts:
            instrument = pretty_midi.Instrument(
                program=part.program, is_drum=part.is_drum, name=f"{part.stem}:{part.name}"
            )
            instrument.control_changes.append(pretty_midi.ControlChange(10, part.pan, 0.0))
            instrument.control_changes.append(pretty_midi.ControlChange(91, part.reverb, 0.0))
            for note in part.notes:
                instrument.notes.append(
                    pretty_midi.Note(
                        velocity=note.velocity,
                        pitch=note.pitch,
                        start=note.start / self.sample_rate,
                        end=note.end / self.sample_rate,
                    )
                )
            midi.instruments.append(instrument)
        return midi


def compose(
    track_seed: int,
    duration: float,
    *,
    sample_rate: int = SAMPLE_RATE,
    allowed_programs: Collection[int] | None = None,
) -> Song:
    """Compose one song from a seed.

    Args:
        track_seed: seeds every random choice; the same seed gives the same song.
        duration: length of the song in seconds (the last :data:`TAIL_SECONDS`, or a quarter
            of a short song, hold only releases).
        sample_rate: in Hz; note times are integer samples on the 64-sample grid.
        allowed_programs: General MIDI programs the melodic parts may use (the presets that
            passed screening); ``None`` allows every program of :data:`PROGRAM_POOLS`.

    Returns:
        The :class:`Song`.

    Raises:
        StemkitError: if ``duration`` is below :data:`MIN_DURATION` or a pool is empty after
            screening.
    """
    if not duration >= MIN_DURATION:
        raise StemkitError(f"song duration must be at least {MIN_DURATION} s, got {duration}")
    streams = np.random.SeedSequence(track_seed).spawn(9)
    rng_form, rng_prog, rng_drums, rng_bass, rng_other, rng_lead, rng_mix, rng_arr, rng_human = (
        np.random.default_rng(stream) for stream in streams
    )
    n_samples = round(duration * sample_rate)
    tail = _floor_grid(min(TAIL_SECONDS, duration / 4) * sample_rate)
    music_end = _floor_grid(n_samples - tail)

    tempo = int(rng_form.integers(88, 132))
    mode = "major" if rng_form.random() < 0.65 else "minor"
    tonic = int(rng_form.integers(0, 12))
    choices = PROGRESSIONS[mode]
    progression = choices[int(rng_form.integers(0, len(choices)))]
    clock = _Clock(tempo, sample_rate, music_end)
    n_bars = int(np.ceil(music_end / clock.bar))
    harmony = _Harmony(tonic, mode, progression)

    programs = {name: _pick_program(rng_prog, name, allowed_programs) for name in PROGRAM_POOLS}
    use_pad = bool(rng_prog.random() < 0.5)
    sections = _form(rng_arr, n_bars)
    plays = _arrangement(rng_arr, sections)
    # The B patterns of drums and comping: the chorus where there is a form, else every
    # other 4-bar block.
    if len(set(sections)) > 1:
        b_bars = [section == "chorus" for section in sections]
    else:
        b_bars = [(bar // BLOCK_BARS) % 2 == 1 for bar in range(n_bars)]

    sends = {name: int(rng_mix.integers(low, high)) for name, (low, high) in _REVERB_SENDS.items()}
    comp_pan = int(rng_mix.integers(36, 93))
    notes = {
        "drums": _drums(rng_drums, clock, n_bars, b_bars),
        "bass": _bass(rng_bass, clock, harmony, n_bars),
        "comp": _comp(rng_other, clock, harmony, n_bars, b_bars),
    }
    if use_pad:
        notes["pad"] = _pad(rng_other, clock, harmony, n_bars)
    notes["lead"] = _lead(rng_lead, clock, harmony, n_bars, plays["lead"])
    for name in notes:
        notes[name] = _humanize(rng_human, name, notes[name], clock, sections, plays[name])
    parts = [
        _part(name, 0 if name == "drums" else programs[name], sends, part_notes)
        if name != "comp"
        else _part(name, programs[name], sends, part_notes, comp_pan)
        for name, part_notes in notes.items()
        if part_notes
    ]
    lead_notes = notes["lead"]
    gains_db = {stem: float(rng_mix.uniform(-GAIN_RANGE_DB, GAIN_RANGE_DB)) for stem in STEMS}
    return Song(
        track_seed=track_seed,
        sample_rate=sample_rate,
        n_samples=n_samples,
        music_end=music_end,
        tempo=tempo,
        tonic=tonic,
        mode=mode,
        progression=progression,
        n_bars=n_bars,
        parts=tuple(parts),
        gains_db=gains_db,
        silent_spans={"vocals": _silent_spans(lead_notes, n_samples, sample_rate)},
        sections=tuple(sections),
    )


# ---------------------------------------------------------------------------------------------
# time and harmony


def _floor_grid(samples: float) -> int:
    return int(samples // GRID) * GRID


class _Clock:
    """Maps (bar, 16th-note slot) to grid-quantised sample indices and builds clipped notes."""

    def __init__(self, tempo: int, sample_rate: int, music_end: int) -> None:
        self.sample_rate = sample_rate
        self.slot = 60.0 / tempo / 4 * sample_rate  # one 16th note, in samples
        self.bar = 16 * self.slot
        self.music_end = music_end

    def at(self, bar: int, slot: float) -> int:
        return round((bar * 16 + slot) * self.slot / GRID) * GRID

    def note(
        self, bar: int, slot: float, length: float, pitch: int, velocity: float
    ) -> Note | None:
        """A note of ``length`` 16ths, cut at the end of the music; None if it starts too late."""
        start = self.at(bar, slot)
        if start > self.music_end - 4 * GRID:
            return None
        end = min(max(self.at(bar, slot + length), start + GRID), self.music_end)
        return Note(start, end, int(pitch), min(max(round(velocity), 1), 127))


class _Harmony:
    """Scale and chords of the song's key."""

    def __init__(self, tonic: int, mode: str, progression: tuple[int, ...]) -> None:
        self.tonic = tonic
        self.scale = SCALES[mode]
        self.progression = progression
        self.scale_pcs = frozenset((tonic + step) % 12 for step in self.scale)

    def degree(self, bar: int) -> int:
        return self.progression[bar % len(self.progression)]

    def chord_pcs(self, bar: int, seventh: bool = False) -> tuple[int, ...]:
        """Pitch classes of the bar's diatonic triad (or seventh chord), root first."""
        degree = self.degree(bar)
        steps = (0, 2, 4, 6) if seventh else (0, 2, 4)
        return tuple((self.tonic + self.scale[(degree + s) % 7]) % 12 for s in steps)

    def root(self, bar: int) -> int:
        return self.chord_pcs(bar)[0]


def _roman(degree: int, mode: str) -> str:
    scale = SCALES[mode]
    third = (scale[(degree + 2) % 7] - scale[degree]) % 12
    fifth = (scale[(degree + 4) % 7] - scale[degree]) % 12
    numeral = _ROMAN[degree]
    if third == 4:
        return numeral
    return numeral.lower() + ("°" if fifth == 6 else "")


def _gm_name(program: int) -> str:
    try:
        return str(_import_pretty_midi().program_to_instrument_name(program))
    except StemkitError:
        return f"program {program}"


def _import_pretty_midi() -> Any:
    try:
        import pretty_midi
    except ImportError as error:
        raise StemkitError(
            "the synthetic data generator needs pretty_midi: pip install 'stemkit[data]'"
        ) from error
    return pretty_midi


def _part(
    name: str, program: int, sends: dict[str, int], notes: tuple[Note, ...], pan: int = 64
) -> Part:
    return Part(
        name=name,
        stem=PART_STEMS[name],
        channel=CHANNELS[name],
        program=program,
        is_drum=name == "drums",
        pan=pan,
        reverb=sends[name],
        notes=notes,
    )


def _pick_program(rng: np.random.Generator, name: str, allowed: Collection[int] | None) -> int:
    pool = [p for p in PROGRAM_POOLS[name] if allowed is None or p in allowed]
    if not pool:
        raise StemkitError(
            f"the soundfont has no usable preset for the {name} part (tried General MIDI "
            f"programs {list(PROGRAM_POOLS[name])}); pass a General MIDI soundfont with --soundfont"
        )
    return pool[int(rng.integers(0, len(pool)))]


def _sorted_notes(notes: list[Note | None]) -> tuple[Note, ...]:
    """Sort notes and trim each one so it ends before the next onset of the same pitch."""
    kept = sorted((n for n in notes if n is not None), key=lambda n: (n.start, n.pitch))
    out: list[Note] = []
    next_start: dict[int, int] = {}
    for note in reversed(kept):
        limit = next_start.get(note.pitch)
        if limit is not None and note.end > limit:
            if limit - note.start < GRID:
                continue  # a duplicate onset: drop it
            note = Note(note.start, limit, note.pitch, note.velocity)
        next_start[note.pitch] = note.start
        out.append(note)
    return tuple(reversed(out))


# ---------------------------------------------------------------------------------------------
# parts

_KICK_PATTERNS = ((0, 8), (0, 8, 10), (0, 6, 8), (0, 3, 8, 11), (0, 7, 8), (0, 8, 11, 14))


def _drums(
    rng: np.random.Generator, clock: _Clock, n_bars: int, b_bars: list[bool]
) -> tuple[Note, ...]:
    kick_a, kick_b = (_KICK_PATTERNS[int(i)] for i in rng.integers(0, len(_KICK_PATTERNS), 2))
    snare = SNARE if rng.random() < 0.7 else 40  # acoustic or electric snare
    sixteenth_hats = bool(rng.random() < 0.3)
    b_cymbal = (OPEN_HAT, RIDE)[int(rng.integers(0, 2))]
    ghost_rate = float(rng.uniform(0.0, 0.15))
    notes: list[Note | None] = []

    def hit(bar: int, slot: int, key: int, velocity: float) -> None:
        # Drum samples ring out on their own; only the crash is held, so it is not damped.
        notes.append(clock.note(bar, slot, 8 if key == CRASH else 1, key, velocity))

    for bar in range(n_bars):
        section_b = b_bars[bar]
        fill = bar % 4 == 3 and bar < n_bars - 1
        last_slot = 12 if fill else 16
        if bar % 4 == 0:
            hit(bar, 0, CRASH, rng.uniform(95, 120))
        for slot in kick_b if section_b else kick_a:
            if slot < last_slot:
                hit(
                    bar, slot, KICK, rng.uniform(95, 120) if slot % 4 == 0 else rng.uniform(80, 100)
                )
        for slot in (4, 12):
            if slot < last_slot:
                hit(bar, slot, snare, rng.uniform(95, 118))
        for slot in range(last_slot):
            if slot % 4 != 0 and slot not in (4, 12) and rng.random() < ghost_rate:
                hit(bar, slot, snare, rng.uniform(25, 45))
        step = 1 if sixteenth_hats and not section_b else 2
        for slot in range(0, last_slot, step):
            accent = slot % 4 == 0
            if section_b and b_cymbal == OPEN_HAT and slot % 4 == 2:
                hit(bar, slot, OPEN_HAT, rng.uniform(70, 90))
            elif section_b and b_cymbal == RIDE:
                hit(bar, slot, RIDE, rng.uniform(75, 95) if accent else rng.uniform(55, 75))
            else:
                hit(bar, slot, CLOSED_HAT, rng.uniform(75, 95) if accent else rng.uniform(45, 70))
        if fill:
            fill_keys = (
                (snare, snare, snare, snare),
                TOMS,
                (snare, TOMS[1], snare, TOMS[3]),
            )[int(rng.integers(0, 3))]
            for i, key in enumerate(fill_keys):
                hit(bar, 12 + i, key, 80 + 8 * i + rng.uniform(-5, 5))
    return _sorted_notes(notes)


def _bass(
    rng: np.random.Generator, clock: _Clock, harmony: _Harmony, n_bars: int
) -> tuple[Note, ...]:
    style = int(rng.integers(0, 4))
    legato = float(rng.uniform(0.6, 0.95))
    notes: list[Note | None] = []
    for bar in range(n_bars):
        root = 33 + (harmony.root(bar) - 9) % 12  # A1 to G#2
        next_root = 33 + (harmony.root(bar + 1) - 9) % 12
        if style == 0:  # driving eighths, octave on the "and" of 4
            rhythm = [(s, 2, root) for s in range(0, 16, 2)]
            rhythm[-1] = (14, 2, root + 12 if rng.random() < 0.5 else root)
        elif style == 1:  # root and fifth on the beats
            rhythm = [(0, 4, root), (4, 4, root), (8, 4, root + 7), (12, 4, root)]
        elif style == 2:  # syncopated, with an approach note into the next bar
            approach = next_root + (1 if rng.random() < 0.5 else -1)
            rhythm = [(0, 6, root), (6, 4, root), (10, 4, root + 7), (14, 2, approach)]
        else:  # long notes
            rhythm = [(0, 8, root), (8, 6, root if rng.random() < 0.5 else root + 7)]
            rhythm.append((14, 2, next_root))
        for slot, length, pitch in rhythm:
            notes.append(clock.note(bar, slot, length * legato, pitch, rng.uniform(85, 110)))
    return _sorted_notes(notes)


def _voicing(pcs: tuple[int, ...], low: int, high: int, previous: list[int] | None) -> list[int]:
    """The inversion of ``pcs`` inside [low, high] closest to the previous voicing."""
    candidates: list[list[int]] = []
    for base in range(low, high - 6):
        if base % 12 not in pcs:
            continue
        voicing = [base]
        for pc in pcs[pcs.index(base % 12) + 1 :] + pcs[: pcs.index(base % 12)]:
            pitch = voicing[-1] + (pc - voicing[-1]) % 12
            voicing.append(pitch)
        if voicing[-1] <= high:
            candidates.append(voicing)
    centre = (low + high) / 2
    if previous is None:
        return min(candidates, key=lambda v: abs(float(np.mean(v)) - centre))
    return min(
        candidates,
        key=lambda v: (
            abs(float(np.mean(v)) - float(np.mean(previous)))
            + 0.2 * abs(float(np.mean(v)) - centre)
        ),
    )


_COMP_RHYTHMS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((0, 16),),
    ((0, 8), (8, 8)),
    ((0, 4), (4, 4), (8, 4), (12, 4)),
    ((0, 6), (6, 10)),
    ((2, 2), (6, 2), (10, 2), (14, 2)),
    ((0, 3), (3, 3), (6, 4), (10, 6)),
)


def _comp(
    rng: np.random.Generator, clock: _Clock, harmony: _Harmony, n_bars: int, b_bars: list[bool]
) -> tuple[Note, ...]:
    seventh = bool(rng.random() < 0.3)
    arpeggio = bool(rng.random() < 0.25)
    rhythm_a, rhythm_b = (_COMP_RHYTHMS[int(i)] for i in rng.integers(0, len(_COMP_RHYTHMS), 2))
    legato = float(rng.uniform(0.7, 0.98))
    notes: list[Note | None] = []
    previous: list[int] | None = None
    for bar in range(n_bars):
        voicing = _voicing(harmony.chord_pcs(bar, seventh), 55, 77, previous)
        previous = voicing
        if arpeggio:
            order = voicing + voicing[1:-1][::-1]
            for i, slot in enumerate(range(0, 16, 2)):
                pitch = order[i % len(order)]
                notes.append(clock.note(bar, slot, 2 * legato, pitch, rng.uniform(60, 90)))
            continue
        rhythm = rhythm_b if b_bars[bar] else rhythm_a
        for slot, length in rhythm:
            velocity = rng.uniform(65, 95)
            for pitch in voicing:
                notes.append(clock.note(bar, slot, length * legato, pitch, velocity))
    return _sorted_notes(notes)


def _pad(
    rng: np.random.Generator, clock: _Clock, harmony: _Harmony, n_bars: int
) -> tuple[Note, ...]:
    notes: list[Note | None] = []
    previous: list[int] | None = None
    for bar in range(n_bars):
        voicing = _voicing(harmony.chord_pcs(bar), 48, 67, previous)
        previous = voicing
        velocity = rng.uniform(50, 75)
        for pitch in voicing:
            notes.append(clock.note(bar, 0, 16, pitch, velocity))
    return _sorted_notes(notes)


_LEAD_RHYTHMS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((0, 4), (4, 4), (8, 8)),
    ((0, 2), (2, 2), (4, 4), (8, 4), (12, 4)),
    ((0, 6), (6, 2), (8, 8)),
    ((2, 2), (4, 4), (8, 2), (10, 6)),
    ((0, 8), (8, 4), (12, 4)),
    ((0, 4), (4, 2), (6, 2), (8, 4), (12, 2)),
    ((0, 3), (3, 3), (6, 2), (8, 6)),
)
#: Sung (1) and rest (0) bars of a 4-bar block; listed twice is drawn twice as often.
_SUNG_PATTERNS = (
    (1, 1, 1, 1),
    (1, 1, 1, 1),
    (1, 1, 1, 0),
    (1, 1, 1, 0),
    (1, 0, 1, 0),
    (1, 1, 0, 0),
)


def _lead(
    rng: np.random.Generator,
    clock: _Clock,
    harmony: _Harmony,
    n_bars: int,
    allowed: list[bool],
) -> tuple[Note, ...]:
    centre = int(rng.integers(62, 70))
    low, high = centre - 7, centre + 8
    scale_notes = [p for p in range(low, high + 1) if p % 12 in harmony.scale_pcs]
    intro = 2 if n_bars >= 8 else 1 if n_bars >= 5 else 0
    # Sung and rest bars follow the 4-bar blocks that the drums and the chords mark.
    blocks = [_SUNG_PATTERNS[int(i)] for i in rng.integers(0, len(_SUNG_PATTERNS), -(-n_bars // 4))]
    sung = [
        allowed[bar] and bar >= intro and bool(blocks[bar // 4][bar % 4]) for bar in range(n_bars)
    ]
    legato = float(rng.uniform(0.8, 0.97))
    motif = [int(i) for i in rng.integers(0, len(_LEAD_RHYTHMS), 4)]
    index = len(scale_notes) // 2
    notes: list[Note | None] = []
    for bar in range(n_bars):
        if not sung[bar]:
            continue
        # Verses repeat their rhythm motif, as songs do, with an occasional variation.
        choice = motif[bar % 4] if rng.random() < 0.7 else int(rng.integers(0, len(_LEAD_RHYTHMS)))
        rhythm = list(_LEAD_RHYTHMS[choice])
        if bar == 0:
            # A leading rest (at least one beat) keeps some exact silence in every song.
            rhythm = [(slot, length) for slot, length in rhythm if slot >= 4] or [(4, 4), (8, 8)]
        phrase_end = bar + 1 >= n_bars or not sung[bar + 1]
        if phrase_end:  # breathe: hold the last note and release it before the bar ends
            slot, _ = rhythm[-1]
            rhythm[-1] = (slot, max(2, 14 - slot))
        chord = harmony.chord_pcs(bar)
        for slot, length in rhythm:
            if slot % 8 == 0:
                tones = [i for i, p in enumerate(scale_notes) if p % 12 in chord]
                nearest = sorted(tones, key=lambda i: (abs(i - index), i))[:2]
                index = nearest[int(rng.integers(0, len(nearest)))]
            else:
                step = int(rng.choice((-2, -1, -1, 0, 1, 1, 2)))
                if index + step < 1 or index + step > len(scale_notes) - 2:
                    step = -step
                index = int(np.clip(index + step, 0, len(scale_notes) - 1))
            pitch = scale_notes[index]
            notes.append(clock.note(bar, slot, length * legato, pitch, rng.uniform(80, 110)))
    if not any(n is not None for n in notes):  # a very short song: sing one note anyway
        notes.append(clock.note(0, 4, 6, scale_notes[len(scale_notes) // 2], 96))
    return _sorted_notes(notes)


#: Time a voice keeps sounding after its note-off (release and reverb), before a rest is gated.
_RELEASE_SECONDS = 0.4
#: Shortest gap that becomes an exact-silence span.
_MIN_SILENCE_SECONDS = 0.25


def _silent_spans(
    notes: tuple[Note, ...], n_samples: int, sample_rate: int
) -> tuple[tuple[int, int], ...]:
    """Sample ranges of the lead that hold no sound: before the first note and in long rests."""
    if not notes:
        return ((0, n_samples),)
    spans = [(0, notes[0].start)] if notes[0].start > 0 else []
    release = _floor_grid(_RELEASE_SECONDS * sample_rate)
    minimum = _MIN_SILENCE_SECONDS * sample_rate
    sounding_until = 0
    for note, following in zip(notes, [*notes[1:], None], strict=True):
        sounding_until = max(sounding_until, note.end)
        stop = following.start if following is not None else n_samples
        start = sounding_until + release
        if stop - start >= minimum:
            spans.append((start, stop))
    return tuple(spans)


# ---------------------------------------------------------------------------------------------
# form, arrangement and humanisation


def _form(rng: np.random.Generator, n_bars: int) -> list[str]:
    """The section of each bar: intro, verses and choruses, maybe a break, an outro.

    Songs shorter than :data:`MIN_FORM_BLOCKS` blocks are a single verse.
    """
    n_blocks = -(-n_bars // BLOCK_BARS)
    if n_blocks < MIN_FORM_BLOCKS:
        return ["verse"] * n_bars
    blocks = ["intro"]
    had_break = False
    while len(blocks) < n_blocks:
        blocks += ["verse"] * int(rng.integers(1, 3))
        blocks += ["chorus"] * int(rng.integers(1, 3))
        if not had_break and rng.random() < 0.6:
            blocks.append("break")
            had_break = True
    blocks = blocks[:n_blocks]
    if n_blocks >= 6:
        blocks[-1] = "outro"
    return [blocks[bar // BLOCK_BARS] for bar in range(n_bars)]


def _arrangement(rng: np.random.Generator, sections: list[str]) -> dict[str, list[bool]]:
    """Which parts play in each bar, from per-song choices of who plays in each section.

    Without a form (a single section), every part plays throughout.
    """
    if len(set(sections)) == 1:
        return {name: [True] * len(sections) for name in PART_STEMS}
    intro_drums, intro_bass = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    break_bass, break_lead = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    verse_pad = bool(rng.random() < 0.3)
    table: dict[str, dict[str, bool]] = {
        "intro": {"drums": intro_drums, "bass": intro_bass, "lead": False},
        "verse": {"pad": verse_pad},
        "chorus": {},
        "break": {"drums": False, "bass": break_bass, "lead": break_lead},
        "outro": {"lead": False},
    }
    return {name: [table[section].get(name, True) for section in sections] for name in PART_STEMS}


def _humanize(
    rng: np.random.Generator,
    name: str,
    notes: tuple[Note, ...],
    clock: _Clock,
    sections: list[str],
    plays: list[bool],
) -> tuple[Note, ...]:
    """Drop the notes of bars where the part rests; jitter onsets and velocities.

    Onsets move by a seeded Gaussian offset (the part's timing spread, at most three standard
    deviations) rounded to the grid; velocities get a Gaussian spread and the section's
    dynamics. Notes stay inside the music and are re-trimmed so no pitch overlaps itself.
    """
    low, high = TIMING_SPREAD_MS[name]
    spread = float(rng.uniform(low, high)) / 1000 * clock.sample_rate
    velocity_spread = float(rng.uniform(*VELOCITY_SPREAD))
    n_bars = len(sections)
    out: list[Note | None] = []
    for note in notes:
        bar = min(int(note.start // clock.bar), n_bars - 1)
        offset = float(np.clip(rng.normal(0.0, 1.0), -3.0, 3.0)) * spread
        velocity = note.velocity * SECTION_DYNAMICS[sections[bar]]
        velocity += rng.normal(0.0, velocity_spread)
        if not plays[bar]:
            continue
        start = min(max(note.start + round(offset / GRID) * GRID, 0), clock.music_end - 4 * GRID)
        end = min(max(start + note.end - note.start, start + GRID), clock.music_end)
        out.append(Note(start, end, note.pitch, min(max(round(velocity), 1), 127)))
    return _sorted_notes(out)
