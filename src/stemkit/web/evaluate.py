"""Songs whose true stems are known, and the scores of a job against them.

The service can make a test song itself (:func:`generate_song`): four stems drawn with numpy
(a sung-like vibrato melody, drum hits, a bass line, chords), seeded, mixed by summing. A job
on such a song is scored per stem with uSDR (:func:`stemkit.metrics.sdr.usdr`, one SDR per
stem over the whole song, the MDX convention), so the page can show the scores beside the
player and put two models side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np

#: The stems of a generated song, in the MUSDB18 names the bundled model gives.
SOURCES: Final = ("vocals", "drums", "bass", "other")


def synth_stems(seconds: float, sample_rate: int = 44100, seed: int = 0) -> dict[str, np.ndarray]:
    """Four stereo stems of a short song, each ``(2, time)`` float32, peaks below 0.25.

    The mixture (their sum) stays within [-1, 1].
    """
    rng = np.random.default_rng(seed)
    frames = round(seconds * sample_rate)
    t = np.arange(frames) / sample_rate
    beat = 0.5  # 120 bpm
    key = 110.0 * 2 ** (rng.integers(0, 12) / 12)

    steps = np.floor(t / beat).astype(int)
    scale = np.array([0, 2, 4, 7, 9, 12])
    melody = key * 4 * 2 ** (scale[rng.integers(0, len(scale), steps.max() + 1)][steps] / 12)
    vibrato = 1 + 0.006 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(melody * vibrato) / sample_rate
    envelope = np.clip(np.sin(np.pi * (t % beat) / beat), 0, 1) ** 0.5
    vocals = envelope * (np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.1 * np.sin(3 * phase))

    drums = np.zeros(frames)
    hit = np.exp(-np.arange(int(0.15 * sample_rate)) / (0.03 * sample_rate))
    for start in range(0, frames, int(beat / 2 * sample_rate)):
        piece = hit[: frames - start]
        kick = np.sin(2 * np.pi * 55 * np.arange(len(piece)) / sample_rate)
        noise = rng.standard_normal(len(piece)) * 0.5
        drums[start : start + len(piece)] += piece * (kick if (start // 1) % 2 == 0 else noise)

    bass_notes = key / 2 * 2 ** (np.array([0, 5, 7, 3])[(steps // 4) % 4] / 12)
    bass = np.sin(2 * np.pi * np.cumsum(bass_notes) / sample_rate)

    chord = [1.0, 2 ** (4 / 12), 2 ** (7 / 12)]
    other = sum(np.sin(2 * np.pi * key * 2 * ratio * t + rng.uniform(0, 6)) for ratio in chord)

    stems = {}
    for name, mono, pan in zip(
        SOURCES, (vocals, drums, bass, np.asarray(other)), (0.5, 0.4, 0.5, 0.65), strict=True
    ):
        mono = mono / (np.abs(mono).max() + 1e-9) * 0.22
        stems[name] = np.stack([mono * (1 - pan) * 2, mono * pan * 2]).astype(np.float32) / 1.3
    return stems


def generate_song(folder: Path, seconds: float, seed: int) -> tuple[str, dict[str, str], int]:
    """Write a generated song and its true stems into ``folder`` (which must not exist).

    Returns:
        ``(mixture file name, stem → file name under references/, frames)``.
    """
    from stemkit.audio import write_audio

    rate = 44100
    stems = synth_stems(seconds, rate, seed)
    folder.mkdir()
    (folder / "references").mkdir()
    references = {}
    for name, signal in stems.items():
        # 32-bit float: the references are exact, and they sum exactly to the mixture below
        write_audio(folder / "references" / f"{name}.wav", signal, rate, subtype="FLOAT")
        references[name] = f"{name}.wav"
    mixture = np.sum(list(stems.values()), axis=0)
    write_audio(folder / "song.wav", mixture, rate, subtype="FLOAT")
    return "song.wav", references, int(mixture.shape[-1])


def score_stems(references: dict[str, Path], estimates: dict[str, Path]) -> dict[str, float | None]:
    """uSDR in dB of each estimated stem against its true stem.

    A ``no_<stem>`` estimate (two-stem jobs) is scored against the sum of the other true stems;
    an estimate without a true counterpart (the identity model's ``mixture``) scores None.
    """
    from stemkit.audio import read_audio
    from stemkit.metrics.sdr import usdr

    truth = {name: read_audio(path, channels=None)[0].numpy() for name, path in references.items()}
    scores: dict[str, float | None] = {}
    for name, path in estimates.items():
        if name in truth:
            target = truth[name]
        elif name.startswith("no_") and name[3:] in truth:
            target = sum(s for n, s in truth.items() if n != name[3:])  # type: ignore[assignment]
        else:
            scores[name] = None
            continue
        estimate = read_audio(path, channels=None)[0].numpy()
        frames = min(target.shape[-1], estimate.shape[-1])
        value = usdr(target[None, :, :frames], estimate[None, :, :frames])[0]
        scores[name] = round(float(value), 2)
    return scores


def baseline_scores(references: dict[str, Path], mixture: Path) -> dict[str, float | None]:
    """uSDR in dB of the mixture itself as the estimate of each true stem: the score a model
    must beat (the baseline every table of the field shows)."""
    return score_stems(references, dict.fromkeys(references, mixture))
