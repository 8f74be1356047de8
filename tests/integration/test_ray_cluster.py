"""``stemkit separate --ray`` and ``evaluate --ray`` on a local Ray cluster of 2 CPUs.

One cluster serves the whole module (starting one takes seconds); the commands run in this
process join it, a command run as a subprocess joins it by address. Songs and models are
generated at test time: 12 songs of 2 s, and Open-Unmix with 16 hidden units and random
weights, saved as a checkpoint (a real network, so identical outputs mean something).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import soundfile as sf

from stemkit import models
from stemkit.artifacts.checkpoint import save_checkpoint
from stemkit.cli import main as cli
from stemkit.cli.catalogue import SONG_DELAY_ENV
from stemkit.cluster import pool
from stemkit.cluster.manifest import Manifest
from stemkit.outputs import MARKER

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

RATE = 44100
NB_SONGS = 12
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """A local Ray cluster of 2 CPUs for the module; its address."""
    # Ray's socket paths must stay under 107 characters: a short folder of our own, not pytest's.
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    # The workers import stemkit from this checkout, as the driver does (they inherit the
    # environment of the cluster's start, in which a relative path would not hold).
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [saved])])
    # the test's own functions go to the workers by value: they cannot import this module
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    context = ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=temp,
        configure_logging=False,
        log_to_driver=False,
    )
    try:
        yield str(context.address_info["address"])
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(songs folder, tiny checkpoint, single-process output) for the module."""
    from conftest import toy_stems

    root = tmp_path_factory.mktemp("catalogue")
    songs = root / "songs"
    songs.mkdir()
    for i in range(NB_SONGS):
        mixture = toy_stems(2.0, seed=200 + i).sum(axis=0)
        sf.write(songs / f"song {i:02d}.wav", mixture.T, RATE, subtype="FLOAT")
    model = models.build("umx", hidden_size=16, nb_layers=1)
    checkpoint = save_checkpoint(root / "tiny.pt", model)  # type: ignore[arg-type]
    single = root / "single"
    assert (
        cli.main(["separate", str(songs), "-o", str(single), "--model", str(checkpoint), "-q"]) == 0
    )
    return songs, checkpoint, single


