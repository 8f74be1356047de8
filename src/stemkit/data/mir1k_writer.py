"""Writing a MIR-1K-layout folder from MUSDB-layout songs (e.g. the generator's output)."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from stemkit.audio.convert import resample
from stemkit.data.mir1k import CLIP_FOLDERS, MIR1K_RATE
from stemkit.errors import DatasetError

__all__ = ["GENERATED_SINGERS", "write_mir1k_from_musdb"]

#: Singer names given to generated songs, in turn; the first two are the training singers.
GENERATED_SINGERS: tuple[str, ...] = ("abjones", "amy", "bobon", "geniusturtle", "heycat")


def _silent(channel: np.ndarray, floor_db: float = -60.0) -> bool:
    """Whether ``channel`` stays below ``floor_db`` dBFS RMS (after 16-bit rounding)."""
    rms = float(np.sqrt(np.mean(np.square(channel, dtype=np.float64)))) if channel.size else 0.0
    return rms < 10 ** (floor_db / 20)


def write_mir1k_from_musdb(
    musdb_root: str | PathLike[str],
    out: str | PathLike[str],
    *,
    clip_seconds: float = 8.0,
    singers: Sequence[str] = GENERATED_SINGERS,
    undivided: bool = True,
    subtype: str = "PCM_16",
) -> list[Path]:
    """Write a MIR-1K-layout folder from a MUSDB18-HQ-layout one (e.g. the generator's output).

    Each track (``train/`` then ``test/``, by name) becomes song ``k`` (1, 2, ...) of singer
    ``singers[(k - 1) % len(singers)]``, so the first two tracks go to the training singers
    with the default names. The vocals and the accompaniment (mixture − vocals) are mixed to
    mono, resampled to 16 kHz and written as stereo clips of ``clip_seconds`` (the last, shorter
    remainder is kept when at least half a clip long): left = accompaniment, right = voice, as
    in MIR-1K. Stretches where either is silent (below −60 dBFS RMS) are skipped, as every
    MIR-1K clip holds both. Both channels are scaled by one factor when needed to keep peaks
    below 1.

    Args:
        musdb_root: folder with ``train/`` and/or ``test/`` track folders holding
            ``mixture.wav`` and ``vocals.wav``.
        out: the MIR-1K root to write (``Wavfile/``, ``UndividedWavfile/``).
        clip_seconds: clip length in seconds.
        singers: names without underscores, used in turn.
        undivided: also write each whole song to ``UndividedWavfile/<singer>_<song>.wav``.
        subtype: WAV sample format (MIR-1K: 16-bit PCM).

    Returns:
        The clip files written, sorted.

    Raises:
        DatasetError: no tracks, or a singer name with an underscore.
    """
    from stemkit.data.musdb import SUBSETS, list_tracks

    if not clip_seconds > 0:
        raise DatasetError(f"clip_seconds must be positive; got {clip_seconds}")
    if not singers or any("_" in s or not s for s in singers):
        raise DatasetError(f"singer names must be non-empty and hold no '_'; got {singers}")
    root = Path(musdb_root)
    tracks = [
        track
        for subset in SUBSETS
        if (root / subset).is_dir()
        for track in list_tracks(root, subset, ("vocals",))
    ]
    if not tracks:
        raise DatasetError(f"{root}: no train/ or test/ track folders to convert")
    clip_folder = Path(out) / CLIP_FOLDERS[0]
    clip_folder.mkdir(parents=True, exist_ok=True)
    if undivided:
        (Path(out) / "UndividedWavfile").mkdir(parents=True, exist_ok=True)
    clip_len = max(1, round(clip_seconds * MIR1K_RATE))
    written: list[Path] = []
    for number, track in enumerate(tracks, start=1):
        mixture, rate = sf.read(str(track.path("mixture")), dtype="float32", always_2d=True)
        vocals, _ = sf.read(str(track.path("vocals")), dtype="float32", always_2d=True)
        mono = torch.from_numpy(np.stack([mixture - vocals, vocals]).mean(axis=-1))
        song = resample(mono, rate, MIR1K_RATE).numpy()
        peak = float(np.abs(song).max())
        if peak >= 1.0:
            song = song * (0.99 / peak)
        stem = f"{singers[(number - 1) % len(singers)]}_{number}"
        if undivided:
            sf.write(Path(out) / "UndividedWavfile" / f"{stem}.wav", song.T, MIR1K_RATE, subtype)
        starts = range(0, song.shape[-1], clip_len)
        index = 0
        for start in starts:
            piece = song[:, start : start + clip_len]
            if index > 0 and 2 * piece.shape[-1] < clip_len:
                break
            # Every MIR-1K clip holds singing and accompaniment; a silent channel would also
            # leave BSS Eval undefined, so stretches without one are not written.
            if _silent(piece[0]) or _silent(piece[1]):
                continue
            index += 1
            path = clip_folder / f"{stem}_{index:02d}.wav"
            sf.write(path, piece.T, MIR1K_RATE, subtype)
            written.append(path)
    return sorted(written)
