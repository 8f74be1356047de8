"""Importing official Open-Unmix weights: both file layouts, inferred sizes, exact outputs."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from stemkit.artifacts.checkpoint import load_checkpoint, model_from_checkpoint, sha256_of
from stemkit.artifacts.openunmix import (
    import_openunmix,
    load_openunmix_target,
    read_openunmix_target,
    target_name,
)
from stemkit.errors import CheckpointError, StemkitError

RATE = 44100
N_FFT, N_HOP, HIDDEN, MAX_BIN = 512, 128, 16, 186
NB_BINS = N_FFT // 2 + 1


def make_official(
    upstream: ModuleType,
    path: Path,
    seed: int,
    *,
    hidden: int = HIDDEN,
    nb_channels: int = 2,
    unidirectional: bool = False,
    legacy: bool = False,
) -> torch.nn.Module:
    """Save an upstream core with random weights as an official file would hold them."""
    torch.manual_seed(seed)
    model = upstream.OpenUnmix(
        nb_bins=NB_BINS,
        nb_channels=nb_channels,
        hidden_size=hidden,
        max_bin=MAX_BIN,
        unidirectional=unidirectional,
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=gen))
            if name in {"input_scale", "output_scale"}:
                param.abs_()
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(0.2 * torch.randn(buf.shape, generator=gen))
            elif name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))
    state = model.state_dict()
    if legacy:  # the 2019 release also stored these
        state["sample_rate"] = torch.tensor(RATE)
        state["stft.window"] = torch.hann_window(N_FFT)
        state["transform.0.window"] = torch.hann_window(N_FFT)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return model.eval()


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


def test_target_name() -> None:
    assert target_name("models/vocals-b62c91ce.pth") == "vocals"
    assert target_name("drums.pth") == "drums"
    assert target_name("lead-vocals.pth") == "lead-vocals"


@pytest.mark.parametrize("legacy", [False, True], ids=["current", "v1.0.0"])
def test_read_infers_the_configuration(upstream: ModuleType, tmp_path: Path, legacy: bool) -> None:
    path = tmp_path / "vocals-0123abcd.pth"
    ref = make_official(upstream, path, seed=0, legacy=legacy)
    weights = read_openunmix_target(path)
    assert weights.target == "vocals"
    assert weights.layout == ("v1.0.0" if legacy else "current")
    assert weights.core_kwargs() == {
        "nb_bins": NB_BINS,
        "nb_channels": 2,
        "hidden_size": HIDDEN,
        "nb_layers": 3,
        "unidirectional": False,
        "max_bin": MAX_BIN,
    }
    assert weights.n_fft == N_FFT
    assert weights.sample_rate == (RATE if legacy else None)
    assert weights.sha256 == sha256_of(path)
    assert "sample_rate" not in weights.state_dict and "stft.window" not in weights.state_dict
    # the loaded core computes what the upstream core computes
    core = load_openunmix_target(path)
    x = torch.rand(2, 2, NB_BINS, 9, generator=torch.Generator().manual_seed(1)) * 3
    with torch.no_grad():
        assert _rel_err(core(x), ref(x)) < 1e-5


def test_read_mono_unidirectional(upstream: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "speech.pth"
    make_official(upstream, path, seed=3, hidden=12, nb_channels=1, unidirectional=True)
    weights = read_openunmix_target(path)
    assert (weights.nb_channels, weights.hidden_size, weights.unidirectional) == (1, 12, True)


@pytest.mark.parametrize("niter", [0, 1])
def test_import_matches_upstream_separator(
    upstream: ModuleType, tmp_path: Path, niter: int
) -> None:
    refs = {
        "vocals": make_official(upstream, tmp_path / "a" / "vocals.pth", seed=10),
        "drums": make_official(upstream, tmp_path / "a" / "drums-5e2f0a11.pth", seed=11),
        "bass": make_official(upstream, tmp_path / "a" / "bass.pth", seed=12, legacy=True),
    }
    (tmp_path / "a" / "separator.json").write_text(
        json.dumps({"nfft": N_FFT, "nhop": N_HOP, "sample_rate": RATE, "nb_channels": 2})
    )
    paths = [tmp_path / "a" / name for name in ("vocals.pth", "drums-5e2f0a11.pth", "bass.pth")]
    out = import_openunmix(paths, tmp_path / "umx.pt", niter=niter, wiener_win_len=20)
    payload = load_checkpoint(out)
    kwargs = payload["model_kwargs"]
    assert payload["sources"] == ["vocals", "drums", "bass"]
    assert (kwargs["n_fft"], kwargs["n_hop"], kwargs["sample_rate"]) == (N_FFT, N_HOP, RATE)
    assert kwargs["bandwidth"] == 16000.0  # max_bin 186 at 44.1 kHz / 512
    record = payload["provenance"]["openunmix_import"]
    assert [f["sha256"] for f in record["files"]] == [sha256_of(p) for p in paths]
    assert [f["layout"] for f in record["files"]] == ["current", "current", "v1.0.0"]
    assert record["assumed"] == []

    ours = model_from_checkpoint(payload)
    theirs = upstream.Separator(
        refs, niter=niter, sample_rate=RATE, n_fft=N_FFT, n_hop=N_HOP, wiener_win_len=20
    ).eval()
    mixture = torch.randn(2, 2, RATE, generator=torch.Generator().manual_seed(5))
    mixture *= torch.tensor([0.3, 2.0])[:, None, None]
    with torch.no_grad():
        mine, ref = ours(mixture), theirs(mixture)
    assert mine.shape == ref.shape == (2, 3, 2, RATE)
    for item in range(2):
        assert _rel_err(mine[item], ref[item]) < 1e-5


def test_metadata_and_defaults(upstream: ModuleType, tmp_path: Path) -> None:
    make_official(upstream, tmp_path / "vocals.pth", seed=0)
    make_official(upstream, tmp_path / "other.pth", seed=1)
    paths = [tmp_path / "vocals.pth", tmp_path / "other.pth"]
    # nothing recorded: upstream defaults, noted in the provenance
    payload = load_checkpoint(import_openunmix(paths, tmp_path / "plain.pt"))
    assert payload["model_kwargs"]["n_hop"] == N_FFT // 4
    assert payload["provenance"]["openunmix_import"]["assumed"] == [
        "sample_rate=44100",
        "n_hop=128",
    ]
    # a <target>.json of the training script, and an explicit override
    args = {"nfft": N_FFT, "nhop": 256, "hidden_size": HIDDEN, "nb_channels": 2, "bandwidth": 16000}
    (tmp_path / "vocals.json").write_text(json.dumps({"args": args, "best_loss": 0.1}))
    payload = load_checkpoint(import_openunmix(paths, tmp_path / "meta.pt", targets=["v", "o"]))
    assert payload["model_kwargs"]["n_hop"] == 256 and payload["sources"] == ["v", "o"]
    payload = load_checkpoint(import_openunmix(paths, tmp_path / "over.pt", n_hop=64))
    assert payload["model_kwargs"]["n_hop"] == 64


def test_metadata_contradicting_the_weights(upstream: ModuleType, tmp_path: Path) -> None:
    make_official(upstream, tmp_path / "vocals.pth", seed=0)
    (tmp_path / "vocals.json").write_text(json.dumps({"args": {"hidden_size": 512}}))
    with pytest.raises(CheckpointError, match=r"vocals\.json: hidden_size=512"):
        read_openunmix_target(tmp_path / "vocals.pth")


def test_bad_files_are_named(upstream: ModuleType, tmp_path: Path) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    with pytest.raises(CheckpointError, match=r"notes\.pth: not a PyTorch weights file"):
        read_openunmix_target(text)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], listing)
    with pytest.raises(CheckpointError, match=r"list\.pth: not a state dict"):
        read_openunmix_target(listing)
    with pytest.raises(CheckpointError, match=r"absent\.pth: no such file"):
        read_openunmix_target(tmp_path / "absent.pth")

    make_official(upstream, tmp_path / "vocals.pth", seed=0)
    state = torch.load(tmp_path / "vocals.pth", weights_only=True)
    del state["fc1.weight"]
    torch.save(state, tmp_path / "nofc1.pth")
    with pytest.raises(CheckpointError, match=r"nofc1\.pth: missing key\(s\) fc1\.weight"):
        read_openunmix_target(tmp_path / "nofc1.pth")
    state = torch.load(tmp_path / "vocals.pth", weights_only=True)
    del state["bn2.running_var"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"odd\.pth: .*bn2\.running_var"):
        read_openunmix_target(tmp_path / "odd.pth")


def test_inconsistent_targets(upstream: ModuleType, tmp_path: Path) -> None:
    make_official(upstream, tmp_path / "vocals.pth", seed=0)
    make_official(upstream, tmp_path / "drums.pth", seed=1, hidden=24)
    with pytest.raises(CheckpointError, match=r"drums\.pth: hidden_size 24 differs from 16"):
        import_openunmix([tmp_path / "vocals.pth", tmp_path / "drums.pth"], tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(StemkitError, match="unique"):
        import_openunmix([tmp_path / "vocals.pth"] * 2, tmp_path / "x.pt")
    with pytest.raises(StemkitError, match="two stems"):
        import_openunmix([tmp_path / "vocals.pth"], tmp_path / "x.pt")
    # one target is fine without EM, or with the residual stem
    payload = load_checkpoint(
        import_openunmix([tmp_path / "vocals.pth"], tmp_path / "x.pt", residual=True)
    )
    assert payload["sources"] == ["vocals", "residual"]


def test_stemkit_checkpoint_is_refused(upstream: ModuleType, tmp_path: Path) -> None:
    make_official(upstream, tmp_path / "vocals.pth", seed=0)
    out = import_openunmix([tmp_path / "vocals.pth"], tmp_path / "mine.pt", niter=0)
    with pytest.raises(CheckpointError, match="already a stemkit checkpoint"):
        read_openunmix_target(out)
