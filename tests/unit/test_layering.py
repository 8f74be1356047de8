"""The layers of the package: imports point down, separation never loads training, and
generic layers know models only through their contract (stemkit.models.base)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import soundfile as sf

from conftest import RATE, toy_stems

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "stemkit"

#: What each layer (a subpackage, or a top-level module) may import, besides itself. The root
#: package (``stemkit``: version, MUSDB_SOURCES) and ``errors`` are open to every layer.
FOUNDATION = {"stemkit", "errors"}
ALLOWED: dict[str, set[str]] = {
    # `stemkit.Separator` is stemkit.api, imported on first use (a module __getattr__)
    "stemkit": {"errors", "api"},
    "errors": set(),
    "runtime": set(),
    # time and energy of a span of work (Green Algorithms)
    "energy": set(),
    "audio": set(),
    "dsp": set(),
    "losses": set(),
    "metrics": {"dsp"},
    "data": {"audio"},
    "models": {"dsp", "losses", "audio"},
    "artifacts": {"models", "dsp", "losses", "audio"},
    "inference": {"models", "dsp", "audio"},
    # big jobs: the manifest, and the Ray worker pool (generic: it runs any function)
    "cluster": set(),
    "evaluation": {
        "cluster",
        "inference",
        "artifacts",
        "models",
        "data",
        "metrics",
        "dsp",
        "audio",
        "energy",
    },
    "train": {
        "evaluation",
        "inference",
        "artifacts",
        "models",
        "data",
        "metrics",
        "losses",
        "dsp",
        "audio",
        "energy",
    },
    # helpers of the command line: output folders and plots
    "outputs": set(),
    "plots": set(),
    # the Python API: read → separate → write, under the command line and the web service
    "api": {"inference", "artifacts", "models", "dsp", "audio", "outputs", "runtime", "energy"},
    # the local web service: the same API as the command line
    "web": {"api", "artifacts", "inference", "models", "metrics", "audio", "outputs", "runtime"},
    "cli": {
        "cluster",
        "web",
        "api",
        "train",
        "evaluation",
        "inference",
        "artifacts",
        "models",
        "data",
        "metrics",
        "losses",
        "dsp",
        "audio",
        "outputs",
        "plots",
        "runtime",
        "energy",
    },
    "__main__": {"cli"},
}

#: Generic layers: they may name models only through the contract and the registry.
GENERIC = ("inference", "train", "evaluation")
CONTRACT_MODULES = {"stemkit.models", "stemkit.models.base", "stemkit.models.registry"}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((name, path))
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every stemkit module ``path`` imports, at any depth (functions, TYPE_CHECKING)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "stemkit":
                # `from stemkit import models` names a subpackage; `MUSDB_SOURCES` the root
                for alias in node.names:
                    sub = PACKAGE / alias.name
                    is_module = sub.is_dir() or sub.with_suffix(".py").is_file()
                    target = f"stemkit.{alias.name}" if is_module else "stemkit"
                    found.append((node.lineno, target))
            elif node.module.startswith("stemkit."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("stemkit")]
    return found


def test_every_layer_is_in_the_table() -> None:
    layers = {_layer(name) for name, _ in _modules()}
    assert layers <= set(ALLOWED), f"add {sorted(layers - set(ALLOWED))} to ALLOWED"


def test_every_import_points_down_the_layers() -> None:
    wrong = []
    for name, path in _modules():
        source = _layer(name)
        for line, target in _imports(path):
            layer = _layer(target)
            if layer != source and layer not in ALLOWED[source] | FOUNDATION:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line}: {source} imports {target}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def _concrete_model_names() -> set[str]:
    """Classes defined in the model modules other than the contract and the registry."""
    names = set()
    for name, path in _modules():
        if _layer(name) != "models" or name in CONTRACT_MODULES:
            continue
        tree = ast.parse(path.read_text())
        names |= {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    return names


def test_generic_layers_name_no_model_class() -> None:
    concrete = _concrete_model_names()
    assert {"OpenUnmix", "Separator", "XUMX", "BSRNN", "HourglassSeparator"} <= concrete
    wrong = []
    for name, path in _modules():
        if _layer(name) not in GENERIC:
            continue
        where = path.relative_to(PACKAGE)
        for line, target in _imports(path):
            if _layer(target) == "models" and target not in CONTRACT_MODULES:
                wrong.append(f"{where}:{line}: imports {target}")
        for node in ast.walk(ast.parse(path.read_text())):
            named = (
                node.id
                if isinstance(node, ast.Name)
                else node.attr
                if isinstance(node, ast.Attribute)
                else None
            )
            if named in concrete:
                wrong.append(f"{where}:{node.lineno}: names {named}")
    assert not wrong, "generic layers must use the model contract only:\n" + "\n".join(wrong)


def test_separation_loads_nothing_of_training(tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    sf.write(song, toy_stems(2.0, seed=3).sum(axis=0).T, RATE)
    out = tmp_path / "out"
    program = (
        "import json, sys\n"
        "from stemkit.cli.main import main\n"
        f"status = main(['separate', {str(song)!r}, '-o', {str(out)!r}, '--quiet'])\n"
        "print(json.dumps({'status': status, 'modules': sorted(sys.modules)}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=300, check=True
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == 0, done.stderr
    assert sorted(p.name for p in (out / "song").glob("*.wav")) == [
        "bass.wav",
        "drums.wav",
        "other.wav",
        "vocals.wav",
    ]
    modules = report["modules"]
    assert "stemkit.artifacts.checkpoint" in modules  # the bundled model came through artifacts
    loaded = [
        m
        for m in modules
        if m == "stemkit.train"
        or m.startswith(("stemkit.train.", "lightning", "omegaconf", "tensorboard"))
    ]
    assert not loaded, f"separation imported training modules: {loaded}"
    # Ray (seconds to import) only with --ray
    assert not [m for m in modules if m == "ray" or m.startswith(("ray.", "stemkit.cluster"))]
