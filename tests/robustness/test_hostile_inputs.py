"""A sweep of hostile inputs through the command line, as a user would type them.

Each case must end with a non-zero exit status and one ``stemkit: error:`` line naming what
was wrong (no traceback: any exception other than a handled one fails the test), must leave no
output folder or hidden leftover behind, and must not touch any file outside the output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemkit.cli.main import main

RATE = 44100


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content hash (folders as ``dir``)."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        found[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture
def songs(tmp_path: Path) -> Path:
    """A folder of good and broken inputs."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    good = 0.1 * rng.standard_normal((RATE, 2)).astype(np.float32)
    sf.write(folder / "good.wav", good, RATE)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "garbage.wav").write_bytes(b"RIFF" + bytes(rng.integers(0, 255, 400, np.uint8)))
    (folder / "notes.txt").write_text("not audio\n")
    (folder / "song.xyz").write_bytes(b"\0" * 100)
    (folder / "a_folder.wav").mkdir()
    nan = good.copy()
    nan[100, 0] = np.nan
    sf.write(folder / "nan.wav", nan, RATE, subtype="FLOAT")
    sf.write(folder / "silent_zero_length.wav", np.zeros((0, 2), np.float32), RATE)
    sf.write(folder / "six.wav", 0.1 * rng.standard_normal((RATE, 6)), RATE)
    sf.write(folder / "one_sample.wav", good[:1], RATE)
    (folder / "garbage.pt").write_bytes(b"PK\x03\x04" + b"\0" * 64)
    return folder


SEPARATE_CASES: list[tuple[str, list[str], str]] = [
    ("empty file", ["{in}/empty.wav"], "empty.wav"),
    ("garbage bytes", ["{in}/garbage.wav"], "garbage.wav"),
    ("text file", ["{in}/notes.txt"], "notes.txt"),
    ("unknown format", ["{in}/song.xyz"], "song.xyz"),
    ("folder as song", ["{in}/a_folder.wav"], "a_folder.wav"),
    ("missing file", ["{in}/missing.wav"], "missing.wav"),
    ("NaN samples", ["{in}/nan.wav"], "nan.wav"),
    ("no samples", ["{in}/silent_zero_length.wav"], "silent_zero_length.wav"),
    ("six channels", ["{in}/six.wav"], "six.wav"),
    ("one sample, default model", ["{in}/one_sample.wav", "--model", "default"], "one_sample"),
    ("corrupt checkpoint", ["{in}/good.wav", "--model", "{in}/garbage.pt"], "garbage.pt"),
    ("missing checkpoint", ["{in}/good.wav", "--model", "{in}/nothing.pt"], "nothing.pt"),
    ("unknown model", ["{in}/good.wav", "--model", "no-such-model"], "no-such-model"),
    ("negative segment", ["{in}/good.wav", "--segment", "-1"], "segment"),
    ("NaN segment", ["{in}/good.wav", "--segment", "nan"], "segment"),
    ("overlap above 0.5", ["{in}/good.wav", "--overlap", "2"], "overlap"),
    ("zero batch", ["{in}/good.wav", "--batch-size", "0"], "batch_size"),
    ("negative shifts", ["{in}/good.wav", "--shifts", "-1"], "shifts"),
    ("unknown stem", ["{in}/good.wav", "--stems", "kazoo"], "kazoo"),
    ("float flac", ["{in}/good.wav", "--format", "flac", "--bits", "32"], "flac"),
    ("bad device", ["{in}/good.wav", "--device", "warp-drive"], "warp-drive"),
    ("zero threads", ["{in}/good.wav", "--threads", "0"], "threads"),
]


