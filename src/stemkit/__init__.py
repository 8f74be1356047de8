"""stemkit: music source separation, from training to evaluation, in one codebase.

The small public API lives here; everything else is reached through its subpackage.
"""

from stemkit.errors import AudioError, CheckpointError, DatasetError, StemkitError

__version__ = "0.1.0"

#: The four MUSDB18 targets in the order the ``musdb`` package lists them.
MUSDB_SOURCES: tuple[str, ...] = ("vocals", "drums", "bass", "other")

__all__ = [
    "MUSDB_SOURCES",
    "AudioError",
    "CheckpointError",
    "DatasetError",
    "StemkitError",
    "__version__",
]
