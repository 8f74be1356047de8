"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from weights_server import WeightsServer, serve


@pytest.fixture
def server() -> Iterator[WeightsServer]:
    """A local server on 127.0.0.1 for fixture weights files (see :func:`weights_server.serve`)."""
    with serve() as state:
        yield state
