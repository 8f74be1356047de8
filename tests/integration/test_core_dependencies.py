"""``stemkit separate`` and the Python API need only the core dependencies (torch, numpy,
soundfile, soxr, tqdm): with every optional package made unimportable, they still work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import soundfile as sf

from conftest import RATE, toy_stems

#: Top-level modules of the extras ([train], [data], [eval], [energy]) and of the test tools.
OPTIONAL = (
    "matplotlib",
    "omegaconf",
    "lightning",
    "lightning_fabric",
    "yaml",
    "pretty_midi",
    "mido",
    "fluidsynth",
    "codecarbon",
    "tensorboard",
    "museval",
    "norbert",
    "mir_eval",
)

#: Runs in a fresh interpreter: a meta-path hook refuses the optional modules, then the command
#: line (as ``python -m stemkit``) and the API run; prints the modules that got imported.
PROGRAM = """
import importlib.abc, json, runpy, sys

BLOCKED = set(json.loads(sys.argv[1]))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: not a core dependency")
        return None

sys.meta_path.insert(0, Block())
try:
    import yaml  # the hook works: this must fail
    hooked = False
except ImportError:
    hooked = True
song, out = sys.argv[2], sys.argv[3]
statuses = []
for model in ("default", "identity"):
    sys.argv = ["stemkit", "separate", song, "-o", f"{out}/{model}", "--model", model, "-q"]
    try:
        runpy.run_module("stemkit", run_name="__main__")
    except SystemExit as done:
        statuses.append(done.code)

import soundfile, stemkit
audio, rate = soundfile.read(song, dtype="float32")
stems = stemkit.Separator.from_pretrained("default", device="cpu").separate(audio.T, rate)
report = {"hooked": hooked, "statuses": statuses, "stems": sorted(stems)}
print(json.dumps({**report, "modules": sorted(sys.modules)}))
"""


def test_separation_needs_only_the_core_dependencies(tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    sf.write(song, toy_stems(2.0, seed=7).sum(axis=0).T, RATE)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, json.dumps(OPTIONAL), str(song), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["hooked"]
    assert report["statuses"] == [0, 0], done.stderr
    assert report["stems"] == ["bass", "drums", "other", "vocals"]
    assert sorted(p.name for p in (out / "default" / "song").glob("*.wav")) == [
        "bass.wav",
        "drums.wav",
        "other.wav",
        "vocals.wav",
    ]
    assert [p.name for p in (out / "identity" / "song").glob("*.wav")] == ["mixture.wav"]
    loaded = [m for m in report["modules"] if m.split(".")[0] in OPTIONAL]
    assert not loaded, loaded
