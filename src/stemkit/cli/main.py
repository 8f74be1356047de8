"""``stemkit`` command line: parses, finds files, names outputs, and calls the API.

Each subcommand lives in its own module of this package with two functions:
``add_parser(subparsers)`` declares its arguments (cheap, no heavy imports) and sets
``func`` to a ``run(args) -> int`` that does the work.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from stemkit import __version__
from stemkit.errors import StemkitError

#: Subcommand modules, in the order ``stemkit --help`` lists them.
COMMANDS: tuple[str, ...] = (
    "separate",
    "train",
    "evaluate",
    "experiments",
    "data",
    "models",
    "export",
    "demo",
    "serve",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand attached."""
    parser = argparse.ArgumentParser(
        prog="stemkit", description="Music source separation: separate, train, evaluate."
    )
    parser.add_argument("--version", action="version", version=f"stemkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"stemkit.cli.{name}")
        module.add_parser(subparsers)
    for command in subparsers.choices.values():
        command.add_argument(
            "--threads",
            type=int,
            default=None,
            metavar="N",
            help="CPU threads for torch (default: OMP_NUM_THREADS if set, else the cores not "
            "busy with other processes)",
        )
        command.add_argument(
            "-v", "--verbose", action="store_true", help="also show debug lines on stderr"
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 1 failure, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.threads is not None and args.threads < 1:
            raise StemkitError(f"--threads must be a positive integer, got {args.threads}")
        from stemkit.cli import logs
        from stemkit.runtime import set_threads

        set_threads(args.threads)
        at = logs.level(verbose=args.verbose, quiet=bool(getattr(args, "quiet", False)))
        with logs.to_stderr(at):
            status = args.func(args)
    except StemkitError as error:
        print(f"stemkit: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stemkit: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
