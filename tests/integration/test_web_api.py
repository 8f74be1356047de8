"""The REST API of ``stemkit serve`` through FastAPI's TestClient: uploads refused by decoding,
jobs that survive a killed server, files removed with their job, the token, JSON errors."""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install stemkit[web])")
from fastapi.testclient import TestClient

from stemkit import outputs
from stemkit.web import WebConfig, create_app
from stemkit.web.files import sanitize
from stemkit.web.store import MAX_ATTEMPTS, JobStore

RATE = 44100


def wav_bytes(seconds: float = 1.0, channels: int = 2, seed: int = 0) -> bytes:
    signal = np.random.default_rng(seed).uniform(-0.3, 0.3, (round(seconds * RATE), channels))
    buffer = io.BytesIO()
    sf.write(buffer, signal.astype(np.float32), RATE, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def files_under(root: Path) -> list[str]:
    """Every file and folder under ``root`` except the database, relative."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not p.name.startswith("stemkit-web.sqlite3")
    )


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def client(data: Path) -> Iterator[TestClient]:
    with TestClient(create_app(WebConfig(data=data, max_upload_mb=1.0))) as client:
        yield client


def upload(client: TestClient, content: bytes, name: str = "song.wav") -> object:
    return client.post("/api/songs", files={"file": (name, content, "audio/wav")})


def wait(client: TestClient, job_id: str) -> dict:
    # The TestClient's event stream ends when the job is done or failed.
    with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        events = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
    assert events, "no progress event"
    progress = [event["progress"] for event in events]
    assert progress == sorted(progress)
    return client.get(f"/api/jobs/{job_id}").json()


@pytest.mark.parametrize(
    ("name", "content", "status", "words"),
    [
        ("empty.wav", b"", 422, "empty"),
        ("notes.wav", b"these are my lyrics, not audio\n" * 40, 422, "not a usable audio file"),
        ("surround.wav", wav_bytes(0.5, channels=6), 422, "6 channels"),
        ("big.wav", wav_bytes(4.0), 413, "larger than the limit"),
        ("song.txt", wav_bytes(0.5), 415, "unsupported file type"),
    ],
)
def test_bad_uploads_are_refused_and_leave_nothing(
    client: TestClient, data: Path, name: str, content: bytes, status: int, words: str
) -> None:
    before = files_under(data)
    response = upload(client, content, name)
    assert response.status_code == status
    assert words in response.json()["error"]
    assert "Traceback" not in response.text
    assert files_under(data) == before
    assert client.get("/api/songs").json() == []


def test_path_traversal_names_never_reach_the_file_system(client: TestClient, data: Path) -> None:
    for name in ("../../etc/evil.wav", "..\\..\\evil.wav", "/abs/evil.wav", ".hidden.wav"):
        response = upload(client, wav_bytes(0.2), name)
        assert response.status_code == 201, response.text
        song = response.json()
        assert "/" not in song["name"] and "\\" not in song["name"]
        assert not song["name"].startswith(".")
        assert (data / "songs" / song["id"] / "song.wav").is_file()
    assert not (data.parent / "evil.wav").exists()
    # ids and stem names from a URL never name a path
    for path in ("/api/jobs/..%2F..%2Fetc", "/api/songs/../../etc/passwd/audio"):
        response = client.get(path)
        assert response.status_code == 404
        assert "error" in response.json()


def test_sanitize() -> None:
    assert sanitize("../../a b.wav") == "a b.wav"
    assert sanitize("C:\\music\\Björk – Jóga.flac") == "Bjork Joga.flac"
    assert sanitize("..") == "song"
    assert sanitize(".stemkit-x.wav") == "stemkit-x.wav"


def test_separate_download_and_delete(client: TestClient, data: Path) -> None:
    song = upload(client, wav_bytes(1.0), "My Song.wav").json()
    job = client.post(
        "/api/jobs", json={"song_id": song["id"], "model": "default", "two_stems": "vocals"}
    ).json()
    assert job["status"] == "queued"
    job = wait(client, job["id"])
    assert job["status"] == "done" and job["progress"] == 1.0
    assert job["stems"] == ["vocals", "no_vocals"]

    stem = client.get(f"/api/jobs/{job['id']}/stems/vocals")
    assert stem.status_code == 200 and stem.headers["content-type"] == "audio/wav"
    assert client.get(f"/api/jobs/{job['id']}/stems/..%2Fstems").status_code == 404
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/api/jobs/{job['id']}/zip").content))
    assert sorted(Path(n).name for n in archive.namelist()) == ["no_vocals.wav", "vocals.wav"]
    peaks = client.get(f"/api/jobs/{job['id']}/waveform?points=50").json()
    assert set(peaks) == {"vocals", "no_vocals"} and len(peaks["vocals"]) == 50

    assert (data / "jobs" / job["id"]).is_dir()
    assert client.delete(f"/api/jobs/{job['id']}").json() == {"deleted": job["id"]}
    assert not (data / "jobs" / job["id"]).exists()
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404
    client.delete(f"/api/songs/{song['id']}")
    assert files_under(data) == ["incoming", "jobs", "songs"]


def test_generated_song_is_scored(client: TestClient) -> None:
    song = client.post("/api/songs/generate", json={"seconds": 2, "seed": 1}).json()
    assert song["references"] == ["bass", "drums", "other", "vocals"]
    created = client.post("/api/jobs", json={"song_id": song["id"], "model": "identity"})
    identity = wait(client, created.json()["id"])
    result = client.get(f"/api/jobs/{identity['id']}/scores").json()
    assert result["scores"] == {"mixture": None}
    # the mixture as the estimate of each stem
    assert set(result["baseline"]) == {"vocals", "drums", "bass", "other"}
    assert all(np.isfinite(value) for value in result["baseline"].values())
    default = client.post(
        "/api/jobs", json={"song_id": song["id"], "model": "default", "two_stems": "vocals"}
    ).json()
    wait(client, default["id"])
    scores = client.get(f"/api/jobs/{default['id']}/scores").json()["scores"]
    assert set(scores) == {"vocals", "no_vocals"}
    assert all(isinstance(v, float) and np.isfinite(v) for v in scores.values())


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"model": "../../model.pt"}, "unknown model"),
        ({"model": "default", "two_stems": "kazoo"}, "two_stems"),
        ({"model": "default", "format": "flac", "bits": 32}, "flac stores"),
        ({"model": "default", "overlap": 0.9}, "overlap"),
        ({"model": "default", "format": "wav", "bitrate": 128}, "bitrate applies"),
        ({"model": "default", "shifts": "many"}, "shifts"),
    ],
)
def test_bad_job_options_are_json_errors(client: TestClient, body: dict, words: str) -> None:
    song = upload(client, wav_bytes(0.2)).json()
    response = client.post("/api/jobs", json={"song_id": song["id"], **body})
    assert response.status_code == 422
    assert words in response.json()["error"]
    assert client.get("/api/jobs").json() == []


def test_unknown_song_and_job_are_404(client: TestClient) -> None:
    assert client.post("/api/jobs", json={"song_id": "0" * 32}).status_code == 404
    response = client.get("/api/jobs/" + "f" * 32 + "/zip")
    assert response.status_code == 404 and response.json() == {"error": f"no job {'f' * 32!r}"}


def test_openapi_lists_the_api(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/songs", "/api/jobs", "/api/jobs/{job_id}/events", "/api/jobs/{job_id}/zip"):
        assert path in paths


def _killed_mid_job(data: Path, attempts: int) -> tuple[str, Path]:
    """A data folder as a server killed while writing a job's stems leaves it: the job
    ``running`` in the database and a hidden partial folder beside its destination."""
    with TestClient(create_app(WebConfig(data=data))) as client:
        song = upload(client, wav_bytes(1.0)).json()
        # no worker may take the job: the pool of this app is stopped first
        client.app.state.pool.stop()
        job = client.post("/api/jobs", json={"song_id": song["id"], "model": "default"}).json()
    store = JobStore(data / "stemkit-web.sqlite3")
    for _ in range(attempts):
        claimed = store.claim()
        assert claimed is not None and claimed.id == job["id"]
        store._db.execute("UPDATE jobs SET status = 'queued' WHERE id = ?", (job["id"],))
    store._db.execute("UPDATE jobs SET status = 'running' WHERE id = ?", (job["id"],))
    store.close()
    root = data / "jobs" / job["id"]
    root.mkdir(parents=True)
    partial = root / f".stemkit-{outputs._key('stems')}-999999-0123abcd.partial"
    partial.mkdir()
    (partial / "vocals.wav").write_bytes(b"RIFF half-written")
    return job["id"], partial


def test_a_job_cut_off_by_a_killed_server_is_resumed(data: Path) -> None:
    job_id, partial = _killed_mid_job(data, attempts=1)
    with TestClient(create_app(WebConfig(data=data))) as client:
        job = wait(client, job_id)
        assert job["status"] == "done" and job["attempts"] == 2
        assert job["stems"] == ["vocals", "drums", "bass", "other"]
        stems = data / "jobs" / job_id / "stems"
        assert sorted(p.name for p in stems.iterdir()) == sorted(
            [outputs.MARKER, "vocals.wav", "drums.wav", "bass.wav", "other.wav"]
        )
        assert not partial.exists()
        for stem in job["stems"]:
            assert client.get(f"/api/jobs/{job_id}/stems/{stem}").status_code == 200


def test_a_job_cut_off_twice_fails_and_lists_no_stems(data: Path) -> None:
    job_id, _ = _killed_mid_job(data, attempts=MAX_ATTEMPTS)
    with TestClient(create_app(WebConfig(data=data))) as client:
        job = client.get(f"/api/jobs/{job_id}").json()
        assert job["status"] == "failed"
        assert "stopped during this job" in job["error"]
        assert job["stems"] == []
        assert client.get(f"/api/jobs/{job_id}/zip").status_code == 409
        assert client.delete(f"/api/jobs/{job_id}").status_code == 200
        assert not (data / "jobs" / job_id).exists()


def test_token_is_required_when_set(data: Path) -> None:
    app = create_app(WebConfig(data=data, token="s3cret-token"))
    with TestClient(app) as client:
        refused = client.get("/api/jobs")
        assert refused.status_code == 401 and "token" in refused.json()["error"]
        assert client.get("/api/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert (
            client.get("/api/jobs", headers={"Authorization": "Bearer s3cret-token"}).json() == []
        )
        page = client.get("/?token=s3cret-token")
        assert page.status_code == 200 and "stemkit_token" in page.headers["set-cookie"]
        assert client.get("/api/jobs").status_code == 200  # the cookie the page got


def test_a_tokenless_service_answers_loopback_names_only(data: Path) -> None:
    with TestClient(create_app(WebConfig(data=data, check_host=True))) as client:
        assert client.get("/api/health").status_code == 421  # Host: testserver
        ok = client.get("/api/health", headers={"Host": "127.0.0.1:8000"})
        assert ok.status_code == 200


def test_serve_refuses_a_public_address_without_printing_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import uvicorn

    from stemkit.cli.main import main

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    assert main(["serve", "--host", "0.0.0.0", "--data", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "?token=" in out and seen["host"] == "0.0.0.0"
    assert main(["serve", "--data", str(tmp_path / "d")]) == 0
    assert "token" not in capsys.readouterr().out
    assert main(["serve", "--workers", "0"]) == 2


def test_many_queued_jobs_all_finish(data: Path) -> None:
    with TestClient(create_app(WebConfig(data=data, workers=2))) as client:
        song = upload(client, wav_bytes(0.3)).json()
        ids = [
            client.post("/api/jobs", json={"song_id": song["id"], "model": "identity"}).json()["id"]
            for _ in range(8)
        ]
        deadline = time.monotonic() + 60
        while any(client.get(f"/api/jobs/{i}").json()["status"] != "done" for i in ids):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert len(os.listdir(data / "jobs")) == 8


def test_serve_killed_mid_job_and_restarted_never_lists_half_written_stems(
    tmp_path: Path,
) -> None:
    """The real thing: `stemkit serve` in a subprocess, SIGKILLed while separating, restarted.

    Wherever the kill lands, the job ends done with every stem, or failed with none.
    """
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "stemkit", "serve", "--port", str(port),
               "--data", str(tmp_path / "data")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def start() -> subprocess.Popen[bytes]:
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/api/health", headers={"Host": "127.0.0.1"})
                return server
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)

    server = start()
    try:
        song = httpx.post(
            f"{url}/api/songs", files={"file": ("long.wav", wav_bytes(5.0), "audio/wav")}
        ).json()
        # 0.5 s chunks: a dozen progress steps to land the kill in
        job = httpx.post(
            f"{url}/api/jobs", json={"song_id": song["id"], "model": "default", "segment": 0.5}
        ).json()
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/api/jobs/{job['id']}").json()["stage"] in ("queued", "loading"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        server = start()
        deadline = time.monotonic() + 120
        while (state := httpx.get(f"{url}/api/jobs/{job['id']}").json())["status"] not in (
            "done",
            "failed",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        server.kill()
        server.wait(10)
    folder = tmp_path / "data" / "jobs" / job["id"]
    leftovers = [p.name for p in folder.iterdir() if p.name != "stems"]
    assert leftovers == []
    if state["status"] == "done":
        assert state["attempts"] == 2
        files = sorted(p.name for p in (folder / "stems").iterdir())
        assert files == sorted([outputs.MARKER, *(f"{s}.wav" for s in state["stems"])])
        assert len(state["stems"]) == 4
    else:
        assert state["stems"] == [] and not (folder / "stems").exists()


def test_a_job_deleted_while_running_leaves_no_files(data: Path) -> None:
    with TestClient(create_app(WebConfig(data=data))) as client:
        pool = client.app.state.pool
        song = upload(client, wav_bytes(4.0)).json()
        job = client.post(
            "/api/jobs", json={"song_id": song["id"], "model": "default", "segment": 0.5}
        ).json()
        deadline = time.monotonic() + 60
        while job["id"] not in pool.running and client.get(f"/api/jobs/{job['id']}").json()[
            "status"
        ] in ("queued",):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert client.delete(f"/api/jobs/{job['id']}").status_code == 200
        while job["id"] in pool.running:  # wherever the delete landed, the worker winds down
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not (data / "jobs" / job["id"]).exists()
        assert client.get("/api/jobs").json() == []


def test_the_content_decides_not_the_extension(client: TestClient) -> None:
    buffer = io.BytesIO()
    signal = np.random.default_rng(0).uniform(-0.2, 0.2, (RATE, 2)).astype(np.float32)
    sf.write(buffer, signal, RATE, format="FLAC")
    response = upload(client, buffer.getvalue(), "really-a-flac.wav")
    assert response.status_code == 201, response.text
    assert response.json()["channels"] == 2 and response.json()["duration"] == 1.0


def test_the_size_limit_holds_without_a_content_length(tmp_path: Path) -> None:
    from stemkit.web.files import DataFolder, UploadError

    folder = DataFolder(tmp_path / "data")
    with pytest.raises(UploadError) as refused:
        folder.receive(io.BytesIO(wav_bytes(1.0)), "a.wav", max_bytes=1000, song_id="0" * 32)
    assert refused.value.status == 413
    assert files_under(folder.root) == ["incoming", "jobs", "songs"]
