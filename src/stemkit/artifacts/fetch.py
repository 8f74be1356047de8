"""Fetching a catalogue model's published weights once, and using the cached copy after that.

:func:`fetch` downloads every file of a :class:`~stemkit.artifacts.catalogue.Fetchable` entry
into a private folder inside the cache, checks each file's SHA-256 against the published one
(all 64 digits, or the published prefix), converts the set into one stemkit checkpoint and
only then moves that checkpoint into place. Whatever goes wrong on the way (HTTP error, refused
connection, timeout, dropped connection, short body, wrong hash, files that do not convert)
raises :class:`~stemkit.errors.DownloadError` and leaves nothing in the cache (a fetch killed
outright may leave its hidden ``.fetch-*`` folder; a later fetch removes it once it is a day
old, so as not to take one from a fetch still running elsewhere). A checkpoint in
the cache was verified when it was written and carries its own checksum, so
:func:`load_catalogue_model` uses it without touching the network.

Environment:

``STEMKIT_CACHE``            the cache folder; else ``$XDG_CACHE_HOME/stemkit``; else
                             ``~/.cache/stemkit``. Checkpoints live in its ``models/``.
``STEMKIT_WEIGHTS_MIRROR``   a base URL (``http://127.0.0.1:8000``) replacing the scheme and
                             host of every published URL; the path is kept. For mirrors and
                             tests.
``STEMKIT_DOWNLOAD_TIMEOUT`` seconds without data before a download is given up (30).
``STEMKIT_OFFLINE``          when set (not ``0``), never download: a model not in the cache
                             is an error.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from stemkit.artifacts.catalogue import CatalogueEntry, Fetchable, WeightFile, get_entry
from stemkit.artifacts.checkpoint import load_checkpoint, model_from_checkpoint
from stemkit.errors import CheckpointError, DownloadError, StemkitError
from stemkit.models.base import SeparationModel

__all__ = [
    "DEFAULT_TIMEOUT",
    "cache_dir",
    "cached_path",
    "download",
    "fetch",
    "is_cached",
    "load_catalogue_model",
    "mirrored",
]

#: Seconds without data before a download is given up, unless ``STEMKIT_DOWNLOAD_TIMEOUT``
#: says otherwise.
DEFAULT_TIMEOUT = 30.0
_BLOCK = 1 << 20


def cache_dir() -> Path:
    """The cache folder: ``$STEMKIT_CACHE``, ``$XDG_CACHE_HOME/stemkit`` or ``~/.cache/stemkit``."""
    if os.environ.get("STEMKIT_CACHE"):
        return Path(os.environ["STEMKIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "stemkit"


def cached_path(entry: CatalogueEntry) -> Path:
    """Where the converted checkpoint of ``entry`` lives in the cache.

    The name carries the fingerprint of the entry's files and options, so a changed entry
    never reuses a checkpoint converted from other files.
    """
    if not isinstance(entry.weights, Fetchable):
        raise StemkitError(f"{entry.name} is {entry.status}; it has no cached checkpoint")
    return cache_dir() / "models" / f"{entry.name}-{entry.weights.fingerprint()}.pt"


def is_cached(entry: CatalogueEntry) -> bool:
    """Whether ``entry``'s checkpoint is in the cache (not re-verified here)."""
    return isinstance(entry.weights, Fetchable) and cached_path(entry).is_file()


def mirrored(url: str) -> str:
    """``url`` with its scheme and host replaced by ``$STEMKIT_WEIGHTS_MIRROR``, if set."""
    mirror = os.environ.get("STEMKIT_WEIGHTS_MIRROR", "").rstrip("/")
    if not mirror:
        return url
    parts = urlsplit(url)
    return mirror + parts.path + (f"?{parts.query}" if parts.query else "")


def _timeout() -> float:
    value = os.environ.get("STEMKIT_DOWNLOAD_TIMEOUT")
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise StemkitError(f"STEMKIT_DOWNLOAD_TIMEOUT must be a positive number, got {value!r}")
    return seconds


def _offline() -> bool:
    return os.environ.get("STEMKIT_OFFLINE", "") not in ("", "0")


