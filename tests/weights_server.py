"""A local HTTP server for fixture weights files (127.0.0.1 only), shared by the fetch tests.

The ``server`` fixture in this folder's ``conftest.py`` starts one per test; this module holds
the server itself so that test modules can name its type.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class WeightsServer:
    """A local HTTP server for fixture files, with a behaviour per path."""

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


MAX_REQUESTS = 40


@contextmanager
def serve() -> Iterator[WeightsServer]:
    """Serves ``files`` on 127.0.0.1; ``modes[path]`` makes a path misbehave:

    ``missing`` (404), ``truncated`` (Content-Length larger than the body, then the connection
    closes), ``slow-drop`` (half the body, a pause longer than the client's timeout, then the
    connection closes). At most :data:`MAX_REQUESTS` requests are answered; the server stops at
    teardown, or by itself after two minutes.
    """
    state = WeightsServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            body = state.files.get(self.path)
            mode = state.modes.get(self.path, "ok")
            if len(state.requests) > MAX_REQUESTS or body is None or mode == "missing":
                self.send_error(404, "File not found")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            extra = 1000 if mode == "truncated" else 0
            self.send_header("Content-Length", str(len(body) + extra))
            self.end_headers()
            if mode == "slow-drop":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                time.sleep(1.5)
            else:
                self.wfile.write(body)
            self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    stopper = threading.Timer(120, httpd.shutdown)
    stopper.daemon = True
    stopper.start()
    try:
        yield state
    finally:
        stopper.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
