"""``stemkit models``: list the registered systems and the bundled weights."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Declare ``stemkit models``."""
    parser = subparsers.add_parser("models", help="list registered models and bundled weights")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the registry and the bundled checkpoints with their sources."""
    from stemkit import models
    from stemkit.pretrained import _BUNDLED, bundled_path

    print("registered models:")
    for name in models.available():
        print(f"  {name}")
    print("bundled weights:")
    for name in sorted(_BUNDLED):
        path = bundled_path(name)
        state = "present" if path.is_file() else "missing"
        print(f"  {name}: {path.name} ({state})")
    return 0
