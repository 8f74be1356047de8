"""The command line's view of stemkit's log: one ``stemkit: …`` line per record on stderr.

Library code logs to ``logging.getLogger("stemkit")``; a command shows those records as
``stemkit: <message>``, ``stemkit: warning: <message>`` or ``stemkit: error: <message>``, at the
level ``-v/--verbose`` (debug) and ``-q/--quiet`` (warnings and errors only) choose.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Final

#: ``extra=`` for a record shown as ``stemkit: <message>`` whatever its level.
PLAIN: Final = {"label": ""}
#: ``extra=`` for a record shown as its message alone (the song counter).
BARE: Final = {"bare": True}

_LABELS: Final = {
    logging.DEBUG: "debug: ",
    logging.WARNING: "warning: ",
    logging.ERROR: "error: ",
    logging.CRITICAL: "error: ",
}


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if getattr(record, "bare", False):
            return message
        label = getattr(record, "label", _LABELS.get(record.levelno, ""))
        return f"stemkit: {label}{message}"


class _StderrHandler(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (which a test may have replaced)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def level(*, verbose: bool = False, quiet: bool = False) -> int:
    """The level ``-v`` / ``-q`` ask for: DEBUG, WARNING, else INFO (``-v`` wins)."""
    if verbose:
        return logging.DEBUG
    return logging.WARNING if quiet else logging.INFO


@contextlib.contextmanager
def to_stderr(at: int = logging.INFO) -> Iterator[None]:
    """Show stemkit's records of level ``at`` and above on stderr while the block runs.

    The ``stemkit`` logger stops propagating to the root meanwhile, so that an application's
    own logging setup does not print each line twice; all is restored after.
    """
    root = logging.getLogger("stemkit")
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    saved = root.level, root.propagate
    root.addHandler(handler)
    root.setLevel(at)
    root.propagate = False
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        root.propagate = saved[1]
