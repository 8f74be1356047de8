"""``data.augment=demucs``: the Demucs v1 batch augmentation inside the training loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stemkit.artifacts.checkpoint import load_checkpoint
from stemkit.data.demucs_augment import DemucsAugment
from stemkit.data.factory import training_dataset
from stemkit.errors import StemkitError
from stemkit.train.config import excerpt_seconds, resolve_config
from stemkit.train.loop import batch_augmentation, train

TINY_DEMUCS = [
    "model.name=demucs",
    "model.input_statistics=false",
    "model.kwargs={channels: 4, depth: 3, lstm_layers: 1}",
    "optim.loss=l1",
    "optim.batch_size=4",
    "data.segment=0.5",
    "data.samples_per_track=4",
    "data.random_mix=false",
    "data.augment=demucs",
    "data.shift=0.1",
    "data.remix_group=2",
    "ledger.codecarbon=false",
]


def test_excerpts_are_drawn_longer_by_the_shift_and_cropped_back(hq_tree: Path) -> None:
    data = resolve_config(None, [f"data.root={hq_tree}", *TINY_DEMUCS]).data
    assert excerpt_seconds(data) == pytest.approx(0.6)
    dataset = training_dataset(data, seed=0)
    stems, _ = dataset[0]
    rate = dataset.sample_rate
    assert stems.shape[-1] == round(0.6 * rate)
    augment = batch_augmentation(data, rate)
    assert isinstance(augment, DemucsAugment)
    assert (augment.shift, augment.group_size) == (round(0.1 * rate), 2)
    batch = torch.stack([dataset[i][0] for i in range(4)])
    out = augment(batch, torch.Generator().manual_seed(0))
    assert out.shape == (*batch.shape[:-1], round(0.5 * rate))
    # Sign flips, swaps, shifts and remixing move samples around but never scale them: every
    # output sample of a source is ± some input sample of the same source.
    for source in range(batch.shape[1]):
        values = set(batch[:, source].abs().flatten().tolist())
        assert set(out[:, source].abs().flatten().tolist()) <= values
    assert batch_augmentation(resolve_config(None, []).data, rate) is None


def test_training_with_the_augmentation_is_replayable(hq_tree: Path, tmp_path: Path) -> None:
    def run(name: str) -> dict[str, torch.Tensor]:
        overrides = [f"data.root={hq_tree}", f"run_dir={tmp_path / name}", "optim.epochs=2"]
        train(resolve_config(None, [*overrides, *TINY_DEMUCS]), progress=False)
        return load_checkpoint(tmp_path / name / "last.pt")["state_dict"]

    first, second = run("a"), run("b")
    assert all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.augment=mixup", "data.augment"),
        ("data.shift=-1", "data.shift"),
        ("data.remix_group=0", "data.remix_group"),
    ],
)
def test_bad_augmentation_options_name_the_key(override: str, key: str) -> None:
    with pytest.raises(StemkitError, match=key.replace(".", r"\.")):
        resolve_config(None, [override])
