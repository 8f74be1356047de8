"""The error types stemkit raises on bad input.

Every error names what was wrong and what to do about it; the command line prints the message and
exits with a non-zero status instead of a traceback.
"""

from __future__ import annotations

from os import PathLike


class StemkitError(Exception):
    """Base class of the errors a user can fix by changing their input or command."""


class AudioError(StemkitError):
    """An audio file cannot be read or written, or its content is unusable.

    Args:
        path: the file concerned.
        reason: what is wrong, and where possible what to do about it.
    """

    def __init__(self, path: str | PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DatasetError(StemkitError):
    """A dataset folder is missing, empty or laid out differently from what the loader expects."""


class CheckpointError(StemkitError):
    """A checkpoint file is missing, corrupt, or does not describe a model stemkit can build."""


class DownloadError(StemkitError):
    """Published weights cannot be fetched, or what arrived is not what was published."""
