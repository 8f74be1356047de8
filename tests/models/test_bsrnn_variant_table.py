"""The BSRNN replication's variant table: every published row is a grid variant of its size.

Each row's model is built from ``configs/grids/bsrnn_variants.yaml`` itself (on the meta device:
shapes only) and its parameter count compared with the one the study published
(``configs/published/bsrnn_replication.yaml``, from reference/published-tables.md §1), so the
grid, the published file and this test cannot drift apart. The published counts are rounded to
0.1 M, hence the tolerance: within half a rounding step, 0.05 M, of ours.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stemkit import models
from stemkit.train.experiments import Grid, Variant, load_grid

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
GRID = load_grid(CONFIGS / "grids" / "bsrnn_variants.yaml")
TINY = load_grid(CONFIGS / "grids" / "bsrnn_variants_tiny.yaml")
assert GRID.published is not None
PUBLISHED = GRID.published.rows
#: Rows of ours that the published table does not have.
ADDITIONS = ["gru", "conv1d", "simo", "simo_bsrnn_opt"]


def _millions(grid: Grid, variant: Variant) -> float:
    config = grid.config(variant)
    with torch.device("meta"):
        model = models.build(config.model.name, sources=config.data.sources, **config.model.kwargs)
    return sum(p.numel() for p in model.parameters()) / 1e6


def test_the_grid_has_all_21_published_rows_in_order_then_the_additions() -> None:
    names = [variant.name for variant in GRID.variants]
    assert len(PUBLISHED) == 21
    assert names == [*PUBLISHED, *ADDITIONS]


@pytest.mark.parametrize("variant", GRID.variants[: len(PUBLISHED)], ids=lambda v: v.name)
def test_every_row_has_the_published_parameter_count(variant: Variant) -> None:
    published = PUBLISHED[variant.name]["parameters_m"]
    assert _millions(GRID, variant) == pytest.approx(published, abs=0.05), variant.name


def test_the_tiny_grid_has_the_same_rows_changing_the_same_settings() -> None:
    """Each tiny row overrides the same keys as its full-size row (only the values scale)."""
    assert [v.name for v in TINY.variants] == [v.name for v in GRID.variants]
    assert TINY.published is not None and TINY.published.rows == PUBLISHED
    for full, tiny in zip(GRID.variants, TINY.variants, strict=True):
        keys = [{item.split("=")[0] for item in v.overrides} for v in (full, tiny)]
        assert keys[0] == keys[1], full.name


def test_the_rows_differ_from_the_base_row_where_the_study_says() -> None:
    configs = {v.name: GRID.config(v) for v in GRID.variants}
    base = configs["bsrnn"]
    assert (base.data.sampler, base.data.sad.silence, base.optim.loss) == ("sad", "all", "tf_l1")
    assert (base.optim.monitor, base.optim.patience) == ("valid_usdr", 10)
    assert configs["accumulate_grad"].optim.accumulate == 2
    assert configs["monitor_loss"].optim.monitor == "valid_loss"
    assert configs["loss_time"].optim.loss == "l1"
    assert configs["loss_stft"].optim.loss == "stft_l1"
    assert configs["bsrnn_large_p30"].optim.patience == 30
    assert configs["silent_target"].data.sad.silence == "target"
    for name in ("no_sad", "bsrnn_opt_notac", "bsrnn_opt"):
        assert configs[name].data.sampler == "uniform", name
    assert configs["tac_tanh"].model.kwargs["tac_activation"] == "tanh"
    assert configs["multi_head"].model.kwargs["n_heads_seq"] == 2
    assert GRID.subset == "valid" and GRID.published.metric == "uSDR"
