"""``stemkit serve``: the local web app and REST API (:mod:`stemkit.web`).

It listens on 127.0.0.1 by default, where only this machine can reach it. Any other address
needs a token: ``--token`` or one generated and printed with the address to open; every request
must then carry it. The data folder keeps the songs, the stems and the job database, so jobs
survive a restart (a job cut off by a killed server is run again, or failed after two tries).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import secrets
from pathlib import Path
from typing import Any

from stemkit.errors import StemkitError

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    """Declare ``stemkit serve``."""
    parser = subparsers.add_parser(
        "serve",
        help="run the web app and REST API (drop a song, listen to the stems)",
        description="Run the local web app and REST API; open the printed address.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (127.0.0.1: this machine only; any other needs a token)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port (8000)")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("stemkit-web"),
        metavar="DIR",
        help="data folder: songs, stems and the job database (./stemkit-web)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="require this token on every request (default: none on loopback, a generated "
        "one on any other address)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="songs separated at once (1)"
    )
    parser.add_argument(
        "--max-upload-mb", type=float, default=200.0, metavar="MB", help="upload limit (200)"
    )
    parser.add_argument(
        "--device", default="cpu", help="where models run: auto, cpu, cuda, cuda:N or mps (cpu)"
    )
    parser.set_defaults(func=run)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    try:
        import uvicorn

        from stemkit.web import WebConfig, create_app
    except ImportError as error:
        raise StemkitError(
            f"the web app needs the web extra ({error.name} is missing): pip install 'stemkit[web]'"
        ) from None
    from stemkit.runtime import resolve_device

    if args.workers < 1:
        raise StemkitError(f"--workers must be at least 1, got {args.workers}")
    if args.max_upload_mb <= 0:
        raise StemkitError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    if not 0 < args.port < 65536:
        raise StemkitError(f"--port must be from 1 to 65535, got {args.port}")
    resolve_device(args.device)  # an unknown device fails now, not in the first job
    token = args.token
    if token is not None and len(token) < 8:
        raise StemkitError("--token must have at least 8 characters")
    loopback = is_loopback(args.host)
    if token is None and not loopback:
        token = secrets.token_urlsafe(18)
    config = WebConfig(
        data=args.data,
        token=token,
        workers=args.workers,
        max_upload_mb=args.max_upload_mb,
        device=args.device,
        check_host=token is None,
    )
    app = create_app(config)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    address = f"http://{shown}:{args.port}/" + (f"?token={token}" if token else "")
    print(f"stemkit: serving {args.data} on {address}", flush=True)
    if token is not None and args.token is None:
        print(f"stemkit: token (send it with every request): {token}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
