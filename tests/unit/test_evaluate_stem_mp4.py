"""`stemkit evaluate` on MUSDB18's compressed release (.stem.mp4) and on the validation split."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import soundfile as sf
from test_stem_mp4 import full_decode, write_stem_mp4

from conftest import RATE, toy_stems
from stemkit.cli.main import main
from stemkit.data.musdb import MUSDB_VALID_TRACKS
from stemkit.data.stems_mp4 import STEM_STREAMS
from stemkit.evaluation import evaluate
from stemkit.models import build

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")

VALID_NAME = sorted(MUSDB_VALID_TRACKS)[0]


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same 1 s tracks as MUSDB18 (.stem.mp4) and, decoded, as MUSDB18-HQ (float WAV)."""
    mp4 = tmp_path_factory.mktemp("musdb18")
    jobs = [
        (mp4 / "train" / "Toy - A.stem.mp4", 1),
        (mp4 / "train" / f"{VALID_NAME}.stem.mp4", 2),
        (mp4 / "test" / "Toy - T.stem.mp4", 3),
        (mp4 / "test" / "Toy - U.stem.mp4", 4),
    ]
    for path, _ in jobs:
        path.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda job: write_stem_mp4(job[0], toy_stems(1.0, seed=job[1])), jobs))
    hq = tmp_path_factory.mktemp("musdb18hq")
    for path, _ in jobs:
        folder = hq / path.parent.name / path.name.removesuffix(".stem.mp4")
        folder.mkdir(parents=True)
        for stem, stream in STEM_STREAMS.items():
            # float32 WAV holds ffmpeg's float decode exactly, cut to the track's length (the
            # decoder's padding past the end is not audio): both layouts hold the same samples.
            audio = full_decode(path, stream)[:, :RATE]
            sf.write(folder / f"{stem}.wav", audio.T, RATE, subtype="FLOAT")
    return mp4, hq


def test_stem_mp4_release_scores_as_its_decoded_wav_twin(releases: tuple[Path, Path]) -> None:
    mp4, hq = releases
    compressed = evaluate(build("irm2"), mp4, "test", method="irm2").summary()
    decoded = evaluate(build("irm2"), hq, "test", method="irm2").summary()
    assert compressed["nb_tracks"] == decoded["nb_tracks"] == 2
    assert compressed["sources"] == decoded["sources"]
    # Not a vacuous equality: the oracle separates, far above the mixture baseline.
    for source in ("vocals", "drums", "bass", "other"):
        scores = compressed["sources"][source]
        assert scores["uSDR"] > scores["mixture_uSDR"] + 10, source


def test_cli_scores_the_validation_split_of_a_stem_mp4_release(
    releases: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mp4, _ = releases
    out = tmp_path / "scores"
    args = ["evaluate", "--model", "irm2", "--data", str(mp4), "--subset", "valid", "-o", str(out)]
    assert main(args) == 0
    # The official validation track only, from the train folder; nothing of test or train.
    assert sorted(p.name for p in (out / "valid").iterdir()) == [f"{VALID_NAME}.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nb_tracks"] == 1
    assert "irm2 on 1 track(s)" in capsys.readouterr().out


def test_cli_names_an_unreadable_stem_mp4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "musdb18" / "test" / "Broken.stem.mp4"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not an mp4 container")
    out = tmp_path / "scores"
    status = main(["evaluate", "--model", "irm2", "--data", str(broken.parents[1]), "-o", str(out)])
    assert status != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and str(broken) in error[0] and "Traceback" not in error[0]
    assert not (out / "test").exists()
