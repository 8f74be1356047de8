"""Importing the BSRNN replication's Lightning checkpoints (oBSRNN) without its code.

The replication saves, per target, a Lightning checkpoint: a pickled dict whose
``state_dict`` holds its ``BSRNN`` module's tensors under its own names and whose
``hyper_parameters`` hold the constructor arguments, three of them OmegaConf containers. Here
such files are written from stemkit models: each network's tensors under the replication's
names (the templates below, written for this test from the replication's module layout:
``BN.{k}.0`` GroupNorm and ``.1`` projection, ``separator.{r}.time_net``/``band_net`` residual
RNNs with the RNN as ``main_layer``, ``tac_module.{transform,average,concat}.{0,1}`` with one
PReLU saved under all three, ``attn_block.attn_conv_{Q,K,V}_{h}`` and ``attn_concat_proj`` with
``gamma``/``beta`` layer norms, ``maskers.{m}.mask.{k}``, the STFT windows as buffers), the
hyper-parameters as real OmegaConf objects, and Lightning's other entries beside them.

Checks: the converted model is the source model (same settings, same stems bit for bit), for
per-target files (plain, TAC with PReLU and attention, naive stereo) and a SIMO file with the
residual last target; the CLI verb; every setting stemkit's model cannot hold, inconsistent
files and a malicious pickle refused in one line naming the file, with nothing run. Parity with
the replication's own code (not installable: GitHub only) is measured by ``bench/speed.py
--obsrnn-src DIR`` (bench/results/speed.md, ``diff``).
"""

from __future__ import annotations

import collections
import os
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor

from stemkit.artifacts.checkpoint import load_checkpoint
from stemkit.artifacts.obsrnn import convert_obsrnn
from stemkit.artifacts.resolve import load_model
from stemkit.cli import main as cli
from stemkit.errors import CheckpointError
from stemkit.models import build
from stemkit.models.bsrnn import BSRNN

SMALL = {"n_features": 16, "n_layers": 2, "fac_mask": 2}

#: stemkit prefix → the replication's, one network; ``{i}`` is the block, band or masker index
#: that follows the first part of the prefix.
TEMPLATES = (
    ("band_split.norms.{i}.", "BN.{i}.0."),
    ("band_split.projections.{i}.", "BN.{i}.1."),
    ("blocks.{i}.time_model.model.", "separator.{i}.time_net.main_layer."),
    ("blocks.{i}.band_model.model.", "separator.{i}.band_net.main_layer."),
    ("blocks.{i}.time_model.", "separator.{i}.time_net."),
    ("blocks.{i}.band_model.", "separator.{i}.band_net."),
    ("blocks.{i}.tac.transform.", "separator.{i}.tac_module.transform.0."),
    ("blocks.{i}.tac.average.", "separator.{i}.tac_module.average.0."),
    ("blocks.{i}.tac.concat.", "separator.{i}.tac_module.concat.0."),
    ("blocks.{i}.attention.output.", "separator.{i}.attn_block.attn_concat_proj."),
    ("maskers.{i}.bands.", "maskers.{i}.mask."),
)
HEADS = {"queries": "Q", "keys": "K", "values": "V"}


