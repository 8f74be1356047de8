"""What a ``--model`` names, whether it may separate songs, and the line that tells the user.

``--model`` takes a checkpoint file, a bundled model (``default``), a catalogue model
(``umxhq``: published weights, fetched once and cached) or a registry name. Of the registry
names only ``identity`` (the mixture back, unchanged) separates without weights; every other
architecture built by name has random weights and would write noise with exit status 0, so
``stemkit separate`` refuses it unless ``--random-weights`` asks for exactly that (tests,
timing). A catalogue name is never untrained, even where it is also a registry name (``umx``);
``--random-weights`` then asks for the architecture instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stemkit.errors import StemkitError

#: Registry names that need no trained weights.
WEIGHTLESS: frozenset[str] = frozenset({"identity"})

#: What each bundled model was trained on, in the words its model card uses (the checkpoint
#: only records a data folder).
BUNDLED_NOTES: dict[str, str] = {
    "default": "Open-Unmix umx-synthmix-small, bundled; trained on generated songs only; "
    "expect weak results on real music",
}

_CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".ckpt"})


def is_checkpoint_file(spec: str) -> bool:
    """Whether ``--model spec`` names a checkpoint file (as :func:`load_model` decides)."""
    path = Path(spec)
    return path.suffix in _CHECKPOINT_SUFFIXES or path.is_file()


def is_bundled(spec: str) -> bool:
    """Whether ``spec`` is the name of a model bundled with stemkit."""
    from stemkit.artifacts import bundled_path

    if is_checkpoint_file(spec):
        return False
    try:
        bundled_path(spec)
    except StemkitError:
        return False
    return True


def is_catalogued(spec: str) -> bool:
    """Whether ``spec`` names a catalogue model (bundled, fetchable or not fetchable)."""
    from stemkit.artifacts import CATALOGUE

    return not is_checkpoint_file(spec) and spec in CATALOGUE


def is_untrained(spec: str, *, random_weights: bool = False) -> bool:
    """Whether ``--model spec`` builds a registered architecture with random weights.

    Args:
        spec: what ``--model`` named.
        random_weights: ``--random-weights`` was given, so a registry name that is also a
            catalogue name (``umx``) means the architecture.
    """
    from stemkit.api import is_untrained as untrained  # one rule for the CLI and the API

    return untrained(spec, random_weights=random_weights)


def refuse_untrained(spec: str) -> StemkitError:
    """The one-line refusal of an architecture without trained weights."""
    from stemkit.artifacts import CATALOGUE

    bundled = ", ".join(sorted(BUNDLED_NOTES))
    fetchable = ", ".join(name for name, e in CATALOGUE.items() if e.status == "fetchable")
    return StemkitError(
        f"--model {spec} has no trained weights: it would separate with random ones and write "
        f"noise; use a bundled model ({bundled}), a model with published weights ({fetchable}; "
        "fetched once, `stemkit models` lists them), a checkpoint file (from `stemkit train`, "
        "or `stemkit models import-openunmix`, `import-demucs-v1` or `import-xumx` for "
        "published files fetched by hand), or pass "
        "--random-weights to separate with random weights anyway (for testing)"
    )


def describe(spec: str, model: Any, *, random_weights: bool = False) -> str:
    """One line naming the model and what it was trained on, e.g. ``"model: default (…)"``.

    ``random_weights`` as for :func:`is_untrained`.
    """
    sources = list(getattr(model, "sources", []))
    shape = f"{len(sources)} stem(s) {', '.join(sources)} at {model.sample_rate} Hz"
    if is_untrained(spec, random_weights=random_weights):
        return f"model: {spec} with RANDOM weights (--random-weights): its stems are noise; {shape}"
    if is_bundled(spec):
        from stemkit.artifacts import bundled_path

        note = BUNDLED_NOTES.get(spec, _trained_on(bundled_path(spec)))
        return f"model: {spec} ({note}); {shape}"
    if is_checkpoint_file(spec):
        return f"model: {spec}: {_trained_on(Path(spec))}; {shape}"
    if spec in WEIGHTLESS:
        return f"model: {spec} (no weights: writes the mixture back unchanged); {shape}"
    if is_catalogued(spec):
        from stemkit.artifacts import get_entry

        entry = get_entry(spec)
        score = f"; published {entry.score.short()}" if entry.score else ""
        licence = f"; weights licence {entry.licence}" if entry.licence else ""
        return (
            f"model: {spec} ({entry.title}, published weights trained on {entry.trained_on}"
            f"{score}{licence}); {shape}"
        )
    return f"model: {spec} ({type(model).__name__}); {shape}"


def _trained_on(path: Path) -> str:
    """What the checkpoint at ``path`` records about its training data and code."""
    from stemkit.artifacts.checkpoint import load_checkpoint

    try:
        payload = load_checkpoint(path, verify=False)
    except StemkitError:
        return "training data not recorded"
    name = payload.get("model_name", "?")
    config = payload.get("config")
    data = config.get("data") if isinstance(config, dict) else None
    provenance = payload.get("provenance")
    provenance = provenance if isinstance(provenance, dict) else {}
    parts = [f"{name} checkpoint"]
    if isinstance(data, dict) and data.get("root"):
        layout = f", {data['format']} layout" if data.get("format") else ""
        parts.append(f"trained on {data['root']}{layout}")
    else:
        parts.append("training data not recorded")
    if provenance.get("data_fingerprint"):
        parts.append(f"data fingerprint {provenance['data_fingerprint']}")
    if provenance.get("git_commit"):
        parts.append(f"code {str(provenance['git_commit'])[:10]}")
    return ", ".join(parts)
