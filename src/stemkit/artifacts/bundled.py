"""The weights shipped inside stemkit, each beside its model card (``weights/<file>.md``)."""

from __future__ import annotations

from pathlib import Path

from stemkit.errors import StemkitError

#: Folder holding the bundled weights, their ``.sha256`` files and their model cards.
BUNDLED_DIR = Path(__file__).resolve().parent / "weights"

#: Name of the model ``stemkit separate`` uses when none is given.
DEFAULT_MODEL = "default"

#: Bundled model name → checkpoint file in :data:`BUNDLED_DIR`.
BUNDLED: dict[str, str] = {"default": "umx-synthmix-small.pt"}


def bundled_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of the bundled checkpoint called ``name``.

    Raises:
        StemkitError: no bundled model has that name.
    """
    if name not in BUNDLED:
        raise StemkitError(f"no bundled model {name!r}; bundled: {', '.join(sorted(BUNDLED))}")
    return BUNDLED_DIR / BUNDLED[name]