def _replication_names(state: dict[str, Tensor], n_fft: int) -> dict[str, Tensor]:
    """``BandSplitNetwork`` tensors under the replication's ``BSRNN`` names."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "blocks" and parts[2] == "tac" and parts[3] == "activation":
            for layer in ("transform", "average", "concat"):  # one PReLU, saved thrice
                out[f"separator.{parts[1]}.tac_module.{layer}.1.{parts[-1]}"] = value
            continue
        if parts[0] == "blocks" and parts[3] in HEADS:
            name = f"separator.{parts[1]}.attn_block.attn_conv_{HEADS[parts[3]]}_{parts[4]}."
            rest = ".".join(parts[5:])
        else:
            for ours, theirs in TEMPLATES:
                index = parts[ours.split(".").index("{i}")]
                prefix = ours.format(i=index)
                if key.startswith(prefix):
                    name, rest = theirs.format(i=index), key[len(prefix) :]
                    break
            else:
                raise AssertionError(f"no template for {key}")
        if ".attn_block." in name and rest.startswith("2."):
            rest = {"2.weight": "2.gamma", "2.bias": "2.beta"}[rest]
        out[name + rest] = value
    window = torch.hann_window(n_fft)
    return {**out, "stft.transf.window": window, "istft.transf.window": window}


def _hyper_parameters(model: BSRNN, targets: list[str], **overrides: Any) -> dict[str, Any]:
    kwargs = model.init_kwargs
    hparams: dict[str, Any] = {
        # the three configuration groups the replication's module takes first (OmegaConf)
        "cfg_optim": OmegaConf.create({"algo": "adam", "lr": 0.001, "loss_type": "L1"}),
        "cfg_scheduler": OmegaConf.create({"name": "plateau", "factor": 0.5}),
        "cfg_eval": OmegaConf.create({"device": "cpu", "segment_len": 10, "overlap": 0.1}),
        "targets": targets,
        "sample_rate": 44100,
        "n_fft": 2048,
        "n_hop": 512,
        "nb_channels": 2,
        "feature_dim": kwargs["n_features"],
        "joint_bandsplit": False,
        "num_repeat": kwargs["n_layers"],
        "fac_sep": 2,
        "time_layer": "lstm",
        "band_layer": "lstm",
        "bidirectional": True,
        "fac_mask": kwargs["fac_mask"],
        "mask_ctxt": 0,
        "subtract_last_trgt": kwargs.get("simo_other_residual", False),
        "n_heads": 1,
        "group_num": 1,
        "n_att_head": kwargs.get("attention_heads", 0),
        "attn_enc_dim": kwargs.get("attention_dim", 16),
        "stereo": {"mono": None}.get(kwargs.get("stereo", "mono"), kwargs.get("stereo")),
        "fac_tac": 3,
        "act_tac": kwargs.get("tac_activation", "tanh"),
        "eps": 1e-7,
        "name": "bsrnn",
    }
    return {**hparams, **overrides}


def _save(path: Path, state: dict[str, Tensor], hparams: dict[str, Any]) -> Path:
    """A checkpoint laid out as Lightning writes one."""
    torch.save(
        {
            "epoch": 12,
            "global_step": 4800,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": collections.OrderedDict(state),
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"ready": 12}}}},
            "callbacks": {"EarlyStopping{'monitor': 'val_sdr', 'mode': 'max'}": {"wait_count": 3}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.001}]}],
            "lr_schedulers": [{"last_epoch": 12, "best": torch.tensor(4.2)}],
            "hparams_name": "kwargs",
            "hyper_parameters": hparams,
        },
        path,
    )
    return path


def _per_target(tmp_path: Path, model: BSRNN, **overrides: Any) -> list[Path]:
    paths = []
    for source, network in model.networks.items():
        state = _replication_names(network.state_dict(), 2048)
        hparams = _hyper_parameters(model, [source], **overrides)
        paths.append(_save(tmp_path / f"{source}.ckpt", state, hparams))
    return paths


def _same_model(converted: BSRNN, source: BSRNN) -> None:
    assert converted.init_kwargs["sources"] == list(source.sources)
    defaults = {"stereo": "mono", "attention_heads": 0, "simo": False}
    for name in ("n_features", "n_layers", "fac_mask", "stereo", "attention_heads", "simo"):
        expected = source.init_kwargs.get(name, defaults.get(name))
        assert converted.init_kwargs[name] == expected, name
    mixture = 0.2 * torch.randn(1, 2, 30000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        # the same tensors in the same modules: the same stems, bit for bit
        assert torch.equal(converted(mixture), source.eval()(mixture))


def _perturbed(model: BSRNN) -> BSRNN:
    """``model`` with every tensor moved off its initial value (norm gains start at 1)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"stereo": "tac", "tac_activation": "prelu", "attention_heads": 2, "attention_dim": 4},
        {"stereo": "naive"},
    ],
    ids=["plain", "tac-prelu-attention", "naive"],
)
def test_per_target_files_convert_to_the_same_model(tmp_path: Path, extra: dict[str, Any]) -> None:
    torch.manual_seed(0)
    source = _perturbed(build("bsrnn", sources=["vocals", "bass"], **SMALL, **extra))
    converted = convert_obsrnn(_per_target(tmp_path, source))
    _same_model(converted, source)


def test_a_simo_file_converts_with_its_residual_target(tmp_path: Path) -> None:
    torch.manual_seed(0)
    sources = ["vocals", "drums", "bass", "other"]
    kwargs = {**SMALL, "simo": True, "simo_other_residual": True, "stereo": "tac"}
    source = _perturbed(build("bsrnn", sources=sources, **kwargs))
    state = _replication_names(source.networks["joint"].state_dict(), 2048)
    path = _save(tmp_path / "separator.ckpt", state, _hyper_parameters(source, sources))
    converted = convert_obsrnn([path])
    assert converted.simo and converted.simo_other_residual
    _same_model(converted, source)