@pytest.mark.parametrize(
    ("case", "argv", "named"), SEPARATE_CASES, ids=[c[0] for c in SEPARATE_CASES]
)
def test_separate_refuses_clearly_and_leaves_nothing(
    case: str,
    argv: list[str],
    named: str,
    songs: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    before = _snapshot(songs)
    model = [] if "--model" in argv else ["--model", "identity"]
    args = ["separate", *(a.format(**{"in": songs}) for a in argv), *model, "-o", str(out), "-q"]
    status = main(args)
    err = capsys.readouterr().err
    assert status != 0, case
    errors = [line for line in err.splitlines() if line.startswith("stemkit: error:")]
    assert errors, f"{case}: no error line in {err!r}"
    assert named in errors[0], f"{case}: {errors[0]!r} does not name {named!r}"
    assert "Traceback" not in err
    assert _snapshot(songs) == before, f"{case}: an input file was touched"
    # nothing that looks like a result: no song folder, no hidden leftover
    left = [p for p in out.rglob("*")] if out.exists() else []
    assert left == [], f"{case}: left {left}"


def test_a_bad_song_in_a_batch_does_not_stop_the_good_ones(
    songs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    names = ["garbage.wav", "good.wav", "nan.wav"]
    status = main(
        ["separate", *(str(songs / n) for n in names), "--model", "identity", "-o", str(out), "-q"]
    )
    err = capsys.readouterr().err
    assert status == 1
    assert sorted(p.name for p in out.iterdir()) == ["good"]
    assert sum(line.startswith("stemkit: error:") for line in err.splitlines()) == 2
    assert "Traceback" not in err


def _hq_tree(root: Path, make_stems: Callable[..., np.ndarray], *, drop: str | None) -> Path:
    track = root / "test" / "Song A"
    track.mkdir(parents=True)
    stems = make_stems(3, seed=1)
    for name, stem in zip(("vocals", "drums", "bass", "other"), stems, strict=True):
        if name != drop:
            sf.write(track / f"{name}.wav", stem.T, RATE, subtype="FLOAT")
    sf.write(track / "mixture.wav", stems.sum(axis=0).T, RATE, subtype="FLOAT")
    return root


def _bad_roots(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Dataset folders a loader must refuse, with what the error must name."""
    empty = tmp_path / "empty"
    empty.mkdir()
    flat = tmp_path / "flat"
    flat.mkdir()
    sf.write(flat / "mixture.wav", np.zeros((RATE, 2), np.float32), RATE)
    return {
        "missing folder": (tmp_path / "nowhere", "nowhere"),
        "empty folder": (empty, "empty"),
        "wrong layout": (flat, "flat"),
    }


def _assert_one_clear_error(case: str, status: int, err: str, named: str) -> None:
    assert status != 0, case
    errors = [line for line in err.splitlines() if line.startswith("stemkit: error:")]
    assert errors and named in errors[0], f"{case}: {err!r}"
    assert "Traceback" not in err


def test_evaluate_refuses_bad_datasets_clearly(
    tmp_path: Path, make_stems: Callable[..., np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    cases = _bad_roots(tmp_path)
    cases["missing stem"] = (_hq_tree(tmp_path / "missing_stem", make_stems, drop="bass"), "bass")
    for case, (data, named) in cases.items():
        out = tmp_path / f"scores-{case.replace(' ', '_')}"
        status = main(["evaluate", "--model", "irm2", "--data", str(data), "-o", str(out)])
        _assert_one_clear_error(case, status, capsys.readouterr().err, named)
        assert not any(out.rglob("*.json")) if out.exists() else True, case


def test_train_refuses_bad_datasets_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = _bad_roots(tmp_path)
    cases["unknown format"] = (tmp_path / "empty", "data.format")
    for case, (data, named) in cases.items():
        run_dir = tmp_path / f"run-{case.replace(' ', '_')}"
        extra = ["data.format=musdb_wav"] if case == "unknown format" else []
        argv = ["train", "--data", str(data), "--run-dir", str(run_dir), "--quiet", *extra]
        status = main([*argv, "model.name=umx", "optim.epochs=1"])
        _assert_one_clear_error(case, status, capsys.readouterr().err, named)
        assert not any(run_dir.glob("*.pt")) if run_dir.exists() else True, case
