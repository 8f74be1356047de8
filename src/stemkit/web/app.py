"""The REST API and the page: a FastAPI application over the job store and the worker pool.

Every error is a JSON object ``{"error": "<one line>"}`` with a 4xx status for what the client
can change (bad upload, unknown job, bad option) and 500 for a bug, never a traceback. Paths
are built from ids the service made (checked to be 32 hex digits) and stem names looked up in
the job's record, so no request can name a file outside the data folder. When a token is set,
every request must carry it (``Authorization: Bearer``, ``X-Stemkit-Token``, ``?token=`` or the
cookie the page gets when opened with ``?token=``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import tempfile
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from stemkit import __version__
from stemkit.errors import StemkitError
from stemkit.web.files import DataFolder, UploadError, sanitize
from stemkit.web.jobs import JobOptions, WorkerPool, model_stems
from stemkit.web.store import Job, JobStore, Song, is_id, new_id

logger = logging.getLogger(__name__)

STATIC: Final = Path(__file__).resolve().parent / "static"
#: Host names a tokenless (loopback) service answers to: other names are a DNS-rebinding page.
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
_COOKIE: Final = "stemkit_token"
_MEDIA: Final = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
}


@dataclass(frozen=True)
class WebConfig:
    """Settings of the service.

    Attributes:
        data: the data folder (database, songs, stems).
        token: required on every request when set.
        workers: jobs separated at once.
        max_upload_mb: uploads larger than this are refused.
        device: where models run.
        check_host: answer only requests addressed to a loopback name (set when serving on
            loopback without a token, against DNS rebinding).
    """

    data: Path
    token: str | None = None
    workers: int = 1
    max_upload_mb: float = 200.0
    device: str = "cpu"
    check_host: bool = False


class JobRequest(BaseModel):
    """A separation to run: the song, the model and ``stemkit separate``'s options."""

    song_id: str = Field(description="id of an uploaded or generated song")
    model: str = Field("default", description="a catalogue name (GET /api/models) or identity")
    two_stems: str | None = Field(None, description="write STEM and no_STEM (karaoke)")
    stems: list[str] | None = Field(None, description="stems to write (default: all)")
    format: str = Field("wav", description="wav, flac, mp3, ogg or opus")
    bits: int | None = Field(None, description="wav/flac: 16, 24 or 32 (float, wav only)")
    bitrate: int | None = Field(None, description="kbit/s: mp3 (320) or opus")
    sample_rate: str = Field("input", description="input, model or a rate in Hz")
    clip: str = Field("warn", description="warn, clamp or rescale")
    segment: float | None = Field(None, description="chunk length in s (model default)")
    overlap: float = Field(0.25, description="chunk overlap, 0 to 0.5")
    shifts: int = Field(0, description="shift trick passes")
    seed: int | None = Field(None, description="seed of the shift delays")


class GenerateRequest(BaseModel):
    """A test song to generate, whose true stems are kept for scoring."""

    seconds: float = Field(10.0, gt=0, le=120)
    seed: int = Field(0, ge=0)