def test_the_cli_writes_a_checkpoint_that_separates(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = _perturbed(build("bsrnn", sources=["vocals", "other"], **SMALL))
    paths = _per_target(tmp_path, source)
    out = tmp_path / "obsrnn.pt"
    assert cli.main(["models", "import-obsrnn", *map(str, paths), "-o", str(out)]) == 0
    payload = load_checkpoint(out)
    record = payload["provenance"]["obsrnn_import"]
    assert [Path(file["path"]).name for file in record["files"]] == ["vocals.ckpt", "other.ckpt"]
    model = load_model(str(out))
    mixture = 0.2 * torch.randn(1, 2, 20000)
    with torch.no_grad():
        assert torch.equal(model(mixture), source(mixture))


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"mask_ctxt": 1}, "mask_ctxt=1"),
        ({"bidirectional": False}, "bidirectional=False"),
        ({"group_num": 4}, "group_num=4"),
        ({"eps": 1e-8}, "eps=1e-08"),
        ({"stereo": "wide"}, "stereo='wide'"),
        ({"time_layer": "mamba"}, "time_layer='mamba'"),
    ],
)
def test_settings_stemkit_cannot_hold_are_refused(
    tmp_path: Path, override: dict[str, Any], named: str
) -> None:
    source = build("bsrnn", sources=["vocals"], **SMALL)
    paths = _per_target(tmp_path, source, **override)
    with pytest.raises(CheckpointError, match=re.escape(f"vocals.ckpt: {named}")):
        convert_obsrnn(paths)


def test_inconsistent_or_foreign_files_are_refused(tmp_path: Path) -> None:
    small = build("bsrnn", sources=["vocals"], **SMALL)
    wider = build("bsrnn", sources=["bass"], **{**SMALL, "n_features": 32})
    (vocals,) = _per_target(tmp_path, small)
    (bass,) = _per_target(tmp_path, wider)
    with pytest.raises(CheckpointError, match=r"bass\.ckpt: its settings differ"):
        convert_obsrnn([vocals, bass])
    with pytest.raises(CheckpointError, match="target 'vocals' given twice"):
        convert_obsrnn([vocals, vocals])
    simo = _save(
        tmp_path / "separator.ckpt",
        {},
        _hyper_parameters(small, ["vocals", "bass"]),
    )
    with pytest.raises(CheckpointError, match=r"separator\.ckpt: a multi-target .* give it alone"):
        convert_obsrnn([simo, vocals])

    state = _replication_names(small.networks["vocals"].state_dict(), 2048)
    hparams = _hyper_parameters(small, ["vocals"])
    cases = {
        "extra.ckpt": ({**state, "separator.0.gate.weight": torch.zeros(2)}, hparams),
        "window.ckpt": ({**state, "stft.transf.window": torch.ones(2048)}, hparams),
        "missing.ckpt": (
            {k: v for k, v in state.items() if not k.startswith("maskers.")},
            hparams,
        ),
    }
    messages = {
        "extra.ckpt": "extra.ckpt: separator.0.gate.weight: not a tensor of the replication's",
        "window.ckpt": "window.ckpt: stft.transf.window is not the periodic Hann window",
        "missing.ckpt": "missing.ckpt: its weights do not fit model 'bsrnn' (",
    }
    for name, (case_state, case_hparams) in cases.items():
        path = _save(tmp_path / name, case_state, case_hparams)
        with pytest.raises(CheckpointError, match=re.escape(messages[name])):
            convert_obsrnn([path])
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": state}, bare)
    with pytest.raises(CheckpointError, match=r"bare\.ckpt: the checkpoint has no hyper_param"):
        convert_obsrnn([bare])


class _Payload:
    """Unpickling this runs ``os.system``: the restricted unpickler must refuse it."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, ("touch obsrnn-pwned",)


def test_a_malicious_checkpoint_is_refused_without_running_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "vocals.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"targets": _Payload()}}, path)
    with pytest.raises(CheckpointError, match=r"vocals\.ckpt: not loaded: refused to resolve"):
        convert_obsrnn([path])
    assert not (tmp_path / "obsrnn-pwned").exists()
    assert cli.main(["models", "import-obsrnn", str(path), "-o", str(tmp_path / "out.pt")]) == 2
    assert not (tmp_path / "out.pt").exists()
