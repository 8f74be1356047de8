"""``stemkit separate``: split songs into stems, one folder of audio files per song.

The output is ``DIR/<song>/<stem>.<format>``, and the command guarantees, whatever happens:

- **Complete or absent.** A song's stems are written into a hidden partial folder in ``DIR``
  and renamed into place once all are written, with a ``.stemkit-stems.json`` marker (song,
  model, stems, date); an interrupted or failed song leaves no folder under its name. A run
  killed outright (SIGKILL, power loss) may leave a hidden partial folder: the next run into
  the same ``DIR`` removes it, but never one that a live concurrent run is still writing.
- **Nothing else is touched.** Song folders are always direct children of ``DIR``; song names
  that are empty, ``.``, ``..`` or hold a path separator are refused, and so is a destination
  that is a symbolic link. ``--force`` only replaces folders holding stemkit's marker; any other
  existing folder or file is refused with a message naming it.
- **No silent overwrite.** Each destination is claimed with a lock while it is written and
  checked again right before the rename, so of two concurrent runs into the same ``DIR`` the
  second reports that song's folder as existing (exit status 1) instead of replacing it.
- **Errors early and in one line.** An ``--output`` that cannot be created or written (a part
  of it is a file, read-only, name too long) is refused before the model is loaded. A song that
  cannot be read, or whose stems cannot be written (disk full, permission denied, …), is
  reported as ``stemkit: error: <path>: <reason>``, its partial folder is removed, and the other
  songs go on; the command then exits with status 1 and lists the failures. Refused commands
  (bad options, bad output folder) exit with status 2 before any separation.

The rules live in :mod:`stemkit.outputs`, shared with the web service.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from stemkit.models.base import SeparationModel

#: ``--bits`` → soundfile subtype.
SUBTYPES: dict[int, str] = {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}


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
        help="chunk length in seconds (default: the model's own, e.g. the whole song for "
        "Open-Unmix, 15 s for waveform and band-split models; 0 = the whole song at once)",
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
        "--force",
        action="store_true",
        help="replace song folders that stemkit wrote before (never other folders or files)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Separate every song in ``args.songs``; 0 when all succeeded, 1 when some failed.

    Raises:
        StemkitError: a bad option, song name or output folder (exit status 2); the checks
            that need no model run before it is loaded, and leave no output folder behind.
    """
    import torch

    from stemkit import outputs
    from stemkit.errors import StemkitError

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
    songs = [Path(song) for song in args.songs]
    names = [outputs.folder_name(song) for song in songs]  # refuses "..wav" before any file work
    created = outputs.prepare_root(output_root)  # a bad --output fails now, not after separating
    try:
        # First, as it may bring back a folder that a run killed during --force moved aside.
        for path in outputs.clean_leftovers(output_root):
            print(f"stemkit: cleaned up {path}, left by an interrupted run", file=sys.stderr)
        destinations = _destinations(songs, names, output_root)
        existing = [str(path) for path in destinations if os.path.lexists(path)]
        if existing and not args.force:
            raise StemkitError(
                f"output folder(s) already exist: {', '.join(existing)}; pass --force to replace "
                "them or choose another --output"
            )
        for path in destinations:
            outputs.check_destination(path, force=args.force)
        return _separate_all(args, songs, destinations, device, extension, subtype)
    except StemkitError:
        # A refused command leaves no trace: not even the output folder it created.
        outputs.remove_if_empty(created)
        raise


def _separate_all(
    args: argparse.Namespace,
    songs: list[Path],
    destinations: list[Path],
    device: torch.device,
    extension: str,
    subtype: str,
) -> int:
    """Load the model, separate and write every song; a song that fails is reported and the
    others go on. Returns 0 when all succeeded, 1 when some failed."""
    import torch

    from stemkit import outputs
    from stemkit.artifacts import load_model
    from stemkit.errors import AudioError, StemkitError
    from stemkit.inference import check_settings, separate

    model = load_model(args.model)
    if model.requires_references:
        raise StemkitError(
            f"{args.model} is an oracle: it needs the true stems, which a song to separate does "
            f"not have; score it with `stemkit evaluate --model {args.model} --data DIR`"
        )
    if args.segment is None:
        segment = model.default_segment
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
            try:
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
            except ValueError as error:
                # The settings were checked above, so the model refuses this song itself,
                # e.g. one shorter than its STFT window.
                raise AudioError(song, f"cannot be separated by {args.model}: {error}") from None
            files = {f"{name}{extension}": stems[model.sources.index(name)] for name in selected}
            info = {
                "song": os.path.abspath(song),
                "model": args.model,
                "stems": selected,
                "sample_rate": rate,
            }
            _write_folder(
                destination,
                files,
                rate,
                subtype=subtype,
                clip=args.clip,
                force=args.force,
                info=info,
            )
        except (AudioError, outputs.OutputError) as error:
            print(f"stemkit: error: {error}", file=sys.stderr)
            failures.append(str(song))
            continue
        except OSError as error:
            # Any other file-system failure: one line for this song, and the batch goes on.
            print(f"stemkit: error: {song}: {outputs.describe_os_error(error)}", file=sys.stderr)
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


def _destinations(songs: Sequence[Path], names: Sequence[str], output_root: Path) -> list[Path]:
    from stemkit import outputs
    from stemkit.errors import StemkitError

    destinations = [outputs.destination(output_root, name) for name in names]
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
    force: bool,
    info: dict[str, Any],
) -> None:
    """Write ``files`` (name → ``(channels, time)``) as the stem folder ``destination``, all or
    nothing (see :func:`stemkit.outputs.write_stem_folder`).

    Raises:
        OutputError: the destination is taken or the file system refused a write.
        AudioError: a stem cannot be encoded.
    """
    from stemkit import audio, outputs

    def write(folder: Path) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", audio.ClippingWarning)
            for name, signal in files.items():
                audio.write_audio(folder / name, signal, rate, subtype=subtype, clip=clip)
        for warning in caught:
            # Name the file where the user will find it, not in the hidden partial folder.
            message = str(warning.message).replace(str(folder), str(destination))
            print(f"stemkit: warning: {message}", file=sys.stderr)

    outputs.write_stem_folder(destination, write, force=force, info=info)
