"""``stemkit data <verb>``: make and manage datasets.

Verbs are nested subcommands; each is a pair ``_add_<verb>(verbs)`` / ``_run_<verb>(args)``
registered in :data:`VERBS`, so a new one (``stemkit data check``, ...) is one more entry.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Declare ``stemkit data`` and its verbs."""
    parser = subparsers.add_parser(
        "data",
        help="make and manage datasets",
        description="Make and manage datasets.",
    )
    verbs = parser.add_subparsers(dest="data_command", required=True, metavar="VERB")
    for add, _ in VERBS.values():
        add(verbs)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the verb's runner."""
    _, runner = VERBS[args.data_command]
    return runner(args)


def _add_synth(verbs: Any) -> None:
    parser = verbs.add_parser(
        "synth",
        help="generate a synthetic 4-stem dataset (MUSDB18-HQ layout)",
        description=(
            "Compose and render pop-like songs with FluidSynth into OUT/train and OUT/test, "
            "one folder per track with mixture, drums, bass, other and vocals WAV files "
            "(44.1 kHz stereo, PCM_16; the mixture is exactly the sum of the stems), song.mid, "
            "settings.json and meta.json. Each song draws a soundfont and, with production on, "
            "per-stem effects, bus compression and a limiter from its seed. With two or more "
            "soundfonts one is kept for --heldout songs, which also draw their effects from "
            "ranges training never uses. The same seed gives the same files."
        ),
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="dataset folder to write")
    parser.add_argument(
        "--tracks",
        type=int,
        default=10,
        metavar="N",
        help="number of tracks, 1 to 100000 (default 10)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds per track, 2 to 1200: each song is rendered whole in memory, about "
        "8 MB per second per worker (default 30)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="K", help="dataset seed (default 0)")
    parser.add_argument(
        "--soundfonts",
        default=None,
        metavar="NAMES",
        help="soundfonts the songs draw from: 'all' (default: every General MIDI .sf2/.sf3 in "
        "/usr/share/sounds, else TimGM6mb from pretty_midi) or names and paths, comma-separated "
        "(e.g. FluidR3_GM,TimGM6mb)",
    )
    parser.add_argument(
        "--soundfont",
        type=Path,
        default=None,
        metavar="PATH",
        help="a single General MIDI .sf2/.sf3 file (the same as --soundfonts PATH)",
    )
    parser.add_argument(
        "--soundfont-mode",
        choices=("song", "part"),
        default="song",
        help="draw one soundfont per song, or one per part (default song)",
    )
    parser.add_argument(
        "--no-production",
        dest="production",
        action="store_false",
        help="dry stems: no per-stem effects, bus compression or limiter",
    )
    parser.add_argument(
        "--heldout",
        action="store_true",
        help="make held-out songs (all in test/): the reserved soundfont and effect ranges "
        "that training songs never use",
    )
    parser.add_argument(
        "--heldout-soundfont",
        default=None,
        metavar="NAME",
        help="the soundfont reserved for --heldout (default: MuseScore_General_Full, else "
        "FluidR3_GM, else the last name); give the same value to the training run",
    )
    parser.add_argument(
        "--test-tracks",
        type=int,
        default=None,
        metavar="M",
        help="tracks put in test/, the last indices (default: max(1, round(0.2 N)))",
    )
    parser.add_argument(
        "--workers", type=int, default=1, metavar="W", help="rendering processes (default 1)"
    )
    parser.add_argument(
        "--voice",
        choices=("sung", "synth"),
        default=None,
        help="vocals sung (espeak-ng syllables on the melody, with vibrato, breaths, a double "
        "and harmonies) or played by a synthesizer voice patch (default: sung when espeak-ng "
        "and parselmouth are installed, else synth with a warning)",
    )


def _run_synth(args: argparse.Namespace) -> int:
    from stemkit.data.synth import synthesize

    start = time.perf_counter()
    folders = synthesize(
        args.out,
        args.tracks,
        args.duration,
        args.seed,
        soundfont=args.soundfont,
        soundfonts=args.soundfonts,
        soundfont_mode=args.soundfont_mode,
        production=args.production,
        heldout=args.heldout,
        heldout_soundfont=args.heldout_soundfont,
        n_test=args.test_tracks,
        workers=args.workers,
        progress=True,
        voice=args.voice,
    )
    elapsed = time.perf_counter() - start
    n_test = sum(folder.parent.name == "test" for folder in folders)
    print(
        f"{args.out}: {len(folders)} tracks of {args.duration:g} s "
        f"({len(folders) - n_test} train, {n_test} test) ready in {elapsed:.1f} s",
        file=sys.stderr,
    )
    return 0


def _add_mir1k(verbs: Any) -> None:
    parser = verbs.add_parser(
        "mir1k",
        help="turn a MUSDB18-HQ-layout folder into a MIR-1K-layout one (voice vs accompaniment)",
        description=(
            "Write OUT/Wavfile/<singer>_<song>_<clip>.wav clips (16 kHz, left = accompaniment, "
            "right = voice, as MIR-1K) and OUT/UndividedWavfile/ from the songs of SRC (e.g. "
            "the generator's output), so that SH-Net and the MIR-1K protocol run offline. Songs "
            "go to the singers in turn; the first two singers are MIR-1K's training singers "
            "(abjones, amy). Stretches without singing are skipped."
        ),
    )
    parser.add_argument("src", type=Path, metavar="SRC", help="MUSDB18-HQ-layout folder")
    parser.add_argument("out", type=Path, metavar="OUT", help="MIR-1K folder to write")
    parser.add_argument(
        "--clip-seconds", type=float, default=8.0, metavar="S", help="clip length (default 8)"
    )
    parser.add_argument(
        "--singers",
        nargs="+",
        default=None,
        metavar="NAME",
        help="singer names given in turn (default: abjones amy and three test singers)",
    )


def _run_mir1k(args: argparse.Namespace) -> int:
    import shutil

    from stemkit.data.mir1k_writer import GENERATED_SINGERS, write_mir1k_from_musdb
    from stemkit.errors import DatasetError

    if args.out.exists():
        raise DatasetError(f"{args.out}: already exists; choose a new folder or delete it")
    # Written aside and renamed when complete: a failure leaves no folder that looks finished.
    partial = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        clips = write_mir1k_from_musdb(
            args.src,
            partial,
            clip_seconds=args.clip_seconds,
            singers=tuple(args.singers) if args.singers else GENERATED_SINGERS,
        )
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(args.out)
    print(f"{args.out}: {len(clips)} clips", file=sys.stderr)
    return 0


#: ``verb -> (add_parser, run)``.
VERBS: dict[str, tuple[Callable[[Any], None], Callable[[argparse.Namespace], int]]] = {
    "synth": (_add_synth, _run_synth),
    "mir1k": (_add_mir1k, _run_mir1k),
}
