"""``stemkit models``: list the registered systems and bundled weights; import foreign weights.

Verbs:

* ``stemkit models [list]``: the registry and the bundled checkpoints;
* ``stemkit models import-openunmix PATH... -o OUT.pt``: official Open-Unmix per-target files
  (either layout) into one stemkit checkpoint that ``stemkit separate --model OUT.pt`` uses.
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
        help="list registered models and bundled weights; import Open-Unmix weights",
        description="List registered models and bundled weights (default), or import weights.",
    )
    verbs = parser.add_subparsers(dest="models_verb", metavar="VERB")
    verbs.add_parser("list", help="list registered models and bundled weights (default)")
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch on the verb; no verb lists."""
    if getattr(args, "models_verb", None) == "import-openunmix":
        return run_import(args)
    return run_list(args)


def run_list(args: argparse.Namespace) -> int:
    """Print the registry and the bundled checkpoints with their sources."""
    from stemkit import models
    from stemkit.artifacts import BUNDLED, bundled_path

    print("registered models:")
    for name in models.available():
        print(f"  {name}")
    print("bundled weights:")
    for name in sorted(BUNDLED):
        path = bundled_path(name)
        state = "present" if path.is_file() else "missing"
        print(f"  {name}: {path.name} ({state})")
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Convert ``args.paths`` into the checkpoint ``args.output`` and describe it."""
    from stemkit.artifacts.checkpoint import load_checkpoint
    from stemkit.artifacts.openunmix import import_openunmix
    from stemkit.errors import StemkitError

    out = Path(args.output)
    if out.exists() and not args.force:
        raise StemkitError(f"{out} already exists; pass --force to replace it")
    if out.is_dir():
        raise StemkitError(f"{out} is a folder; give a file name such as {out / 'umx.pt'}")
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
