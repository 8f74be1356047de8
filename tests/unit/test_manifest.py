"""The manifest of a big job: states read back from the last line of each song, a torn last
line ignored, and the next result still readable after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from stemkit.cluster.manifest import Entry, Manifest, folder_checksum
from stemkit.errors import StemkitError


def entries(tmp_path: Path) -> list[Entry]:
    return [Entry(str(tmp_path / f"{name}.wav"), str(tmp_path / "out" / name)) for name in "abc"]


def test_results_read_back_as_each_songs_last_line(tmp_path: Path) -> None:
    path = tmp_path / "job.jsonl"
    listed = entries(tmp_path)
    job = Manifest.create(path, listed, command="separate", arguments=["songs"])
    job.record(listed[0].song, "failed", reason="cannot be decoded")
    job.record(listed[0].song, "done", checksum="sha256:00")
    job.record(listed[1].song, "failed", reason="cannot be decoded")
    job.summarise({"done": 1})

    again = Manifest.load(path)
    assert again.header["arguments"] == ["songs"]
    assert [e.state for e in again.entries.values()] == ["done", "failed", "pending"]
    assert again.entries[listed[0].song].result == {"checksum": "sha256:00"}
    assert again.counts() == {"pending": 1, "done": 1, "failed": 1}


def test_a_torn_last_line_is_ignored_and_the_next_line_starts_clean(tmp_path: Path) -> None:
    path = tmp_path / "job.jsonl"
    listed = entries(tmp_path)
    Manifest.create(path, listed)
    with open(path, "a") as handle:  # a job killed while writing a result
        handle.write('{"song": "' + listed[2].song + '", "state": "do')

    job = Manifest.load(path)
    assert job.counts() == {"pending": 3, "done": 0, "failed": 0}
    job.record(listed[2].song, "done", checksum="sha256:11")
    assert Manifest.load(path).entries[listed[2].song].state == "done"


def test_a_manifest_is_never_overwritten_nor_another_file_taken_for_one(tmp_path: Path) -> None:
    path = tmp_path / "job.jsonl"
    Manifest.create(path, entries(tmp_path))
    with pytest.raises(StemkitError, match="already exists"):
        Manifest.create(path, [])
    other = tmp_path / "songs.txt"
    other.write_text("a.wav\nb.wav\n")
    with pytest.raises(StemkitError, match="not a stemkit manifest"):
        Manifest.load(other)


def test_the_checksum_covers_names_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"1")
    (tmp_path / "b.wav").write_bytes(b"2")
    first = folder_checksum(tmp_path, ["b.wav", "a.wav"])
    assert first == folder_checksum(tmp_path, ["a.wav", "b.wav"])
    (tmp_path / "b.wav").write_bytes(b"3")
    assert folder_checksum(tmp_path, ["a.wav", "b.wav"]) != first
