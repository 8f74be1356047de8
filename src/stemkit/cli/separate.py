"""``stemkit separate``: split songs into stems, one folder of audio files per song.

Each song's stems are written into a hidden temporary folder beside the destination and
renamed into place once all are written, so an interrupted run never leaves a half-filled
folder under the final name. A song that cannot be read is reported and skipped; the command
then exits with status 1 after the others are done.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from torch import Tensor

    from stemkit.models.base import SeparationModel

#: ``--bits`` → soundfile subtype.
SUBTYPES: dict[int, str] = {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}


#: Chunk length for models that declare none: a 10-minute song through the umxhq-size separator
#: peaks at about 1.9 GB in 15 s chunks against 8.4 GB whole (bench/results/long_song.md).
DEFAULT_SEGMENT = 15.0


def add_parser(subparsers: Any) -> None:
    """Declare ``stemkit separate``."""
    parser = subparsers.add_parser(
        "separate",
        help="separate songs into stems",
        description="Separate songs into stems, written as DIR/<song>/<stem>.<format>.",
    )
    parser.add_argument("songs", nargs="+", metavar="SONG", help="audio files to separate")
    parser.add_argument(
        "-o", "--output", default="separated", metavar="DIR", help="output folder (./separated)"
    )
    parser.add_argument(
        "--model",
        default="default",
        metavar="NAME|PATH",
        help="checkpoint file, bundled model or registered model name (default: the bundled one)",
    )
    parser.add_argument(
        "--segment",
        type=float,
        default=None,
        metavar="S",
        help=f"chunk length in seconds (default: the model's own, else {DEFAULT_SEGMENT:g} s, "
        "which keeps memory bounded on long songs; 0 = the whole song at once)",
    )
    parser.add_argument(
        "--overlap",
        type=float,
        default=0.25,
        metavar="F",
        help="overlap of neighbouring chunks as a fraction of the segment, 0 to 0.5 (0.25)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, metavar="N", help="chunks per model call (1)"
    )
    parser.add_argument(
        "--shifts",
        type=int,
        default=0,
        metavar="N",
        help="shift trick: average N predictions on randomly delayed copies (0 = off)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the shift delays")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (cpu)")
    parser.add_argument(
        "--format", choices=("wav", "flac"), default="wav", help="output file format (wav)"
    )
    parser.add_argument(
        "--bits",
        type=int,
        choices=sorted(SUBTYPES),
        default=16,
        help="16 or 24-bit integers, or 32-bit float (wav only) (16)",
    )
    parser.add_argument(
        "--clip",
        choices=("warn", "clamp", "rescale"),
        default="warn",
        help="samples beyond [-1, 1] in integer formats: clamp with a warning, clamp "
        "silently, or rescale the stem by its peak (warn)",
    )
    parser.add_argument(
        "--downmix",
        action="store_true",
        help="average songs with more channels than the model takes (e.g. 5.1) instead of "
        "refusing them",
    )
    parser.add_argument(
        "--stems",
        default=None,
        metavar="A,B",
        help="comma-separated stems to write (default: all the model gives)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace output folders that already exist"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Separate every song in ``args.songs``; 0 when all succeeded, 1 when some failed."""
    import torch

    from stemkit.errors import AudioError, StemkitError
    from stemkit.inference import check_settings, separate
    from stemkit.pretrained import load_model

    extension = f".{args.format}"
    subtype = SUBTYPES[args.bits]
    if extension == ".flac" and subtype == "FLOAT":
        raise StemkitError("flac stores 16 or 24-bit integers; use --bits 16/24 or --format wav")
    try:
        device = torch.device(args.device)
    except RuntimeError as error:
        raise StemkitError(f"--device {args.device!r} is not a torch device ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StemkitError(f"--device {args.device}: no CUDA device is available; use cpu")

    output_root = Path(args.output)
    if output_root.exists() and not output_root.is_dir():
        raise StemkitError(f"--output {output_root} is a file, not a folder")
    songs = [Path(song) for song in args.songs]
    destinations = _destinations(songs, output_root)
    existing = [str(path) for path in destinations if path.exists()]
    if existing and not args.force:
        raise StemkitError(
            f"output folder(s) already exist: {', '.join(existing)}; pass --force to replace "
            "them or choose another --output"
        )

    model = load_model(args.model)
    if getattr(model, "requires_references", False):
        raise StemkitError(
            f"{args.model} is an oracle: it needs the true stems, which a song to separate does "
            f"not have; score it with `stemkit evaluate --model {args.model} --data DIR`"
        )
    if args.segment is None:
        segment = getattr(model, "segment", None) or DEFAULT_SEGMENT
    else:
        segment = args.segment or None  # 0 asks for the whole song at once
    try:
        check_settings(segment, args.overlap, args.batch_size, args.shifts)
    except ValueError as error:
        raise StemkitError(str(error)) from None
    selected = _select_stems(list(model.sources), args.stems)
    generator = None if args.seed is None else torch.Generator().manual_seed(args.seed)

    failures: list[str] = []
    for song, destination in zip(songs, destinations, strict=True):
        if not args.quiet:
            print(f"separating {song} -> {destination}", file=sys.stderr)
        try:
            mixture, rate = _read(song, model, args.downmix)
            stems = separate(
                model,
                mixture,
                segment=segment,
                overlap=args.overlap,
                batch_size=args.batch_size,
                shifts=args.shifts,
                device=device,
                progress=not args.quiet,
                generator=generator,
            )
            files = {f"{name}{extension}": stems[model.sources.index(name)] for name in selected}
            _write_folder(destination, files, rate, subtype=subtype, clip=args.clip)
        except AudioError as error:
            print(f"stemkit: error: {error}", file=sys.stderr)
            failures.append(str(song))
            continue
        print(destination)
    if failures:
        print(
            f"stemkit: {len(failures)} of {len(songs)} song(s) failed: {', '.join(failures)}",
            file=sys.stderr,
        )
        return 1
    return 0


def song_name(path: Path) -> str:
    """Folder name for a song: its file name without extension (and without ``.stem``)."""
    name = path.name
    lowered = name.lower()
    if lowered.endswith(".stem.mp4"):
        return name[: -len(".stem.mp4")]
    return path.stem


def _destinations(songs: Sequence[Path], output_root: Path) -> list[Path]:
    from stemkit.errors import StemkitError

    destinations = [output_root / song_name(song) for song in songs]
    seen: dict[Path, Path] = {}
    for song, destination in zip(songs, destinations, strict=True):
        if destination in seen:
            raise StemkitError(
                f"{seen[destination]} and {song} would both be written to {destination}; "
                "rename one of them or separate them in two runs with different --output"
            )
        seen[destination] = song
    return destinations


def _select_stems(sources: list[str], wanted: str | None) -> list[str]:
    from stemkit.errors import StemkitError

    if wanted is None:
        return sources
    names = [name.strip() for name in wanted.split(",") if name.strip()]
    unknown = [name for name in names if name not in sources]
    if unknown or not names:
        raise StemkitError(
            f"--stems {wanted!r}: unknown stem(s) {', '.join(unknown) or '(none given)'}; "
            f"this model gives {', '.join(sources)}"
        )
    return list(dict.fromkeys(names))


def _read(song: Path, model: SeparationModel, downmix: bool) -> tuple[Tensor, int]:
    from stemkit.audio import read_audio

    return read_audio(
        song, sample_rate=model.sample_rate, channels=model.audio_channels, downmix=downmix
    )


def _write_folder(
    destination: Path,
    files: dict[str, Tensor],
    rate: int,
    *,
    subtype: str,
    clip: Literal["warn", "clamp", "rescale"],
) -> None:
    """Write ``files`` (name → ``(channels, time)``) into ``destination`` all or nothing."""
    from stemkit.audio import ClippingWarning, write_audio

    token = secrets.token_hex(4)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.partial-{token}")
    partial.mkdir()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ClippingWarning)
            for name, audio in files.items():
                write_audio(partial / name, audio, rate, subtype=subtype, clip=clip)
        for warning in caught:
            print(f"stemkit: warning: {warning.message}", file=sys.stderr)
        if destination.exists() or destination.is_symlink():
            # --force: move the old folder aside first, so that at every moment the final
            # name holds either the old complete folder or the new complete one.
            old = destination.with_name(f".{destination.name}.old-{token}")
            os.replace(destination, old)
            os.replace(partial, destination)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            os.replace(partial, destination)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
