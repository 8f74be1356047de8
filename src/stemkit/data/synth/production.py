"""Mix production: a seeded effect chain per stem, then bus compression and a limiter.

Each stem goes through a chain of its own (pedalboard): high-pass filter, a bell EQ and an
air shelf, a compressor, light saturation, a tempo-synced delay and a reverb, then stereo width
and panning. The stems are then balanced and summed, and the bus compressor and the limiter
compute ONE gain curve on that mix; the curve multiplies every stem, so the processed mixture
is still exactly the sum of the processed stems (the generator then quantises them as before).

Every setting is drawn from the song's seed. Training songs and held-out songs draw every
parameter from disjoint ranges (:data:`RANGES`): a model tested on held-out songs has never
heard their effect settings.

Shapes: a stem is ``(nb_channels, nb_samples)`` float32; a gain curve is ``(nb_samples,)``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from stemkit.data.synth.compose import GRID, STEMS, Song
from stemkit.data.synth.render import _fade_out, _gate
from stemkit.errors import StemkitError

#: The two splits of effect settings.
SPLITS: tuple[str, ...] = ("train", "heldout")

Interval = tuple[float, float]

#: Per-stem effect parameters: ``{name: (train range, heldout range)}``; a stem's own entry in
#: :data:`STEM_RANGES` overrides these.
_COMMON: dict[str, tuple[Interval, Interval]] = {
    "eq_freq_hz": ((250.0, 2500.0), (3000.0, 5000.0)),
    "eq_gain_db": ((-4.0, 4.0), (4.5, 7.0)),
    "eq_q": ((0.5, 1.5), (1.8, 3.0)),
    "air_gain_db": ((-3.0, 3.0), (3.5, 6.0)),
    "comp_threshold_db": ((-28.0, -16.0), (-36.0, -30.0)),
    "comp_ratio": ((1.5, 4.0), (4.5, 8.0)),
    "comp_attack_ms": ((2.0, 30.0), (35.0, 60.0)),
    "comp_release_ms": ((50.0, 250.0), (300.0, 500.0)),
    "drive_db": ((0.0, 6.0), (7.0, 12.0)),
    "delay_beats": ((0.25, 1.0), (1.25, 2.0)),
    "delay_feedback": ((0.0, 0.35), (0.4, 0.55)),
    "delay_mix": ((0.0, 0.15), (0.18, 0.28)),
    "reverb_room": ((0.1, 0.7), (0.75, 0.92)),
    "reverb_damping": ((0.2, 0.7), (0.75, 0.95)),
    "reverb_wet": ((0.03, 0.25), (0.28, 0.4)),
    "width": ((0.75, 1.25), (0.45, 0.7)),
    "pan_abs": ((0.0, 0.1), (0.12, 0.2)),
}
STEM_RANGES: dict[str, dict[str, tuple[Interval, Interval]]] = {
    "drums": {
        "highpass_hz": ((20.0, 60.0), (70.0, 100.0)),
        "delay_mix": ((0.0, 0.04), (0.05, 0.08)),
        "reverb_wet": ((0.02, 0.15), (0.17, 0.25)),
    },
    "bass": {
        "highpass_hz": ((20.0, 40.0), (45.0, 60.0)),
        "eq_freq_hz": ((80.0, 800.0), (900.0, 1500.0)),
        "delay_mix": ((0.0, 0.03), (0.04, 0.06)),
        "reverb_wet": ((0.0, 0.06), (0.07, 0.12)),
        "width": ((0.5, 0.9), (0.3, 0.45)),
    },
    "other": {
        "highpass_hz": ((60.0, 180.0), (200.0, 300.0)),
        "pan_abs": ((0.0, 0.35), (0.4, 0.55)),
    },
    "vocals": {
        "highpass_hz": ((70.0, 160.0), (180.0, 260.0)),
    },
}
#: Bus parameters (mix compressor and limiter).
BUS_RANGES: dict[str, tuple[Interval, Interval]] = {
    # threshold relative to the mix's active RMS, in dB
    "threshold_rel_db": ((0.0, 6.0), (-4.0, -1.0)),
    "ratio": ((1.5, 3.0), (3.5, 5.0)),
    "attack_ms": ((5.0, 30.0), (35.0, 50.0)),
    "release_ms": ((80.0, 300.0), (350.0, 500.0)),
    # peak reduction of the limiter, in dB
    "limiter_drive_db": ((2.0, 7.0), (8.0, 11.0)),
    "limiter_release_ms": ((30.0, 150.0), (160.0, 250.0)),
}
#: Every range of every split: ``{"<stem>.<param>" or "bus.<param>": (train, heldout)}``.
RANGES: dict[str, tuple[Interval, Interval]] = {
    **{
        f"{stem}.{name}": interval
        for stem in STEMS
        for name, interval in sorted({**_COMMON, **STEM_RANGES[stem]}.items())
    },
    **{f"bus.{name}": interval for name, interval in sorted(BUS_RANGES.items())},
}
#: Active RMS every stem is brought to before and after its chain, in dBFS.
STEM_RMS_DBFS = -20.0
#: Level of each stem in the mix relative to the others, before the song's random gains.
STEM_BALANCE_DB: dict[str, float] = {"drums": 1.0, "bass": 0.0, "other": -2.0, "vocals": 1.5}
#: Time constant of the bus compressor's RMS detector, in seconds.
DETECTOR_SECONDS = 0.01
#: Limiter look-ahead, in seconds.
LOOKAHEAD_SECONDS = 0.0015
#: Seconds a vocal rest keeps the effects' tail before it is gated to exact silence again.
EFFECT_TAIL_SECONDS = 1.0
#: Shortest vocal rest, after the tail, that is gated to exact silence.
_MIN_REST_SECONDS = 0.25
#: Block of the bus detector, in samples.
_BLOCK = GRID
_SPAWN_STEM, _SPAWN_BUS = 102, 103


def draw_settings(track_seed: int, split: str = "train") -> dict[str, dict[str, float]]:
    """The effect settings of a song, drawn from its seed in ``split``'s ranges.

    Args:
        track_seed: the song's seed.
        split: ``"train"`` or ``"heldout"``.

    Returns:
        ``{stem: {param: value}, "bus": {param: value}}`` with values rounded to 4 decimals
        (the values used, as recorded in the track's JSON). ``pan`` carries the pan's sign.
    """
    if split not in SPLITS:
        raise StemkitError(f"effect split must be one of {SPLITS}, got {split!r}")
    which = SPLITS.index(split)
    settings: dict[str, dict[str, float]] = {}
    for index, group in enumerate((*STEMS, "bus")):
        key = (_SPAWN_BUS,) if group == "bus" else (_SPAWN_STEM, index)
        rng = np.random.default_rng(np.random.SeedSequence(track_seed, spawn_key=key))
        prefix = f"{group}."
        values: dict[str, float] = {}
        for name, ranges in RANGES.items():
            if name.startswith(prefix):
                low, high = ranges[which]
                values[name[len(prefix) :]] = round(float(rng.uniform(low, high)), 4)
        if group != "bus":
            values["pan"] = values.pop("pan_abs") * (1.0 if rng.random() < 0.5 else -1.0)
        settings[group] = values
    return settings


@functools.lru_cache(maxsize=1)
def _pedalboard() -> Any:
    try:
        import pedalboard
    except ImportError as error:
        raise StemkitError(
            f"mix production needs pedalboard ({error}): pip install 'stemkit[data]', "
            "or pass --no-production"
        ) from error
    return pedalboard


def process_stem(
    audio: np.ndarray, settings: Mapping[str, float], sample_rate: int, tempo: float
) -> np.ndarray:
    """One stem through its chain: EQ, compression, saturation, delay, reverb, width, pan.

    Args:
        audio: ``(2, nb_samples)`` float32, any level.
        settings: the stem's entry of :func:`draw_settings`.
        sample_rate: in Hz.
        tempo: beats per minute (the delay is tempo-synced).

    Returns:
        ``(2, nb_samples)`` float32 at :data:`STEM_RMS_DBFS` active RMS (silence stays silence).
    """
    level = active_rms(audio)
    if level == 0:
        return np.zeros_like(audio)
    pb = _pedalboard()
    x = (audio * np.float32(10 ** (STEM_RMS_DBFS / 20) / level)).astype(np.float32)
    s = settings
    board = pb.Pedalboard(
        [
            pb.HighpassFilter(cutoff_frequency_hz=s["highpass_hz"]),
            pb.PeakFilter(
                cutoff_frequency_hz=s["eq_freq_hz"], gain_db=s["eq_gain_db"], q=s["eq_q"]
            ),
            pb.HighShelfFilter(cutoff_frequency_hz=8000.0, gain_db=s["air_gain_db"]),
            pb.Compressor(
                threshold_db=s["comp_threshold_db"],
                ratio=s["comp_ratio"],
                attack_ms=s["comp_attack_ms"],
                release_ms=s["comp_release_ms"],
            ),
            pb.Distortion(drive_db=s["drive_db"]),
            pb.Delay(
                delay_seconds=s["delay_beats"] * 60.0 / tempo,
                feedback=s["delay_feedback"],
                mix=s["delay_mix"],
            ),
            pb.Reverb(
                room_size=s["reverb_room"],
                damping=s["reverb_damping"],
                wet_level=s["reverb_wet"],
                dry_level=1.0,
                width=1.0,
            ),
        ]
    )
    y = np.asarray(board(x, sample_rate), dtype=np.float32)
    y = _width_and_pan(y, s["width"], s["pan"])
    level = active_rms(y)
    if level > 0:
        y *= np.float32(10 ** (STEM_RMS_DBFS / 20) / level)
    return y


def _width_and_pan(audio: np.ndarray, width: float, pan: float) -> np.ndarray:
    """Scale the side signal by ``width``, then a constant-power balance ``pan`` in [-1, 1]."""
    mid = 0.5 * (audio[0] + audio[1])
    side = 0.5 * (audio[0] - audio[1]) * np.float32(width)
    angle = (pan + 1.0) * np.pi / 4
    gain_left, gain_right = (
        np.float32(np.sqrt(2) * np.cos(angle)),
        np.float32(np.sqrt(2) * np.sin(angle)),
    )
    return np.stack([(mid + side) * gain_left, (mid - side) * gain_right]).astype(np.float32)


def active_rms(audio: np.ndarray, frame: int = 4096, floor_db: float = -40.0) -> float:
    """RMS over the frames within ``floor_db`` of the loudest one (0 for silence).

    A level that ignores rests, so a sparse vocal is balanced by how loud it sings.
    """
    n_frames = max(1, audio.shape[-1] // frame)
    power = np.square(audio[..., : n_frames * frame], dtype=np.float64)
    if power.shape[-1] < frame:
        power = np.square(audio, dtype=np.float64)[..., None, :]
    else:
        power = power.reshape(*audio.shape[:-1], n_frames, frame)
    per_frame = power.mean(axis=(0, -1)) if audio.ndim > 1 else power.mean(axis=-1)
    loudest = float(per_frame.max())
    if loudest <= 0:
        return 0.0
    active = per_frame[per_frame >= loudest * 10 ** (floor_db / 10)]
    return float(np.sqrt(active.mean()))


def bus_gain(mix: np.ndarray, settings: Mapping[str, float], sample_rate: int) -> np.ndarray:
    """The gain curve of the bus compressor followed by a look-ahead limiter.

    Both detectors read the mix in blocks of :data:`GRID` samples: the compressor follows the
    mix's smoothed power against a threshold set relative to its active RMS and smooths its gain
    reduction with attack and release; the limiter takes the minimum gain needed over the
    look-ahead, releases smoothly, and averages over the look-ahead so it never lets a peak
    through between blocks. Block gains are interpolated linearly to samples.

    Args:
        mix: ``(nb_channels, nb_samples)`` float.
        settings: the ``"bus"`` entry of :func:`draw_settings`.
        sample_rate: in Hz.

    Returns:
        ``(nb_samples,)`` float64 gains in (0, 1].
    """
    n_samples = mix.shape[-1]
    n_blocks = -(-n_samples // _BLOCK)
    peak = np.zeros(n_blocks * _BLOCK)
    peak[:n_samples] = np.abs(mix).max(axis=0)
    peak = peak.reshape(n_blocks, _BLOCK).max(axis=1)
    level = active_rms(mix)
    if level == 0:
        return np.ones(n_samples)

    # compressor: an RMS detector (the power of each block, smoothed over DETECTOR_SECONDS),
    # so it follows the loudness of passages and leaves single transients to the limiter
    power = np.zeros(n_blocks * _BLOCK)
    power[:n_samples] = np.mean(np.square(mix, dtype=np.float64), axis=0)
    smoothing = _coefficient(DETECTOR_SECONDS, sample_rate)
    power = _smooth(power.reshape(n_blocks, _BLOCK).mean(axis=1), smoothing, smoothing)
    threshold_db = 20 * np.log10(level) + settings["threshold_rel_db"]
    level_db = 10 * np.log10(np.maximum(power, 1e-24))
    target = np.maximum(0.0, level_db - threshold_db) * (1 - 1 / settings["ratio"])
    attack = _coefficient(settings["attack_ms"] / 1000, sample_rate)
    release = _coefficient(settings["release_ms"] / 1000, sample_rate)
    reduction = _smooth(target, attack, release)
    comp = 10 ** (-reduction / 20)

    # limiter
    driven = peak * comp
    ceiling = float(driven.max()) * 10 ** (-settings["limiter_drive_db"] / 20)
    need = np.minimum(1.0, ceiling / np.maximum(driven, 1e-12))
    window = max(1, int(np.ceil(LOOKAHEAD_SECONDS * sample_rate / _BLOCK)) + 1)
    # each block holds the least gain of the previous block and the look-ahead: a peak between
    # two block centres gets the gain it needs from both sides of the interpolation
    padded = np.concatenate([[1.0], need, np.ones(window - 1)])
    hold = np.lib.stride_tricks.sliding_window_view(padded, window + 1).min(axis=1)
    limiter_release = _coefficient(settings["limiter_release_ms"] / 1000, sample_rate)
    # instant attack, smooth release, on the gain reduction in dB
    held = 10 ** (-_smooth(-20 * np.log10(hold), 0.0, limiter_release) / 20)
    lead = np.concatenate([np.full(window - 1, held[0]), held])
    limit = np.lib.stride_tricks.sliding_window_view(lead, window).mean(axis=1)

    # Each block takes the least gain of itself and its neighbours: a sample interpolated
    # between two block centres then never gets more gain than its own block allows.
    gains = comp * np.minimum(limit, 1.0)
    edged = np.concatenate([[gains[0]], gains, [gains[-1]]])
    gains = np.lib.stride_tricks.sliding_window_view(edged, 3).min(axis=1)
    centres = np.arange(n_blocks) * _BLOCK + (_BLOCK - 1) / 2
    return np.interp(np.arange(n_samples), centres, gains)


def _coefficient(seconds: float, sample_rate: int) -> float:
    """One-pole smoothing coefficient per block for a time constant of ``seconds``."""
    return float(np.exp(-_BLOCK / max(seconds * sample_rate, 1e-9)))


def _smooth(target: np.ndarray, attack: float, release: float) -> np.ndarray:
    """One-pole follower of ``target``: ``attack`` while it rises, ``release`` while it falls."""
    out = np.empty_like(target)
    state = 0.0
    for i, value in enumerate(target.tolist()):
        coefficient = attack if value > state else release
        state = coefficient * state + (1 - coefficient) * value
        out[i] = state
    return out


def produce(
    song: Song,
    stems: Mapping[str, np.ndarray],
    settings: Mapping[str, Mapping[str, float]],
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Process and balance every stem, then apply the bus gain curve to each.

    Args:
        song: the composed song (tempo, gains, silent spans, end of the music).
        stems: ``{stem: (2, nb_samples)}`` float32 renders.
        settings: :func:`draw_settings` of the song.

    Returns:
        ``({stem: (2, nb_samples) float32}, report)``: stems whose sum is the produced mix
        (the song's stem gains already applied), and what the bus did (dB figures).
    """
    rate = song.sample_rate
    out: dict[str, np.ndarray] = {}
    for stem in STEMS:
        y = process_stem(stems[stem], settings[stem], rate, song.tempo)
        _gate(y, tail_spans(song.silent_spans.get(stem, ()), rate), rate)
        _fade_out(y, song.music_end, song.n_samples)
        gain_db = STEM_BALANCE_DB[stem] + song.gains_db[stem]
        out[stem] = y * np.float32(10 ** (gain_db / 20))
    mix = np.sum([out[stem].astype(np.float64) for stem in STEMS], axis=0)
    gains = bus_gain(mix, settings["bus"], rate)
    curve = gains.astype(np.float32)
    for stem in STEMS:
        out[stem] = out[stem] * curve
    report = {
        "bus_gain_min_db": round(20 * float(np.log10(gains.min())), 3),
        "bus_gain_mean_db": round(20 * float(np.log10(gains.mean())), 3),
        "crest_factor_before_db": round(crest_factor_db(mix), 3),
        "crest_factor_after_db": round(crest_factor_db(mix * gains), 3),
    }
    return out, report


def tail_spans(spans: Iterable[tuple[int, int]], sample_rate: int) -> list[tuple[int, int]]:
    """The silent spans, each after a rest's start moved past the effects' tail.

    A span from the start of the song stays whole: nothing sounded before it, so the effects
    leave it exactly silent.
    """
    tail = int(EFFECT_TAIL_SECONDS * sample_rate)
    shortest = _MIN_REST_SECONDS * sample_rate
    out = []
    for start, stop in spans:
        if start > 0:
            start += tail
        if stop - start >= shortest:
            out.append((start, stop))
    return out


def crest_factor_db(audio: np.ndarray) -> float:
    """Peak over RMS of ``audio``, in dB (0 for silence)."""
    power = float(np.mean(np.square(audio, dtype=np.float64)))
    if power == 0:
        return 0.0
    return 20 * float(np.log10(float(np.abs(audio).max()))) - 10 * float(np.log10(power))
