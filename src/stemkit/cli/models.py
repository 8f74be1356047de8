"""``stemkit models``: the model catalogue and the registry; fetch or import published weights.

Verbs:

* ``stemkit models [list]``: the catalogue (name, system, stems, rate, parameters, training
  data, published score, and whether the weights are bundled, cached, fetchable or not
  fetchable), then the registered architectures;
* ``stemkit models info NAME``: one catalogue entry in full (scores per stem, files, hashes);
* ``stemkit models fetch NAME...``: download, verify, convert and cache published weights now
  (``stemkit separate --model NAME`` does it on first use);
* ``stemkit models import-openunmix PATH... -o OUT.pt``: official Open-Unmix per-target files
  (either layout) into one stemkit checkpoint that ``stemkit separate --model OUT.pt`` uses;
* ``stemkit models import-demucs-v1 PATH -o OUT.pt``: a Demucs v1 release file (``demucs.th``,
  ``tasnet.th``, ...), read without running anything from the pickle;
* ``stemkit models import-xumx PATH -o OUT.pt``: asteroid's X-UMX ``.pth``;
* ``stemkit models import-obsrnn PATH... -o OUT.pt``: the BSRNN replication's Lightning
  checkpoints (one per target, or its SIMO ``separator.ckpt``), read without running anything
  from the pickle.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Declare ``stemkit models`` and its verbs."""
    parser = subparsers.add_parser(
        "models",
        help="list the model catalogue and registered models; fetch or import weights",
        description="List the model catalogue and the registered models (default), show one "
        "entry, fetch published weights into the cache, or import Open-Unmix files.",
    )
    verbs = parser.add_subparsers(dest="models_verb", metavar="VERB")
    verbs.add_parser("list", help="list the catalogue and the registered models (default)")
    info = verbs.add_parser("info", help="show one catalogue entry in full")
    info.add_argument("name", metavar="NAME", help="a catalogue name (see `stemkit models`)")
    fetch = verbs.add_parser(
        "fetch",
        help="download, verify, convert and cache published weights",
        description="Download the published weights of catalogue models, check their SHA-256, "
        "convert them into stemkit checkpoints and keep those in the cache ($STEMKIT_CACHE, "
        "else $XDG_CACHE_HOME/stemkit, else ~/.cache/stemkit). Afterwards `stemkit separate "
        "--model NAME` needs no network.",
    )
    fetch.add_argument("names", nargs="+", metavar="NAME", help="fetchable catalogue names")
    fetch.add_argument("--force", action="store_true", help="fetch again even when cached")
    fetch.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds without data before a download is given up "
        "($STEMKIT_DOWNLOAD_TIMEOUT, else 30)",
    )
    imp = verbs.add_parser(
        "import-openunmix",
        help="convert official Open-Unmix .pth files into a stemkit checkpoint",
        description="Convert official Open-Unmix per-target weights (vocals.pth, drums.pth, ...; "
        "the 2019 v1.0.0 layout or the current one) into one stemkit checkpoint. Sizes are read "
        "from the tensors; separator.json / <target>.json beside the files are used when present.",
    )
    imp.add_argument("paths", nargs="+", metavar="PATH", help="one .pth file per target")
    imp.add_argument("-o", "--output", required=True, metavar="OUT.pt", help="checkpoint to write")
    imp.add_argument(
        "--targets",
        nargs="+",
        default=None,
        metavar="NAME",
        help="stem names, one per PATH (default: from the file names, hash suffix dropped)",
    )
    imp.add_argument(
        "--niter",
        type=int,
        default=1,
        metavar="N",
        help="Wiener EM iterations at separation time (1, as upstream; 0 for streaming)",
    )
    imp.add_argument("--softmask", action="store_true", help="ratio-mask initial estimates")
    imp.add_argument(
        "--residual", action="store_true", help="add a 'residual' stem: mixture minus targets"
    )
    imp.add_argument(
        "--wiener-win-len",
        type=int,
        default=300,
        metavar="FRAMES",
        help="frames per Wiener block; 0 filters whole songs at once (300)",
    )
    imp.add_argument(
        "--sample-rate",
        type=int,
        default=None,
        metavar="HZ",
        help="override the rate (default: from the files, else 44100)",
    )
    imp.add_argument(
        "--n-hop",
        type=int,
        default=None,
        metavar="N",
        help="override the hop size (default: from separator.json, else n_fft / 4)",
    )
    imp.add_argument("--force", action="store_true", help="replace OUT.pt if it exists")

    v1 = verbs.add_parser(
        "import-demucs-v1",
        help="convert a Demucs v1 release file (demucs.th, tasnet.th, ...) into a checkpoint",
        description="Convert a file of the Demucs v1 release (demucs.th, demucs_extra.th, "
        "tasnet.th, tasnet_extra.th: pickled whole models) into a stemkit checkpoint. The pickle "
        "is read with an unpickler that accepts only tensors, plain containers and module "
        "classes, as inert records: nothing from the file is run, and demucs is not needed.",
    )
    v1.add_argument("path", metavar="PATH", help="the release's .th file")
    v1.add_argument("-o", "--output", required=True, metavar="OUT.pt", help="checkpoint to write")
    v1.add_argument(
        "--sources",
        nargs="+",
        default=None,
        metavar="NAME",
        help="stem names in the file's order (default for four: drums bass other vocals)",
    )
    v1.add_argument("--force", action="store_true", help="replace OUT.pt if it exists")

    xumx = verbs.add_parser(
        "import-xumx",
        help="convert asteroid's X-UMX .pth into a stemkit checkpoint",
        description="Convert asteroid's X-UMX weights (the recipe's model.serialize() file, "
        "e.g. pretrained_xumx.pth: state_dict and model_args) into a stemkit xumx checkpoint. "
        "Read with an unpickler that accepts only tensors and plain containers.",
    )
    xumx.add_argument("path", metavar="PATH", help="asteroid's .pth file")
    xumx.add_argument("-o", "--output", required=True, metavar="OUT.pt", help="checkpoint to write")
    xumx.add_argument(
        "--niter",
        type=int,
        default=1,
        metavar="N",
        help="Wiener EM iterations at separation time (1, as the recipe; 0 for streaming)",
    )
    xumx.add_argument("--force", action="store_true", help="replace OUT.pt if it exists")

    obsrnn = verbs.add_parser(
        "import-obsrnn",
        help="convert the BSRNN replication's .ckpt files into one stemkit checkpoint",
        description="Convert the band-split RNN replication's Lightning checkpoints (github "
        "magronp/bsrnn: vocals.ckpt, bass.ckpt, ... one per target, or the SIMO separator.ckpt) "
        "into one stemkit bsrnn checkpoint; the stems come out in the order of the files. Read "
        "with an unpickler that accepts only tensors, plain containers and the OmegaConf and "
        "Lightning classes as inert records: nothing from the files is run.",
    )
    obsrnn.add_argument("paths", nargs="+", metavar="PATH", help="the replication's .ckpt files")
    obsrnn.add_argument(
        "-o", "--output", required=True, metavar="OUT.pt", help="checkpoint to write"
    )
    obsrnn.add_argument("--force", action="store_true", help="replace OUT.pt if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch on the verb; no verb lists."""
    verb = getattr(args, "models_verb", None)
    if verb == "import-openunmix":
        return run_import(args)
    if verb in ("import-demucs-v1", "import-xumx", "import-obsrnn"):
        return run_import_whole(args)
    if verb == "fetch":
        return run_fetch(args)
    if verb == "info":
        return run_info(args)
    return run_list(args)


def _parameters(count: int | None) -> str:
    return "not recorded" if count is None else f"{count / 1e6:.1f} M"


def _rate(hertz: int) -> str:
    return f"{hertz / 1000:g} kHz"


def run_list(args: argparse.Namespace) -> int:
    """Print the catalogue as a table, then the registered architectures."""
    from stemkit import models
    from stemkit.artifacts import CATALOGUE
    from stemkit.artifacts.catalogue import CSDR, USDR
    from stemkit.artifacts.fetch import cache_dir, status_of

    header = ("name", "system", "stems", "rate", "parameters", "trained on", "score", "status")
    rows = [
        (
            entry.name,
            entry.system,
            " ".join(entry.stems),
            _rate(entry.sample_rate),
            _parameters(entry.parameters),
            entry.trained_on,
            entry.score.short() if entry.score else "not recorded",
            status_of(entry),
        )
        for entry in CATALOGUE.values()
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print("model catalogue (`stemkit models info NAME` for details):")
    for row in [header, *rows]:
        print(
            "  "
            + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    print(
        f"  score: the published average over the stems, in dB; {CSDR.replace(' (', ': ', 1)[:-1]}"
        f"; {USDR.replace(' (', ': ', 1)[:-1]}"
    )
    print(
        "  status: bundled (inside stemkit), cached (fetched, no network needed), fetchable "
        "(downloaded, verified and converted on first use, or by `stemkit models fetch NAME`), "
        "not fetchable (`stemkit models info NAME` says why)"
    )
    print(f"  cache: {cache_dir() / 'models'}")
    print("registered models: architectures built by name, random weights unless trained")
    for name in models.available():
        print(f"  {name}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print one catalogue entry in full."""
    from stemkit.artifacts import get_entry
    from stemkit.artifacts.catalogue import Fetchable, NotFetchable
    from stemkit.artifacts.fetch import cached_path, status_of

    entry = get_entry(args.name)
    kwargs = ", ".join(f"{key}={value!r}" for key, value in entry.kwargs.items())
    lines = [
        f"{entry.name}: {entry.title}",
        f"  system: {entry.system}({kwargs})",
        f"  stems: {', '.join(entry.stems)} at {entry.sample_rate} Hz",
        f"  parameters: {'not recorded' if entry.parameters is None else f'{entry.parameters:,}'}",
        f"  trained on: {entry.trained_on}",
    ]
    if entry.licence:
        lines.append(f"  weights licence: {entry.licence}")
    if entry.score is None:
        lines.append("  published score: not recorded")
    else:
        score = entry.score
        stems = ", ".join(f"{stem} {value:.2f}" for stem, value in score.per_stem)
        lines += [
            f"  published score: {score.metric} on {score.test_set}, in dB: {stems}; "
            f"average {score.mean:.2f}",
            f"  score source: {score.reference}",
        ]
    lines.append(f"  status: {status_of(entry)}")
    if isinstance(entry.weights, Fetchable):
        lines.append(f"  hash: {entry.weights.hash_note}")
        for file in entry.weights.files:
            lines.append(f"  file: {file.url} ({file.expected()})")
        lines.append(f"  cache: {cached_path(entry)}")
        lines.append(f"  by hand: {entry.import_command()}")
    elif isinstance(entry.weights, NotFetchable):
        lines.append(f"  published: {entry.weights.published}")
        lines.append(f"  not fetchable: {entry.weights.reason}")
        if entry.weights.by_hand:
            lines.append(f"  by hand: {entry.weights.by_hand}")
    if entry.note:
        lines.append(f"  note: {entry.note}")
    print("\n".join(lines))
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    """Fetch every named model into the cache; print each checkpoint's path."""
    from stemkit.artifacts import get_entry
    from stemkit.artifacts.fetch import fetch
    from stemkit.errors import StemkitError

    if args.timeout is not None and not args.timeout > 0:
        raise StemkitError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    entries = [get_entry(name) for name in args.names]
    for entry in entries:
        path = fetch(
            entry,
            force=args.force,
            timeout=args.timeout,
            log=lambda line: print(f"stemkit: {line}", file=sys.stderr),
        )
        print(path)
    return 0


def _check_output(args: argparse.Namespace) -> Path:
    from stemkit.errors import StemkitError

    out = Path(args.output)
    if out.exists() and not args.force:
        raise StemkitError(f"{out} already exists; pass --force to replace it")
    if out.is_dir():
        raise StemkitError(f"{out} is a folder; give a file name such as {out / 'model.pt'}")
    return out


def run_import_whole(args: argparse.Namespace) -> int:
    """``import-demucs-v1`` / ``import-xumx`` / ``import-obsrnn``: convert the file(s) into
    ``args.output``."""
    from stemkit.artifacts.checkpoint import load_checkpoint
    from stemkit.errors import StemkitError

    out = _check_output(args)
    if args.models_verb == "import-demucs-v1":
        from stemkit.artifacts.demucs_v1 import import_demucs_v1

        path = import_demucs_v1(args.path, out, sources=args.sources)
    elif args.models_verb == "import-obsrnn":
        from stemkit.artifacts.obsrnn import import_obsrnn

        path = import_obsrnn(args.paths, out)
    else:
        from stemkit.artifacts.asteroid import import_xumx

        if args.niter < 0:
            raise StemkitError(f"--niter must be 0 or more, got {args.niter}")
        path = import_xumx(args.path, out, niter=args.niter)
    payload = load_checkpoint(path)
    settings = ", ".join(
        f"{key} {value}" for key, value in payload["model_kwargs"].items() if key != "sources"
    )
    print(
        f"imported {payload['model_name']} ({', '.join(payload['sources'])}): {settings}",
        file=sys.stderr,
    )
    print(path)
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Convert ``args.paths`` into the checkpoint ``args.output`` and describe it."""
    from stemkit.artifacts.checkpoint import load_checkpoint
    from stemkit.artifacts.openunmix import import_openunmix
    from stemkit.errors import StemkitError

    out = _check_output(args)
    if args.niter < 0:
        raise StemkitError(f"--niter must be 0 or more, got {args.niter}")
    for option, value in (("--sample-rate", args.sample_rate), ("--n-hop", args.n_hop)):
        if value is not None and value <= 0:
            raise StemkitError(f"{option} must be positive, got {value}")
    path = import_openunmix(
        args.paths,
        out,
        targets=args.targets,
        niter=args.niter,
        softmask=args.softmask,
        residual=args.residual,
        wiener_win_len=args.wiener_win_len or None,
        sample_rate=args.sample_rate,
        n_hop=args.n_hop,
    )
    payload = load_checkpoint(path)
    kwargs = payload["model_kwargs"]
    record = payload["provenance"]["openunmix_import"]
    layouts = sorted({entry["layout"] for entry in record["files"]})
    print(
        f"imported {', '.join(payload['sources'])} ({'/'.join(layouts)} layout): hidden "
        f"{kwargs['hidden_size']}, {kwargs['audio_channels']} channel(s), {kwargs['sample_rate']} "
        f"Hz, n_fft {kwargs['n_fft']}, hop {kwargs['n_hop']}, niter {kwargs['niter']}",
        file=sys.stderr,
    )
    for assumption in record["assumed"]:
        print(
            f"stemkit: warning: the files do not record it; assumed {assumption} (override with "
            f"--{assumption.split('=')[0].replace('_', '-')})",
            file=sys.stderr,
        )
    print(path)
    return 0