def stem_bytes(folder: Path) -> dict[str, bytes]:
    """Every stem file under ``folder`` (song/stem → bytes); markers differ in date and cost."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MARKER
    }


def done_lines(manifest: Path) -> list[dict[str, object]]:
    lines = []
    for line in manifest.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("state") == "done":
            lines.append(record)
    return lines


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def command(songs: Path, checkpoint: Path, out: Path, manifest: Path, address: str) -> list[str]:
    return [
        "separate", str(songs), "-o", str(out), "--model", str(checkpoint), "-q",
        "--ray", address, "--manifest", str(manifest),
    ]  # fmt: skip


def test_ray_outputs_equal_the_single_process_command(
    address: str, catalogue: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    songs, checkpoint, single = catalogue
    out, manifest = tmp_path / "out", tmp_path / "job.jsonl"
    assert cli.main(command(songs, checkpoint, out, manifest, address)) == 0

    assert stem_bytes(out) == stem_bytes(single)
    job = Manifest.load(manifest)
    assert job.counts() == {"pending": 0, "done": NB_SONGS, "failed": 0}
    workers = {str(e.result["worker"]) for e in job.entries.values()}
    assert len(workers) == 2  # both workers took songs
    summary = json.loads(manifest.read_text().splitlines()[-1])["summary"]
    assert summary["done"] == NB_SONGS and summary["audio_seconds"] == pytest.approx(24.0)
    assert summary["throughput"] > 0 and summary["energy_kwh"] > 0


def test_a_worker_killed_mid_job_is_retried_and_every_song_written_once(
    address: str,
    catalogue: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    songs, checkpoint, single = catalogue
    out, manifest = tmp_path / "out", tmp_path / "job.jsonl"
    # each song pauses 0.4 s with its partial folder open, so the kill lands mid-song
    monkeypatch.setenv(SONG_DELAY_ENV, "0.4")
    status: list[int] = []
    job = threading.Thread(
        target=lambda: status.append(cli.main(command(songs, checkpoint, out, manifest, address)))
    )
    job.start()
    try:
        wait_for(lambda: manifest.is_file() and len(done_lines(manifest)) >= 1, 60)
        pid = int(str(done_lines(manifest)[0]["worker"]).rsplit(":", 1)[1])
        os.kill(pid, signal.SIGKILL)
    finally:
        job.join(timeout=120)
    assert status == [0]

    lines = done_lines(manifest)
    assert sorted(str(line["song"]) for line in lines) == sorted(
        str(song) for song in songs.iterdir()
    )  # one result per song: none lost, none twice
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # it did die
    assert stem_bytes(out) == stem_bytes(single)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no partial folder left


def test_a_killed_job_resumes_from_its_manifest_without_redoing_songs(
    address: str, catalogue: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    songs, checkpoint, single = catalogue
    out, manifest = tmp_path / "out", tmp_path / "job.jsonl"
    argv = command(songs, checkpoint, out, manifest, address)
    env = {**os.environ, SONG_DELAY_ENV: "0.3", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "stemkit.cli.main", *argv], env=env)
    try:
        wait_for(lambda: manifest.is_file() and len(done_lines(manifest)) >= 3, 60)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    finished = {Path(str(line["destination"])) for line in done_lines(manifest)}
    assert 3 <= len(finished) < NB_SONGS
    before = {folder: os.stat(folder / MARKER) for folder in finished}

    assert cli.main(argv) == 0

    for folder, stat in before.items():  # not written again
        now = os.stat(folder / MARKER)
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    job = Manifest.load(manifest)
    assert job.counts() == {"pending": 0, "done": NB_SONGS, "failed": 0}
    assert stem_bytes(out) == stem_bytes(single)


def test_a_song_that_fails_is_marked_failed_and_the_job_goes_on(
    address: str, catalogue: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    songs, checkpoint, _ = catalogue
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wav")
    good = songs / "song 00.wav"
    out, manifest = tmp_path / "out", tmp_path / "job.jsonl"
    argv = [
        "separate", str(good), str(bad), "-o", str(out), "--model", str(checkpoint), "-q",
        "--ray", address, "--manifest", str(manifest), "--workers", "1",
    ]  # fmt: skip
    assert cli.main(argv) == 1
    job = Manifest.load(manifest)
    assert job.entries[str(good)].state == "done"
    failed = job.entries[str(bad)]
    assert failed.state == "failed" and str(bad) in str(failed.result["reason"])
    assert sorted(p.name for p in out.iterdir()) == ["song 00"]


def _crash_on_negative(item: int) -> int:
    if item < 0:
        os._exit(1)  # the worker process dies, as when killed or out of memory
    return item * 2


def _crasher() -> Callable[[int], int]:
    return _crash_on_negative


def test_an_item_whose_worker_dies_every_time_fails_after_its_retries(address: str) -> None:
    results: dict[int, object] = {}
    cluster = pool.Cluster(workers=1, retries=1)
    pool.run([1, -1, 2], _crasher, lambda item, result: results.update({item: result}), cluster)
    assert results[1] == 2 and results[2] == 4
    failure = results[-1]
    assert isinstance(failure, pool.Failure) and "died 2 time(s)" in failure.reason


def test_evaluate_ray_gives_the_same_scores(
    address: str, hq_tree: Path, catalogue: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, checkpoint, _ = catalogue
    plain, spread = tmp_path / "plain", tmp_path / "ray"
    common = ["evaluate", "--model", str(checkpoint), "--data", str(hq_tree), "--device", "cpu"]
    assert cli.main([*common, "-o", str(plain)]) == 0
    assert cli.main([*common, "-o", str(spread), "--ray", address]) == 0

    tracks = sorted(p.name for p in (plain / "test").glob("*.json"))
    assert tracks == sorted(p.name for p in (spread / "test").glob("*.json")) and tracks
    for name in tracks:
        a = json.loads((plain / "test" / name).read_text())
        b = json.loads((spread / "test" / name).read_text())
        assert a["targets"] == b["targets"], name
    a, b = (json.loads((folder / "summary.json").read_text()) for folder in (plain, spread))
    a.pop("cost", None), b.pop("cost", None)
    assert a == b
