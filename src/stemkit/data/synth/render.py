"""Render the stems of a composed song with FluidSynth, in process, as float32 audio.

Each stem gets a fresh synthesizer: reusing one across stems (even after a system reset) leaks
voice and effect state into the next stem. ``synth.dynamic-sample-loading`` makes a fresh
synthesizer cheap, because only the samples of the presets in use are read; with it,
FluidSynth 2.3 leaves a channel silent until it receives a program change, so every used
channel gets one right after the soundfont is loaded. pyfluidsynth only exposes 16-bit
output, so ``fluid_synth_write_float`` is bound here through ctypes.

The chorus is switched off: FluidSynth's chorus is strongly decorrelated between left and
right, and on several General MIDI presets it makes the stem anti-phase (negative L/R
correlation), which no real mix sounds like. The reverb stays on.

The vocals stem is either played by FluidSynth on a voice-like preset (``voice="synth"``) or
sung (``voice="sung"``: espeak-ng syllables resynthesised onto the melody, see
:mod:`~stemkit.data.synth.voice`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stemkit.data.synth import voice as sung_voice
from stemkit.data.synth.compose import GRID, SAMPLE_RATE, Part, Song
from stemkit.errors import StemkitError

#: Debian/Ubuntu's TimGM6mb soundfont (package ``timgm6mb-soundfont``).
SYSTEM_SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")

#: FluidSynth settings of every synthesizer; part of the dataset version (saved in meta.json).
SYNTH_SETTINGS: dict[str, int | float] = {
    "synth.sample-rate": float(SAMPLE_RATE),
    "synth.gain": 0.3,
    "synth.midi-channels": 16,
    "synth.polyphony": 256,
    "synth.cpu-cores": 1,
    "synth.dynamic-sample-loading": 1,
    "synth.reverb.active": 1,
    "synth.chorus.active": 0,
}

#: Presets whose test chord has a lower L/R correlation than this are not used.
MIN_LR_CORRELATION = 0.0

_INSTALL_HINT = (
    "install the FluidSynth library and its Python binding: "
    "'apt-get install libfluidsynth3' (Debian/Ubuntu) or 'brew install fluid-synth' (macOS), "
    "then pip install 'stemkit[data]'"
)
# FluidSynth log levels: 0 panic, 1 error, 2 warning, 3 info, 4 debug.
_QUIET_LEVELS = (2, 3, 4)


@functools.lru_cache(maxsize=1)
def _fluidsynth() -> tuple[Any, Any]:
    """The pyfluidsynth module and the ctypes binding of ``fluid_synth_write_float``."""
    try:
        import fluidsynth
    except (ImportError, OSError) as error:
        raise StemkitError(f"cannot load FluidSynth ({error}): {_INSTALL_HINT}") from error
    write_float = fluidsynth.cfunc(
        "fluid_synth_write_float",
        ctypes.c_int,
        ("synth", ctypes.c_void_p, 1),
        ("len", ctypes.c_int, 1),
        ("lout", ctypes.c_void_p, 1),
        ("loff", ctypes.c_int, 1),
        ("lincr", ctypes.c_int, 1),
        ("rout", ctypes.c_void_p, 1),
        ("roff", ctypes.c_int, 1),
        ("rincr", ctypes.c_int, 1),
    )
    if write_float is None:
        raise StemkitError(f"the FluidSynth library is too old (need 2.x): {_INSTALL_HINT}")
    set_log = fluidsynth.cfunc(
        "fluid_set_log_function",
        ctypes.c_void_p,
        ("level", ctypes.c_int, 1),
        ("fun", ctypes.c_void_p, 1),
        ("data", ctypes.c_void_p, 1),
    )
    if set_log is not None:
        # Warnings such as "no preset found" are checked and reported by us instead.
        for level in _QUIET_LEVELS:
            set_log(level, None, None)
    return fluidsynth, write_float


def fluidsynth_version() -> str:
    """Version of the loaded FluidSynth library, e.g. ``"2.3.1"``."""
    fluidsynth, _ = _fluidsynth()
    major, minor, micro = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    fluidsynth.fluid_version(major, minor, micro)
    return f"{major.value}.{minor.value}.{micro.value}"


def default_soundfont() -> Path:
    """The soundfont used when none is given.

    Debian's TimGM6mb when installed, else the copy of TimGM6mb shipped inside the
    ``pretty_midi`` wheel.

    Raises:
        StemkitError: if neither exists.
    """
    if SYSTEM_SOUNDFONT.is_file():
        return SYSTEM_SOUNDFONT
    try:
        import pretty_midi
    except ImportError:
        pass
    else:
        bundled = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
        if bundled.is_file():
            return bundled
    raise StemkitError(
        "no General MIDI soundfont found: install one ('apt-get install timgm6mb-soundfont' or "
        "pip install 'stemkit[data]', whose pretty_midi ships TimGM6mb.sf2) or pass --soundfont"
    )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file (the soundfont's identity in meta.json)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Synth:
    """A fresh FluidSynth synthesizer with one soundfont loaded; deleted on exit."""

    def __init__(self, soundfont: Path) -> None:
        fluidsynth, self._write_float = _fluidsynth()
        settings = dict(SYNTH_SETTINGS)
        gain = settings.pop("synth.gain")
        rate = settings.pop("synth.sample-rate")
        channels = settings.pop("synth.midi-channels")
        self.synth = fluidsynth.Synth(gain=gain, samplerate=rate, channels=channels, **settings)
        self.sfid = self.synth.sfload(str(soundfont))
        if self.sfid < 0:
            self.synth.delete()
            raise StemkitError(
                f"{soundfont}: FluidSynth cannot load this file as a soundfont; "
                "pass a General MIDI .sf2 or .sf3 file with --soundfont"
            )

    def __enter__(self) -> _Synth:
        return self

    def __exit__(self, *exc: object) -> None:
        self.synth.delete()

    def has_preset(self, bank: int, program: int) -> bool:
        return self.synth.sfpreset_name(self.sfid, bank, program) is not None

    def setup(self, channel: int, bank: int, program: int, pan: int, reverb: int) -> None:
        if self.synth.program_select(channel, self.sfid, bank, program) != 0:
            raise StemkitError(f"soundfont has no preset bank {bank} program {program}")
        self.synth.cc(channel, 10, pan)
        self.synth.cc(channel, 91, reverb)
        self.synth.cc(channel, 93, 0)

    def render(
        self, events: Iterable[tuple[int, int, int, int, int]], n_samples: int
    ) -> np.ndarray:
        """Play sorted ``(sample, kind, channel, key, velocity)`` events (kind 0 off, 1 on).

        Returns:
            ``(2, n_samples)`` float32, ``n_samples`` a multiple of the grid.
        """
        left = np.zeros(n_samples, dtype=np.float32)
        right = np.zeros(n_samples, dtype=np.float32)
        position = 0
        for sample, kind, channel, key, velocity in events:
            position = self._write(left, right, position, min(sample, n_samples))
            if kind:
                self.synth.noteon(channel, key, velocity)
            else:
                self.synth.noteoff(channel, key)
        self._write(left, right, position, n_samples)
        return np.stack([left, right])

    def _write(self, left: np.ndarray, right: np.ndarray, start: int, stop: int) -> int:
        if stop > start:
            status = self._write_float(
                self.synth.synth,
                stop - start,
                left.ctypes.data,
                start,
                1,
                right.ctypes.data,
                start,
                1,
            )
            if status != 0:
                raise StemkitError("FluidSynth failed to render audio")
        return max(start, stop)


def check_soundfont(soundfont: Path) -> None:
    """Fail early, with a message naming the file, if ``soundfont`` is unusable.

    Raises:
        StemkitError: if the file is missing, not a soundfont, or has no standard drum kit.
    """
    if not soundfont.is_file():
        raise StemkitError(f"{soundfont}: soundfont file not found; check the --soundfont path")
    with _Synth(soundfont) as synth:
        if not synth.has_preset(128, 0):
            raise StemkitError(
                f"{soundfont}: no standard drum kit (bank 128, preset 0); "
                "pass a General MIDI soundfont with --soundfont"
            )


def lr_correlation(audio: np.ndarray) -> float:
    """Zero-lag correlation between the channels of ``(2, time)`` audio (0 for silence)."""
    # Pairwise summation in float64, not BLAS dot: the result must not depend on threads.
    left, right = (channel.astype(np.float64) for channel in audio)
    energy = float(np.sqrt(np.sum(left * left) * np.sum(right * right)))
    return float(np.sum(left * right) / energy) if energy > 0 else 0.0


@functools.lru_cache(maxsize=8)
def screen_programs(
    soundfont: Path, programs: tuple[int, ...], digest: str = ""
) -> dict[int, float]:
    """L/R correlation of a test chord (C major, 0.5 s and its release) for each program.

    Args:
        soundfont: the soundfont file.
        programs: 0-based General MIDI programs to test (bank 0).
        digest: the soundfont's sha256, only to key the cache on the file's content.

    Returns:
        ``{program: correlation}``; a program the soundfont lacks maps to ``-inf``.
    """
    sample_rate = int(SYNTH_SETTINGS["synth.sample-rate"])
    hold = sample_rate // 2 // GRID * GRID
    total = sample_rate // GRID * GRID
    result: dict[int, float] = {}
    for program in programs:
        with _Synth(soundfont) as synth:
            if not synth.has_preset(0, program):
                result[program] = float("-inf")
                continue
            synth.setup(0, 0, program, pan=64, reverb=40)
            chord = (60, 64, 67)
            events = [(0, 1, 0, key, 100) for key in chord]
            events += [(hold, 0, 0, key, 0) for key in chord]
            result[program] = lr_correlation(synth.render(events, total))
    return result


def usable_programs(soundfont: Path, programs: Iterable[int], digest: str = "") -> set[int]:
    """The programs of ``programs`` whose test chord is not anti-phase in this soundfont."""
    scores = screen_programs(soundfont, tuple(sorted(set(programs))), digest)
    return {program for program, corr in scores.items() if corr >= MIN_LR_CORRELATION}


def _events(parts: Sequence[Part]) -> list[tuple[int, int, int, int, int]]:
    events: list[tuple[int, int, int, int, int]] = []
    for part in parts:
        for note in part.notes:
            events.append((note.start, 1, part.channel, note.pitch, note.velocity))
            events.append((note.end, 0, part.channel, note.pitch, 0))
    # Note-offs before note-ons at the same sample, so a repeated pitch is re-struck.
    events.sort()
    return events


#: The voices the vocals stem can be rendered with.
VOICES: tuple[str, ...] = ("sung", "synth")


def resolve_voice(voice: str | None) -> str:
    """The vocals voice to use: ``voice`` itself, or the default when it is None.

    The default is ``"sung"`` when espeak-ng and parselmouth are installed, else ``"synth"``
    with a warning saying what to install.

    Raises:
        StemkitError: for an unknown voice, or ``"sung"`` without espeak-ng or parselmouth.
    """
    if voice is None:
        if sung_voice.available():
            return "sung"
        warnings.warn(
            "espeak-ng or parselmouth is missing: the vocals are played by a synthesizer "
            f"patch instead of sung ({sung_voice.install_hint()})",
            stacklevel=2,
        )
        return "synth"
    if voice not in VOICES:
        raise StemkitError(f"--voice must be one of {', '.join(VOICES)}, got {voice!r}")
    if voice == "sung":
        sung_voice.require()
    return voice


def voice_engine(voice: str) -> str:
    """What renders the vocals with ``voice`` and its versions (recorded in meta.json)."""
    return sung_voice.engine_versions() if voice == "sung" else "fluidsynth"


def prepare_song(song: Song, voice: str) -> Song:
    """``song`` as ``voice`` renders it: the sung voice breathes in the rests before phrases."""
    return sung_voice.sung_song(song) if voice == "sung" else song


def describe_voice(song: Song, voice: str) -> dict[str, Any]:
    """The lyrics, singers and takes of the sung vocals (empty for the synthesizer voice)."""
    return sung_voice.plan_vocals(song).describe() if voice == "sung" else {}


def render_stem(song: Song, stem: str, soundfont: Path, voice: str = "synth") -> np.ndarray:
    """Render one stem of ``song``, gate its silent spans and fade out its tail.

    Args:
        song: the composed song (passed through :func:`prepare_song` for ``voice``).
        stem: one of ``drums``, ``bass``, ``other``, ``vocals``.
        soundfont: the soundfont file.
        voice: ``"synth"`` plays the vocals on the song's voice preset; ``"sung"`` sings them.

    Returns:
        ``(2, song.n_samples)`` float32 audio at ``song.sample_rate``, before the stem gain.
    """
    if stem == "vocals" and voice == "sung":
        audio = sung_voice.render_vocals(song)
        _gate(audio, song.silent_spans.get(stem, ()), song.sample_rate)
        _fade_out(audio, song.music_end, song.n_samples)
        return audio
    parts = song.stem_parts(stem)
    padded = -(-song.n_samples // GRID) * GRID
    with _Synth(soundfont) as synth:
        for part in parts:
            bank = 128 if part.is_drum else 0
            if not synth.has_preset(bank, part.program):
                raise StemkitError(
                    f"{soundfont}: no preset for bank {bank} program {part.program} "
                    f"({part.name}); pass a General MIDI soundfont with --soundfont"
                )
            synth.setup(part.channel, bank, part.program, part.pan, part.reverb)
        audio = synth.render(_events(parts), padded)[:, : song.n_samples]
    _gate(audio, song.silent_spans.get(stem, ()), song.sample_rate)
    _fade_out(audio, song.music_end, song.n_samples)
    return audio


#: Length of the ramp into a silent span, in seconds.
_GATE_RAMP_SECONDS = 0.05


def _gate(audio: np.ndarray, spans: Iterable[tuple[int, int]], sample_rate: int) -> None:
    """Zero ``audio`` in place inside each span, ramping down over its first samples."""
    ramp_len = int(_GATE_RAMP_SECONDS * sample_rate)
    for start, stop in spans:
        stop = min(stop, audio.shape[-1])
        if stop <= start:
            continue
        if start > 0:
            n = min(ramp_len, stop - start)
            audio[:, start : start + n] *= _cosine_ramp(ramp_len)[:n]
            start += n
        audio[:, start:stop] = 0.0


def _fade_out(audio: np.ndarray, music_end: int, n_samples: int) -> None:
    """Fade the second half of the release tail to silence, so every song ends at zero."""
    start = music_end + (n_samples - music_end) // 2
    if n_samples > start:
        audio[:, start:n_samples] *= _cosine_ramp(n_samples - start)


def _cosine_ramp(n: int) -> np.ndarray:
    """Raised-cosine ramp from 1 down to 0 over ``n`` samples (the last one exactly 0)."""
    if n <= 1:
        return np.zeros(n, dtype=np.float32)
    return (0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, n))).astype(np.float32)
