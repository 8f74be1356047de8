"""``stemkit separate --manifest`` in one process (no Ray): resuming, refusing another job's
manifest, @FILE song lists, and folders finished by a job killed before it recorded them."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemkit.cli import main as cli
from stemkit.cluster.manifest import Manifest
from stemkit.outputs import MARKER

RATE = 44100


@pytest.fixture(autouse=True)
def only_separate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMANDS", ("separate",))


@pytest.fixture
def songs(tmp_path: Path, make_stems: Callable[..., np.ndarray]) -> Path:
    folder = tmp_path / "songs"
    folder.mkdir()
    for i in range(3):
        mixture = 0.5 * make_stems(1.0, seed=300 + i).sum(axis=0)  # no clipped samples
        sf.write(folder / f"s{i}.wav", mixture.T, RATE, subtype="FLOAT")
    return folder


def identities(out: Path) -> dict[str, tuple[int, int]]:
    return {
        folder.name: (os.stat(folder / MARKER).st_ino, os.stat(folder / MARKER).st_mtime_ns)
        for folder in sorted(out.iterdir())
    }


def test_a_finished_job_run_again_redoes_nothing(songs: Path, tmp_path: Path) -> None:
    out, manifest = tmp_path / "out", tmp_path / "job.jsonl"
    argv = ["separate", str(songs), "-o", str(out), "--model", "identity", "--manifest"]
    assert cli.main([*argv, str(manifest), "-q"]) == 0
    before = identities(out)
    assert len(before) == 3
    assert cli.main([*argv, str(manifest), "-q"]) == 0
    assert identities(out) == before
    job = Manifest.load(manifest)
    assert job.counts() == {"pending": 0, "done": 3, "failed": 0}
    assert all(str(e.result["checksum"]).startswith("sha256:") for e in job.entries.values())


def test_folders_written_before_their_line_are_recorded_not_redone(
    songs: Path, tmp_path: Path
) -> None:
    out, manifest = tmp_path / "out", tmp_path / "job.jsonl"
    argv = ["separate", str(songs), "-o", str(out), "--model", "identity", "-q"]
    assert cli.main([*argv, "--manifest", str(manifest)]) == 0
    before = identities(out)
    # The job as a kill right after the workers' renames leaves it: every song still pending.
    lines = manifest.read_text().splitlines()
    manifest.write_text(
        "\n".join(line for line in lines if '"pending"' in line or "manifest" in line)
    )
    assert Manifest.load(manifest).counts()["pending"] == 3

    assert cli.main([*argv, "--manifest", str(manifest)]) == 0
    assert identities(out) == before
    job = Manifest.load(manifest)
    assert job.counts()["done"] == 3
    assert not any(e.result["written"] for e in job.entries.values())


def test_another_jobs_manifest_is_refused(
    songs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, manifest = tmp_path / "out", tmp_path / "job.jsonl"
    argv = ["separate", str(songs), "-o", str(out), "--manifest", str(manifest), "-q"]
    assert cli.main([*argv, "--model", "identity"]) == 0
    capsys.readouterr()
    assert cli.main([*argv, "--model", "identity", "--format", "flac"]) == 2
    assert "another job (--format differ)" in capsys.readouterr().err


def test_songs_listed_in_a_file(songs: Path, tmp_path: Path) -> None:
    listing = tmp_path / "songs.txt"
    listing.write_text("".join(f"{path}\n" for path in sorted(songs.iterdir())[:2]))
    out, manifest = tmp_path / "out", tmp_path / "job.jsonl"
    argv = ["separate", f"@{listing}", "-o", str(out), "--model", "identity"]
    assert cli.main([*argv, "--manifest", str(manifest), "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["s0", "s1"]
    summary = json.loads(manifest.read_text().splitlines()[-1])["summary"]
    assert summary["done"] == 2 and summary["audio_seconds"] == pytest.approx(2.0)


def test_a_refused_model_leaves_no_manifest(songs: Path, tmp_path: Path) -> None:
    out, manifest = tmp_path / "out", tmp_path / "job.jsonl"
    argv = ["separate", str(songs), "-o", str(out), "--model", "umx", "--manifest", str(manifest)]
    assert cli.main([*argv, "-q"]) == 2  # an architecture without trained weights
    assert not manifest.exists()


def test_bad_cluster_options_are_refused_before_any_work(songs: Path, tmp_path: Path) -> None:
    out, manifest = tmp_path / "out", tmp_path / "job.jsonl"
    argv = ["separate", str(songs), "-o", str(out), "--model", "identity", "-q"]
    assert cli.main([*argv, "--ray", "--workers", "0", "--manifest", str(manifest)]) == 2
    assert not manifest.exists() and not out.exists()  # a refused command leaves no trace
