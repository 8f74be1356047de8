"""stemkit: music source separation, from training to evaluation, in one codebase.

The small public API lives here; everything else is reached through its subpackage.
:class:`Separator` (:mod:`stemkit.api`) is imported on first use, so that ``import stemkit``
and the command line's start stay light (no torch until a model is needed).
"""

import logging
from typing import TYPE_CHECKING, Any

from stemkit.errors import AudioError, CheckpointError, DatasetError, StemkitError

if TYPE_CHECKING:
    from stemkit.api import Separator

__version__ = "0.1.0"

#: The four MUSDB18 targets in the order the ``musdb`` package lists them.
MUSDB_SOURCES: tuple[str, ...] = ("vocals", "drums", "bass", "other")

# A library logs, the application shows: without a handler of its own, stemkit stays silent.
logging.getLogger("stemkit").addHandler(logging.NullHandler())

__all__ = [
    "MUSDB_SOURCES",
    "AudioError",
    "CheckpointError",
    "DatasetError",
    "Separator",
    "StemkitError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "Separator":
        from stemkit.api import Separator

        return Separator
    raise AttributeError(f"module 'stemkit' has no attribute {name!r}")