def download(
    file: WeightFile,
    directory: Path,
    *,
    timeout: float | None = None,
    progress: bool | None = None,
) -> Path:
    """Download ``file`` into ``directory`` and check its hash.

    Args:
        file: the published file.
        directory: where to write it (a private temporary folder: on failure the partial file
            is removed, but the caller owns the folder).
        timeout: seconds without data before giving up; default ``$STEMKIT_DOWNLOAD_TIMEOUT``
            or :data:`DEFAULT_TIMEOUT`.
        progress: a progress bar on stderr; ``None`` shows it when stderr is a terminal.

    Returns:
        The downloaded file, whose SHA-256 matches the published one.

    Raises:
        DownloadError: why in a few words (``raise ... from`` keeps the original error).
    """
    from tqdm import tqdm

    from stemkit import __version__

    seconds = _timeout() if timeout is None else timeout
    url = mirrored(file.url)
    target = directory / file.filename
    digest = hashlib.sha256()
    received = 0
    request = urllib.request.Request(url, headers={"User-Agent": f"stemkit/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=seconds) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with (
                open(target, "wb") as out,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=file.filename,
                    file=sys.stderr,
                    disable=None if progress is None else not progress,
                    leave=False,
                ) as bar,
            ):
                while block := response.read(_BLOCK):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
            if total is not None and received != total:
                raise _Failure(f"the connection closed after {received} of {total} bytes")
    except urllib.error.HTTPError as error:
        error.close()
        raise _failed(file, url, f"HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, TimeoutError):
            reason = f"no answer within {seconds:g} s"
        raise _failed(file, url, str(reason)) from error
    except TimeoutError as error:
        raise _failed(file, url, f"no data for {seconds:g} s after {received} bytes") from error
    except http.client.IncompleteRead as error:
        detail = f"the connection closed after {received + len(error.partial)} bytes"
        raise _failed(file, url, detail) from error
    except (OSError, http.client.HTTPException, _Failure) as error:
        detail = str(error) or type(error).__name__
        raise _failed(file, url, detail) from error
    actual = digest.hexdigest()
    if not file.matches(actual):
        raise _failed(file, url, f"its SHA-256 is {actual}, not the published one")
    return target


class _Failure(Exception):
    """A download that ended without an error from the library but is still incomplete."""


def _failed(file: WeightFile, url: str, reason: str) -> DownloadError:
    """The one-line error: URL, reason, expected hash and what to do by hand."""
    where = url if url == file.url else f"{url} (mirror of {file.url})"
    return DownloadError(f"cannot fetch {where}: {reason}; expected {file.expected()}")


def fetch(
    name_or_entry: str | CatalogueEntry,
    *,
    force: bool = False,
    timeout: float | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Make sure the converted checkpoint of a fetchable catalogue model is in the cache.

    Args:
        name_or_entry: a catalogue name or entry.
        force: fetch and convert again even when the checkpoint is cached.
        timeout: seconds without data before a download is given up.
        progress: progress bars on stderr (``None``: when stderr is a terminal).
        log: called with one line per step (e.g. ``print`` to stderr); silent by default.

    Returns:
        The cached checkpoint.

    Raises:
        DownloadError: a download failed or a file does not match its published hash, or the
            files do not convert; nothing was left in the cache. The message names the URL, the
            expected hash and the command that imports files fetched by hand.
        StemkitError: the entry is bundled or not fetchable.
    """
    entry = name_or_entry if isinstance(name_or_entry, CatalogueEntry) else get_entry(name_or_entry)
    weights = entry.weights
    if not isinstance(weights, Fetchable):
        raise StemkitError(_not_fetchable(entry))
    final = cached_path(entry)
    if final.is_file() and not force:
        return final
    say = log or (lambda line: None)
    hint = (
        f"; nothing was cached. Fetch the files by hand and use `{entry.import_command()}`, "
        f"then --model {entry.name}.pt"
    )
    if _offline():
        first = weights.files[0]
        raise DownloadError(
            f"{entry.name} is not in the cache ({final.parent}) and STEMKIT_OFFLINE is set; "
            f"its weights are at {first.url}, expected {first.expected()}{hint}"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(final.parent)
    work = Path(tempfile.mkdtemp(prefix=f".fetch-{entry.name}-", dir=final.parent))
    try:
        paths = []
        for number, file in enumerate(weights.files, 1):
            say(f"fetching {entry.name} [{number}/{len(weights.files)}] {mirrored(file.url)}")
            try:
                paths.append(download(file, work, timeout=timeout, progress=progress))
            except DownloadError as error:
                raise DownloadError(f"{error}{hint}") from error.__cause__
        say(f"converting {entry.name} into a stemkit checkpoint")
        converted = work / final.name
        try:
            _convert(entry, weights, paths, converted)
            model_from_checkpoint(load_checkpoint(converted), converted)
        except StemkitError as error:
            raise DownloadError(
                f"{entry.name}: the files match their published hashes but do not convert "
                f"({error}){hint}"
            ) from error
        sidecar = converted.with_name(converted.name + ".sha256")
        os.replace(converted, final)
        os.replace(sidecar, final.with_name(final.name + ".sha256"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"cached {entry.name} as {final}")
    return final


#: A private download folder older than this was left by a process killed mid-fetch.
STALE_AFTER_S = 24 * 3600.0


def _remove_stale(folder: Path) -> None:
    """Remove download folders left by fetches killed outright (SIGKILL, power loss); a day
    old, so that a fetch still running in another process keeps its own."""
    now = time.time()
    for leftover in folder.glob(".fetch-*"):
        try:
            if now - leftover.stat().st_mtime > STALE_AFTER_S:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:  # gone meanwhile
            pass


def _convert(entry: CatalogueEntry, weights: Fetchable, paths: list[Path], out: Path) -> None:
    origin = {
        "catalogue": entry.name,
        "files": [{"url": f.url, "published_sha256": f.sha256} for f in weights.files],
    }
    if weights.converter == "openunmix":
        from stemkit.artifacts.openunmix import import_openunmix

        options = dict(weights.options)
        import_openunmix(
            paths,
            out,
            targets=[f.target for f in weights.files],
            origin=origin,
            **options,
        )
    elif weights.converter == "demucs-v1":
        from stemkit.artifacts.demucs_v1 import import_demucs_v1

        (path,) = paths
        import_demucs_v1(path, out, sources=entry.stems, origin=origin)
    else:  # pragma: no cover - the catalogue names only known converters
        raise StemkitError(f"{entry.name}: no converter {weights.converter!r}")


def _not_fetchable(entry: CatalogueEntry) -> str:
    from stemkit.artifacts.catalogue import NotFetchable

    if isinstance(entry.weights, NotFetchable):
        return (
            f"{entry.name} is not fetchable: {entry.weights.reason} (published: "
            f"{entry.weights.published})"
        )
    return f"{entry.name} is bundled with stemkit; nothing to fetch"


def load_catalogue_model(
    name: str, *, progress: bool | None = None, log: Callable[[str], None] | None = None
) -> SeparationModel:
    """The model of catalogue entry ``name``, in eval mode: bundled, cached, or fetched now.

    Raises:
        DownloadError: fetching failed (nothing cached).
        CheckpointError: the cached checkpoint is damaged (the message says how to fetch anew).
        StemkitError: the entry is not fetchable (the message says what to do instead).
    """
    from stemkit.artifacts.bundled import bundled_path
    from stemkit.artifacts.catalogue import Bundled

    entry = get_entry(name)
    if isinstance(entry.weights, Bundled):
        path = bundled_path(entry.weights.bundled_name)
        if not path.is_file():
            raise StemkitError(f"the bundled model file {path} is missing; reinstall stemkit")
        return model_from_checkpoint(load_checkpoint(path), path)
    path = fetch(entry, progress=progress, log=log)
    try:
        return model_from_checkpoint(load_checkpoint(path), path)
    except CheckpointError as error:
        raise CheckpointError(
            f"{error} (the cached copy of {entry.name}; `stemkit models fetch {entry.name} "
            "--force` fetches it anew)"
        ) from error


def status_of(entry: CatalogueEntry) -> str:
    """Where ``entry``'s weights are: ``"bundled"`` (inside stemkit), ``"missing"`` (a bundled
    file absent from this install), ``"cached"`` (fetched before) or the entry's own status
    (``"fetchable"``, ``"not fetchable"``)."""
    from stemkit.artifacts.bundled import bundled_path
    from stemkit.artifacts.catalogue import Bundled

    if isinstance(entry.weights, Bundled):
        return "bundled" if bundled_path(entry.weights.bundled_name).is_file() else "missing"
    if is_cached(entry):
        return "cached"
    return entry.status