def create_app(config: WebConfig) -> FastAPI:
    """The application: routes, error handlers, token check; workers start with it.

    Args:
        config: the settings.
    """
    data = DataFolder(config.data)
    store = JobStore(data.database)
    pool = WorkerPool(store, data, workers=config.workers, device=config.device)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.start()
        try:
            yield
        finally:
            pool.stop()
            store.close()

    app = FastAPI(
        title="stemkit",
        version=__version__,
        description="Separate songs into stems: upload, separate, listen, download, compare.",
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.pool = pool
    app.state.data = data
    _errors(app)
    _guard(app, config)

    # ---- models

    @app.get("/api/models", summary="The models a job may use, with their cards")
    def list_models() -> list[dict[str, Any]]:
        from stemkit.api import WEIGHTLESS
        from stemkit.artifacts import CATALOGUE
        from stemkit.artifacts.fetch import status_of

        cards = [_card(entry, status_of(entry)) for entry in CATALOGUE.values()]
        for name in sorted(WEIGHTLESS):
            cards.append(
                {
                    "name": name,
                    "title": "identity: every stem is the mixture (for tests)",
                    "stems": list(model_stems(name)),
                    "status": "bundled",
                    "usable": True,
                }
            )
        return cards

    # ---- songs

    @app.post("/api/songs", status_code=201, summary="Upload a song (checked by decoding it)")
    def upload_song(request: Request, file: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008
        song_id = new_id()
        max_bytes = int(config.max_upload_mb * 1e6)
        try:
            name, decoded = data.receive(
                file.file, file.filename or "", max_bytes=max_bytes, song_id=song_id
            )
            song = store.add_song(
                sanitize(file.filename or ""),
                name,
                decoded.sample_rate,
                decoded.channels,
                decoded.frames,
                song_id=song_id,
            )
        except BaseException:
            with contextlib.suppress(StemkitError):
                data.remove(data.song_dir(song_id))
            raise
        return song.public()

    @app.post(
        "/api/songs/generate", status_code=201, summary="Generate a test song with true stems"
    )
    def generate(request: GenerateRequest) -> dict[str, Any]:
        from stemkit.web.evaluate import generate_song

        song_id = new_id()
        folder = data.song_dir(song_id)
        try:
            file, references, frames = generate_song(folder, request.seconds, request.seed)
            song = store.add_song(
                f"generated-{request.seed}-{request.seconds:g}s.wav",
                file,
                44100,
                2,
                frames,
                references=references,
                song_id=song_id,
            )
        except BaseException:
            data.remove(folder)
            raise
        return song.public()

    @app.get("/api/songs", summary="Every song, newest first")
    def list_songs() -> list[dict[str, Any]]:
        return [song.public() for song in store.songs()]

    @app.get("/api/songs/{song_id}", summary="One song")
    def get_song(song_id: str) -> dict[str, Any]:
        return _song(store, song_id).public()

    @app.get("/api/songs/{song_id}/audio", summary="The song as uploaded")
    def song_audio(song_id: str) -> FileResponse:
        song = _song(store, song_id)
        path = data.song_dir(song.id) / song.file
        return FileResponse(path, media_type=_media(path), filename=song.name)

    @app.get("/api/songs/{song_id}/references/{stem}", summary="A true stem of a generated song")
    def song_reference(song_id: str, stem: str) -> FileResponse:
        song = _song(store, song_id)
        if not song.references or stem not in song.references:
            raise HTTPException(404, f"song {song_id} has no true stem {stem!r}")
        path = data.song_dir(song.id) / "references" / song.references[stem]
        return FileResponse(path, media_type="audio/wav")

    @app.delete("/api/songs/{song_id}", summary="Delete a song, its jobs and all their files")
    def delete_song(song_id: str) -> dict[str, Any]:
        song = _song(store, song_id)
        jobs = store.jobs(song.id)
        for job in jobs:
            _delete_job(job)
        data.remove(data.song_dir(song.id))
        store.delete_song(song.id)
        return {"deleted": song.id, "jobs": [job.id for job in jobs]}

    # ---- jobs

    @app.post("/api/jobs", status_code=201, summary="Queue a separation job")
    def create_job(request: JobRequest) -> dict[str, Any]:
        song = _song(store, request.song_id)
        values = request.model_dump(exclude={"song_id", "model"}, exclude_none=True)
        options = JobOptions.parse(request.model, values)
        job = store.add_job(song.id, request.model, options.to_json())
        pool.notify()
        return job.public()

    @app.get("/api/jobs", summary="Every job (of one song), newest first")
    def list_jobs(song_id: str | None = None) -> list[dict[str, Any]]:
        return [job.public() for job in store.jobs(song_id)]

    @app.get("/api/jobs/{job_id}", summary="One job: status, progress, stems")
    def get_job(job_id: str) -> dict[str, Any]:
        return _job(store, job_id).public()

    @app.get(
        "/api/jobs/{job_id}/events",
        summary="The job's progress as server-sent events, until it is done or failed",
        response_class=StreamingResponse,
    )
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        _job(store, job_id)

        async def events() -> AsyncIterator[str]:
            last: dict[str, Any] | None = None
            idle = 0.0
            while not await request.is_disconnected():
                job = store.job(job_id)
                if job is None:
                    yield "event: deleted\ndata: {}\n\n"
                    return
                state = job.public()
                if state != last:
                    yield f"event: job\ndata: {json.dumps(state)}\n\n"
                    last, idle = state, 0.0
                    if job.status in ("done", "failed"):
                        return
                elif idle >= 15.0:
                    yield ": still running\n\n"  # keeps proxies from closing the stream
                    idle = 0.0
                await asyncio.sleep(0.2)
                idle += 0.2

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    @app.get("/api/jobs/{job_id}/stems/{stem}", summary="Download one stem")
    def job_stem(job_id: str, stem: str) -> FileResponse:
        job = _done(store, job_id)
        assert job.stems is not None
        if stem not in job.stems:
            raise HTTPException(404, f"job {job_id} has no stem {stem!r}; it has {list(job.stems)}")
        path = data.stems_dir(job.id) / job.stems[stem]
        song = store.song(job.song_id)
        base = Path(song.name).stem if song else "song"
        return FileResponse(path, media_type=_media(path), filename=f"{base} - {path.name}")

    @app.get("/api/jobs/{job_id}/zip", summary="Download every stem as one zip")
    def job_zip(job_id: str) -> StreamingResponse:
        job = _done(store, job_id)
        assert job.stems is not None
        song = store.song(job.song_id)
        base = sanitize(f"{Path(song.name).stem if song else 'song'} - {job.model}")
        buffer = tempfile.SpooledTemporaryFile(max_size=64 << 20)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for file in job.stems.values():
                archive.write(data.stems_dir(job.id) / file, f"{base}/{file}")
        size = buffer.tell()
        buffer.seek(0)

        def chunks() -> Iterator[bytes]:
            with buffer:
                while chunk := buffer.read(1 << 20):
                    yield chunk

        return StreamingResponse(
            chunks(),
            media_type="application/zip",
            headers={
                "Content-Disposition": f'attachment; filename="{base}.zip"',
                "Content-Length": str(size),
            },
        )

    @app.get("/api/jobs/{job_id}/waveform", summary="Peaks of each stem, for drawing")
    def job_waveform(job_id: str, points: int = 600) -> dict[str, Any]:
        job = _done(store, job_id)
        assert job.stems is not None
        if not 10 <= points <= 4000:
            raise HTTPException(422, "points must be from 10 to 4000")
        return {
            stem: _peaks(data.stems_dir(job.id) / file, points) for stem, file in job.stems.items()
        }

    @app.get(
        "/api/jobs/{job_id}/scores",
        summary="uSDR of each stem against the true stems (generated songs only)",
    )
    def job_scores(job_id: str) -> dict[str, Any]:
        from stemkit.web.evaluate import baseline_scores, score_stems

        job = _done(store, job_id)
        assert job.stems is not None
        song = _song(store, job.song_id)
        if not song.references:
            raise HTTPException(409, "this song has no true stems to score against")
        folder = data.song_dir(song.id) / "references"
        scores = score_stems(
            {name: folder / file for name, file in song.references.items()},
            {name: data.stems_dir(job.id) / file for name, file in job.stems.items()},
        )
        baseline = baseline_scores(
            {name: folder / file for name, file in song.references.items()},
            data.song_dir(song.id) / song.file,
        )
        return {
            "metric": "uSDR (dB, one SDR per stem over the song)",
            "scores": scores,
            "baseline": baseline,
        }

    @app.delete("/api/jobs/{job_id}", summary="Delete a job and its stems")
    def delete_job(job_id: str) -> dict[str, Any]:
        job = _job(store, job_id)
        _delete_job(job)
        return {"deleted": job.id}

    def _delete_job(job: Job) -> None:
        pool.cancel(job.id)
        store.delete_job(job.id)
        data.remove(data.job_dir(job.id))

    # ---- page

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/health", summary="Whether the service is up")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "workers": config.workers}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _song(store: JobStore, song_id: str) -> Song:
    song = store.song(song_id) if is_id(song_id) else None
    if song is None:
        raise HTTPException(404, f"no song {song_id!r}")
    return song


def _job(store: JobStore, job_id: str) -> Job:
    job = store.job(job_id) if is_id(job_id) else None
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job


def _done(store: JobStore, job_id: str) -> Job:
    job = _job(store, job_id)
    if job.status != "done" or not job.stems:
        raise HTTPException(409, f"job {job_id} is {job.status}: its stems are not ready")
    return job


def _media(path: Path) -> str:
    return _MEDIA.get(path.suffix.lower(), "application/octet-stream")


def _card(entry: Any, status: str) -> dict[str, Any]:
    score = entry.score
    return {
        "name": entry.name,
        "title": entry.title,
        "system": entry.system,
        "stems": list(entry.stems),
        "sample_rate": entry.sample_rate,
        "parameters": entry.parameters,
        "trained_on": entry.trained_on,
        "score": None
        if score is None
        else {
            "metric": score.metric,
            "test_set": score.test_set,
            "per_stem": dict(score.per_stem),
            "mean": round(score.mean, 2),
            "reference": score.reference,
        },
        "licence": entry.licence,
        "status": status,
        "usable": status in ("bundled", "cached", "fetchable"),
    }


def _peaks(path: Path, points: int) -> list[list[float]]:
    """``[min, max]`` of the channel mean over ``points`` equal spans of the file."""
    import numpy as np
    import soundfile as sf

    signal, _ = sf.read(str(path), dtype="float32", always_2d=True)
    mono = signal.mean(axis=1)
    if mono.size == 0:
        return []
    spans = np.array_split(mono, min(points, mono.size))
    return [[round(float(s.min()), 4), round(float(s.max()), 4)] for s in spans]


def _errors(app: FastAPI) -> None:
    """Every error as ``{"error": "..."}``."""

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, error: UploadError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(StemkitError)
    async def stemkit_error(request: Request, error: StemkitError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(error.detail)}, status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in item.get('loc', ()))}: {item.get('msg', 'invalid')}"
            for item in error.errors()
        ]
        return JSONResponse({"error": "; ".join(problems) or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        logger.error("internal error on %s %s", request.method, request.url.path, exc_info=error)
        return JSONResponse(
            {"error": f"internal error ({type(error).__name__}); see the server's log"},
            status_code=500,
        )


def _guard(app: FastAPI, config: WebConfig) -> None:
    """The token check, and the host check of a tokenless service."""
    max_body = int(config.max_upload_mb * 1e6) + (1 << 16)  # multipart headers on top

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if config.check_host:
            host = request.headers.get("host", "").rsplit(":", 1)[0]
            if host not in LOOPBACK_HOSTS:
                return JSONResponse({"error": f"unexpected host {host!r}"}, status_code=421)
        set_cookie = False
        if config.token is not None:
            given = (
                request.headers.get("x-stemkit-token")
                or request.query_params.get("token")
                or request.cookies.get(_COOKIE)
            )
            bearer = request.headers.get("authorization", "")
            if bearer.lower().startswith("bearer "):
                given = bearer[7:].strip()
            if not given or not secrets.compare_digest(given, config.token):
                return JSONResponse(
                    {"error": "a token is required: open the address the server printed"},
                    status_code=401,
                )
            set_cookie = request.query_params.get("token") is not None
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            return JSONResponse(
                {"error": f"the file is larger than the limit of {config.max_upload_mb:g} MB"},
                status_code=413,
            )
        response: Response = await call_next(request)
        if set_cookie and config.token is not None:
            response.set_cookie(_COOKIE, config.token, httponly=True, samesite="strict")
        return response
