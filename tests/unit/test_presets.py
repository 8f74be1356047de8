"""Every preset and grid in ``configs/`` resolves against today's options and builds its model.

Presets are the user's entry point to each recipe; one that names a removed option, a wrong
type or a model keyword that does not exist must fail here, not at the start of a GPU run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stemkit import models
from stemkit.train.config import resolve_config
from stemkit.train.experiments import ORACLES, load_grid

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PRESETS = sorted(CONFIGS.glob("*.yaml"))
GRIDS = sorted((CONFIGS / "grids").glob("*.yaml"))


def test_there_is_a_preset_for_every_trainable_model() -> None:
    names = {resolve_config(path).model.name for path in PRESETS}
    assert {"umx", "xumx", "bsrnn", "shnet", "demucs", "convtasnet"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_resolves_and_builds(path: Path) -> None:
    config = resolve_config(path)
    # On the meta device: paper-size models (Demucs: 648 M parameters) cost no memory.
    with torch.device("meta"):
        model = models.build(config.model.name, sources=config.data.sources, **config.model.kwargs)
    assert list(model.sources)[: len(config.data.sources)] == list(config.data.sources)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("path", GRIDS, ids=lambda p: p.stem)
def test_every_grid_variant_resolves_and_builds(path: Path) -> None:
    grid = load_grid(path)
    for variant in grid.variants:
        config = grid.config(variant)
        with torch.device("meta"):
            model = models.build(
                config.model.name, sources=config.data.sources, **config.model.kwargs
            )
        # an oracle row (the IRM of the Demucs study) is scored, not trained: no parameters
        trained = config.model.name not in ORACLES
        assert (sum(p.numel() for p in model.parameters()) > 0) == trained, variant.name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["umx.yaml"], r"'umx.yaml' is not a KEY=VALUE override \(a YAML preset goes after -c"),
        (["optim.nosuch=1"], r"Key 'nosuch' not in 'OptimConfig' \(key optim.nosuch\)$"),
        (["optim.lr=abc"], r"could not be converted to Float \(key optim.lr\)$"),
    ],
)
def test_a_bad_override_is_one_line_naming_the_key(overrides: list[str], message: str) -> None:
    from stemkit.errors import StemkitError

    with pytest.raises(StemkitError, match=message) as caught:
        resolve_config(None, overrides)
    assert "\n" not in str(caught.value)
