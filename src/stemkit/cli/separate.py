"""``stemkit separate``: split songs into stems, one folder of audio files per song.

The output is ``DIR/<song>/<stem>.<format>`` (``--filename`` changes the names; songs found
in a folder keep their subfolder: ``DIR/<subfolder>/<song>/``; see :mod:`stemkit.cli.songs`).
Songs are files of any format soundfile or ffmpeg decodes, folders or quoted glob patterns;
stems are written as wav, flac, mp3, ogg (Vorbis) or opus, at the input's rate by default.
``--two-stems vocals`` writes ``vocals`` and ``no_vocals`` (the mixture minus the vocals, so
the two add up to the mixture); models with one network per stem and no joint filter (BSRNN,
Open-Unmix with ``niter=0``) then run only that stem's network.

Before any work the command names the model and what it was trained on; a catalogue name
(``umxhq``) uses its published weights, fetched and converted on first use and cached after
(:mod:`stemkit.artifacts.fetch`); a registered architecture without trained weights is refused
(it would write noise) unless ``--random-weights`` asks for it. ``--device auto`` (the
default) takes CUDA, then MPS, then the CPU. The command guarantees, whatever happens:

- **Complete or absent.** A song's stems are written into a hidden partial folder in ``DIR``
  and renamed into place once all are written, with a ``.stemkit-stems.json`` marker (song,
  model, stems, date); an interrupted or failed song leaves no folder under its name. A run
  killed outright (SIGKILL, power loss) may leave a hidden partial folder: the next run into
  the same ``DIR`` removes it, but never one that a live concurrent run is still writing.
- **Resumable.** ``--skip-existing`` leaves alone every song whose folder is complete (its
  marker lists files that are all there), so a batch killed half-way is finished by running the
  same command again with it.
- **Nothing else is touched.** Song folders are always direct children of ``DIR`` (or of their
  subfolder in it); song names
  that are empty, ``.``, ``..`` or hold a path separator are refused, and so is a destination
  that is a symbolic link. ``--force`` only replaces folders holding stemkit's marker; any other
  existing folder or file is refused with a message naming it.
- **No silent overwrite.** Each destination is claimed with a lock while it is written and
  checked again right before the rename, so of two concurrent runs into the same ``DIR`` the
  second reports that song's folder as existing (exit status 1) instead of replacing it.
- **Errors early and in one line.** An ``--output`` that cannot be created or written (a part
  of it is a file, read-only, name too long), an unknown or missing ``--device``, an option
  the format does not take, are refused before the model is loaded. A song that
  cannot be read, or whose stems cannot be written (disk full, permission denied, …), is
  reported as ``stemkit: error: <path>: <reason>``, its partial folder is removed, and the other
  songs go on; the command then exits with status 1 and lists the failures. Refused commands
  (bad options, bad output folder) exit with status 2 before any separation.

The rules live in :mod:`stemkit.outputs`, shared with the web service; the work on each song
(read → separate → write, streamed in blocks so that memory does not grow with the song: see
:mod:`stemkit.inference.files`) is :meth:`stemkit.api.Separator.separate_to_folder`, the Python
API.
Status lines go to stderr through :mod:`logging` (:mod:`stemkit.cli.logs`): ``-q`` keeps
warnings and errors, ``-v`` adds debug lines.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stemkit.api import FORMATS, MP3_BITRATES, OPUS_BITRATES, SUBTYPES
from stemkit.cli.logs import BARE, PLAIN

if TYPE_CHECKING:
    import torch

    from stemkit import outputs
    from stemkit.api import Separator, StemFiles
    from stemkit.cli.songs import Song

logger = logging.getLogger(__name__)


def add_batch_size_option(parser: argparse.ArgumentParser) -> None:
    """``--batch-size N``, shared with ``stemkit evaluate``: chunks per model call."""
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="chunks per model call (the model's default: 4 for Demucs v1, else 1)",
    )


def add_parser(subparsers: Any) -> None:
    """Declare ``stemkit separate``."""
    parser = subparsers.add_parser(
        "separate",
        help="separate songs into stems",
        description="Separate songs into stems, written as DIR/<song>/<stem>.<format>.",
        # @FILE: the songs of a big job, one per line (and any other argument)
        fromfile_prefix_chars="@",
    )
    parser.add_argument(
        "songs",
        nargs="*",
        metavar="SONG",
        help="audio files (wav, flac, mp3, aiff, ogg, opus, m4a, wma, video, … anything ffmpeg "
        "decodes), folders (searched recursively for audio files) or quoted glob patterns "
        "such as 'album/*.flac'",
    )
    parser.add_argument(
        "-o", "--output", default="separated", metavar="DIR", help="output folder (./separated)"
    )
    parser.add_argument(
        "--model",
        default="default",
        metavar="NAME|PATH",
        help="checkpoint file, bundled model (default: trained on generated songs only), "
        "catalogue model with published weights (umxhq, umx, umxl, umxse: fetched once, then "
        "cached; `stemkit models` lists them) or identity; other registered architectures "
        "need --random-weights",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="allow --model to name an architecture without trained weights, which then "
        "separates with random weights (noise; for tests and timing only); a name that is "
        "also a catalogue model (umx) then means the architecture",
    )
    parser.add_argument(
        "--segment",
        type=float,
        default=None,
        metavar="S",
        help="chunk length in seconds (default: the model's own, e.g. the whole song for "
        "Open-Unmix (1-minute chunks past 10 minutes), 15 s for waveform and band-split "
        "models; 0 = the whole song at once, at any length)",
    )
    parser.add_argument(
        "--overlap",
        type=float,
        default=0.25,
        metavar="F",
        help="overlap of neighbouring chunks as a fraction of the segment, 0 to 0.5 (0.25)",
    )
    add_batch_size_option(parser)
    parser.add_argument(
        "--shifts",
        type=int,
        default=0,
        metavar="N",
        help="shift trick: average N predictions on randomly delayed copies (0 = off)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the shift delays")
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps (auto)",
    )
    parser.add_argument(
        "--engine",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="what runs the network: PyTorch, or onnxruntime on the CPU (the network exported "
        "to ONNX once and cached; needs the onnx extra) (torch)",
    )
    parser.add_argument(
        "--format", choices=tuple(FORMATS), default="wav", help="output file format (wav)"
    )
    parser.add_argument(
        "--bits",
        type=int,
        choices=sorted(SUBTYPES),
        default=None,
        help="wav and flac: 16 or 24-bit integers, or 32-bit float (wav only) (16)",
    )
    parser.add_argument(
        "--bitrate",
        "--mp3-bitrate",
        type=int,
        default=None,
        metavar="KBPS",
        help=f"mp3: constant bit rate in kbit/s, {', '.join(map(str, MP3_BITRATES))} (320); "
        f"opus: target bit rate, {OPUS_BITRATES[0]} to {OPUS_BITRATES[1]} (libopus' choice, "
        "about 120 for stereo)",
    )
    parser.add_argument(
        "--sample-rate",
        default="input",
        metavar="input|model|HZ",
        help="rate of the stems: the song's own (input), the model's, or a number of Hz; "
        "opus is always written at 48000 Hz and mp3 at the next rate it can store (input)",
    )
    parser.add_argument(
        "--clip",
        choices=("warn", "clamp", "rescale"),
        default="warn",
        help="samples beyond [-1, 1] in every format but 32-bit float: clamp with a warning, clamp "
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
        "--two-stems",
        default=None,
        metavar="STEM",
        help="write STEM and no_STEM, the mixture minus STEM (e.g. --two-stems vocals for "
        "karaoke); the two add up to the mixture at the model's rate (exactly with --bits 32)",
    )
    parser.add_argument(
        "--filename",
        default="{track}/{stem}.{ext}",
        metavar="TEMPLATE",
        help="where each stem goes under DIR: a folder holding {track} (the song's name), then "
        "a file name holding {stem} and {ext}, e.g. '{track}/{track} - {stem}.{ext}' "
        "({track}/{stem}.{ext})",
    )
    parser.add_argument(
        "--codecarbon",
        default=None,
        metavar="COUNTRY",
        help="also measure each song with CodeCarbon's offline tracker (no network), for the "
        "grid of this ISO country code, e.g. FRA; recorded beside the Green Algorithms estimate",
    )
    parser.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip songs whose output folder is complete (finish an interrupted batch)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace song folders that stemkit wrote before (never other folders or files)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no model line, song counter or progress bars"
    )
    catalogue = parser.add_argument_group(
        "big jobs",
        "a catalogue of songs on a Ray cluster, resumable from a manifest "
        "(see docs/scaling.md); SONG may also be @FILE, a file listing songs one per line",
    )
    catalogue.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="separate the songs as Ray tasks: no ADDRESS starts a local cluster, auto joins the "
        "one running here, HOST:PORT another; the model is loaded once per worker (needs the "
        "cluster extra)",
    )
    catalogue.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="Ray workers (default: one per GPU of the cluster, else one per --worker-cpus CPUs)",
    )
    catalogue.add_argument(
        "--worker-cpus",
        type=float,
        default=1.0,
        metavar="C",
        help="CPUs (and torch threads) each Ray worker takes (1)",
    )
    catalogue.add_argument(
        "--worker-gpus",
        type=float,
        default=1.0,
        metavar="G",
        help="GPUs each Ray worker takes where the cluster has GPUs; 0.25 puts four workers on "
        "a GPU (1)",
    )
    catalogue.add_argument(
        "--retries",
        type=int,
        default=2,
        metavar="N",
        help="times a song is retried after its worker process died; then it is marked failed "
        "and the job goes on (2)",
    )
    catalogue.add_argument(
        "--manifest",
        default=None,
        metavar="FILE",
        help="the job's manifest (JSON lines): written with every song pending when FILE does "
        "not exist, each song's result appended as it arrives; when FILE exists the job "
        "resumes from it, without searching the SONG arguments again or redoing finished songs",
    )
    parser.set_defaults(func=run)


@dataclass(frozen=True)
class _Job:
    """One song and the folder its stems go to."""

    song: Path
    destination: Path


def run(args: argparse.Namespace) -> int:
    """Separate every song ``args.songs`` names; 0 when all succeeded, 1 when some failed.

    Raises:
        StemkitError: a bad option, device, song name or output folder (exit status 2); the
            checks that need no model run before it is loaded, and leave no output folder
            behind.
    """
    from stemkit import outputs
    from stemkit.cli.songs import find_songs
    from stemkit.errors import StemkitError
    from stemkit.runtime import resolve_device

    if args.ray not in (None, "local", "auto") and ":" not in args.ray:
        # `--ray song.wav ...`: argparse took the first song for the optional address
        args.songs, args.ray = [args.ray, *args.songs], "local"
    if args.codecarbon and args.ray is not None:
        # every worker would measure the whole machine: the songs' sum would count it twice
        raise StemkitError("--codecarbon measures the machine from one process: not with --ray")
    if args.codecarbon:
        from stemkit.energy import check_country

        args.codecarbon = check_country(args.codecarbon)
    output = _output_settings(args)
    file_names = outputs.FileNames(args.filename)
    device = resolve_device(args.device)
    if args.engine == "onnxruntime" and device.type != "cpu":
        if args.device.strip().lower() != "auto":
            raise StemkitError(
                f"--engine onnxruntime runs on the CPU; drop --device {args.device} or use "
                "--engine torch"
            )
        device = resolve_device("cpu")
    output_root = Path(args.output)
    if args.manifest is not None and os.path.lexists(args.manifest):
        from stemkit.cli import catalogue

        return catalogue.resume(args)
    if not args.songs:
        raise StemkitError("no SONG given: name audio files, folders, patterns or @LIST files")
    songs = find_songs(args.songs, exclude=output_root)
    roots = sorted({output_root / song.subfolder for song in songs})
    # refuses "..wav" early
    names = [file_names.folder(outputs.folder_name(song.path)) for song in songs]
    created: list[Path] = []
    try:
        for root in roots:  # a bad --output fails now, not after separating
            created += outputs.prepare_root(root)
        # First, as it may bring back a folder that a run killed during --force moved aside.
        for root in roots:
            for path in outputs.clean_leftovers(root):
                # shown even with --quiet, as before: a warning, in the words it always had
                logger.warning("cleaned up %s, left by an interrupted run", path, extra=PLAIN)
        jobs = _jobs(songs, names, output_root)
        skipped = [job for job in jobs if args.skip_existing and is_complete(job.destination)]
        jobs = [job for job in jobs if job not in skipped]
        existing = [str(job.destination) for job in jobs if os.path.lexists(job.destination)]
        if existing and not args.force:
            raise StemkitError(
                f"output folder(s) already exist: {', '.join(existing)}; pass --force to replace "
                "them, --skip-existing to keep the complete ones, or choose another --output"
            )
        for job in jobs:
            outputs.check_destination(job.destination, force=args.force)
        if skipped:
            logger.info("skipping %d song(s) already separated in %s", len(skipped), output_root)
        if args.ray is not None or args.manifest is not None:
            from stemkit.cli import catalogue

            return catalogue.start(args, [(job.song, job.destination) for job in jobs])
        if not jobs:
            return 0
        return _separate_all(args, jobs, device, output, file_names)
    except StemkitError:
        # A refused command leaves no trace: not even the output folders it created.
        outputs.remove_if_empty(created)
        raise


def _output_settings(args: argparse.Namespace) -> StemFiles:
    """``--format``, ``--bits``, ``--bitrate``, ``--sample-rate`` and ``--clip``, checked
    together (:meth:`stemkit.api.StemFiles.from_options`)."""
    from stemkit.api import StemFiles

    return StemFiles.from_options(args.format, args.bits, args.bitrate, args.sample_rate, args.clip)


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` is a stem folder whose marker lists files that are all there."""
    from stemkit import outputs

    if not outputs.is_stem_folder(folder):
        return False
    try:
        marker = json.loads((folder / outputs.MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = marker.get("files")
    if not isinstance(files, list) or not files:
        return False
    names = [name for name in files if isinstance(name, str) and name != outputs.MARKER]
    return bool(names) and all((folder / name).is_file() for name in names)


def _separate_all(
    args: argparse.Namespace,
    jobs: list[_Job],
    device: torch.device,
    output: StemFiles,
    file_names: outputs.FileNames,
) -> int:
    """Load the model, separate and write every song; a song that fails is reported and the
    others go on. Returns 0 when all succeeded, 1 when some failed."""
    separator, stems = build_separator(args, device, progress=logger.isEnabledFor(logging.INFO))

    failures: list[str] = []
    costs: list[dict[str, Any]] = []
    started = time.monotonic()
    for number, job in enumerate(jobs, 1):
        song, destination = job.song, job.destination
        eta = ""
        if number > 1:
            left = (time.monotonic() - started) / (number - 1) * (len(jobs) - number + 1)
            eta = f" (about {_duration(left)} left)"
        logger.info(
            "[%d/%d] separating %s -> %s%s", number, len(jobs), song, destination, eta, extra=BARE
        )
        error = separate_song(separator, args, stems, song, destination, output, file_names)
        if error is not None:
            logger.error("%s", error)
            failures.append(str(song))
            continue
        print(destination, flush=True)
        if separator.last_cost is not None:
            costs.append(separator.last_cost)
    if costs:
        logger.info("%s", cost_line(costs))
    if failures:
        logger.error(
            "%d of %d song(s) failed: %s",
            len(failures),
            len(jobs),
            ", ".join(failures),
            extra=PLAIN,
        )
        return 1
    return 0


def separate_song(
    separator: Separator,
    args: argparse.Namespace,
    stems: list[str] | None,
    song: Path,
    destination: Path,
    output: StemFiles,
    file_names: outputs.FileNames,
) -> str | None:
    """Separate one song into its folder, as every way of running the command does (one
    process, or a Ray worker: the same bytes either way). Returns None, or the song's failure
    in one line (the batch goes on)."""
    from stemkit import outputs
    from stemkit.errors import AudioError

    try:
        separator.separate_to_folder(
            song,
            destination,
            output=output,
            stems=stems,
            two_stems=args.two_stems,
            force=args.force,
            downmix=args.downmix,
            names=file_names,
        )
    except (AudioError, outputs.OutputError) as error:
        return str(error)
    except OSError as error:
        # Any other file-system failure: one line for this song, and the batch goes on.
        return f"{song}: {outputs.describe_os_error(error)}"
    return None


def build_separator(
    args: argparse.Namespace, device: torch.device, *, progress: bool
) -> tuple[Separator, list[str] | None]:
    """The model ``--model`` names, checked and wrapped as the options say; returns the
    separator and the stems to write (None with ``--two-stems``).

    Raises:
        StemkitError: an oracle or untrained model, or bad ``--stems``/``--two-stems``.
    """
    from stemkit.api import Separator
    from stemkit.artifacts import load_model
    from stemkit.cli import model_choice
    from stemkit.errors import StemkitError

    model = load_model(args.model, random_weights=args.random_weights)
    if model.requires_references:
        raise StemkitError(
            f"{args.model} is an oracle: it needs the true stems, which a song to separate does "
            f"not have; score it with `stemkit evaluate --model {args.model} --data DIR`"
        )
    if model_choice.is_untrained(args.model) and not args.random_weights:
        raise model_choice.refuse_untrained(args.model)
    line = model_choice.describe(args.model, model, random_weights=args.random_weights)
    if args.engine == "onnxruntime":
        from stemkit.artifacts.onnx import onnxruntime_model

        # random weights are exported into a temporary folder, not cached
        untrained = model_choice.is_untrained(args.model, random_weights=args.random_weights)
        model = onnxruntime_model(model, cache=not untrained)
        line += "; network run by onnxruntime"
    separator = Separator(
        model,
        name=args.model,
        device=device,
        segment=args.segment,
        overlap=args.overlap,
        shifts=args.shifts,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=progress,
    )
    if args.codecarbon:
        from stemkit.energy import CodeCarbon

        separator.codecarbon = CodeCarbon(args.codecarbon)
        if separator.codecarbon.reason:
            logger.warning("CodeCarbon will not measure: %s", separator.codecarbon.reason)
    sources = list(model.sources)
    if args.two_stems is not None:
        if args.stems is not None:
            raise StemkitError("--two-stems and --stems exclude each other; choose one")
        if args.two_stems not in sources:
            raise StemkitError(
                f"--two-stems {args.two_stems!r}: this model gives {', '.join(sources)}"
            )
        stems = None
    else:
        stems = _select_stems(sources, args.stems)
    logger.info("%s; on %s", line, device)
    return separator, stems


def cost_line(costs: list[dict[str, Any]]) -> str:
    """What the separated songs cost in all: audio, wall time, real-time factor, energy (each
    song's is in its folder's marker file)."""
    from stemkit.energy import total

    audio = sum(float(cost["audio_seconds"]) for cost in costs)
    spent = total([{k: v for k, v in cost.items() if isinstance(v, int | float)} for cost in costs])
    speed = audio / spent["seconds"] if spent["seconds"] else float("inf")
    line = (
        f"{len(costs)} song(s), {_duration(audio)} of audio in {_duration(spent['seconds'])} "
        f"({speed:.1f}x real time), {spent['energy_kwh'] * 1000:.2f} Wh, "
        f"{spent['carbon_g']:.2f} g CO2e (Green Algorithms estimate from the CPU time)"
    )
    if spent["codecarbon_kwh"] is not None:
        line += f"; CodeCarbon measured {spent['codecarbon_kwh'] * 1000:.2f} Wh (whole machine)"
    return line


def _duration(seconds: float) -> str:
    """``"1h02m"``, ``"3m05s"`` or ``"42s"``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _jobs(songs: Sequence[Song], names: Sequence[str], output_root: Path) -> list[_Job]:
    from stemkit import outputs
    from stemkit.errors import StemkitError

    jobs = [
        _Job(song.path, outputs.destination(output_root / song.subfolder, name))
        for song, name in zip(songs, names, strict=True)
    ]
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.destination in seen:
            raise StemkitError(
                f"{seen[job.destination]} and {job.song} would both be written to "
                f"{job.destination}; rename one of them or separate them in two runs with "
                "different --output"
            )
        seen[job.destination] = job.song
    return jobs


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
