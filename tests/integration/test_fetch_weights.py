"""The model catalogue and fetching published weights, against a local server only.

A tiny Open-Unmix model is saved as upstream publishes it (one ``.pth`` per target, the file
name ending in its SHA-256 prefix) and served by ``http.server`` on 127.0.0.1; a catalogue
entry with those files' real hashes is put in the catalogue for the test, and
``STEMKIT_WEIGHTS_MIRROR`` points its Zenodo URLs at the local server. Good files are fetched,
verified, converted and cached once; every way a download can fail leaves nothing in the cache
and is one line through the CLI. Nothing here reaches the network.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import time
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
import torch

from stemkit import models
from stemkit.artifacts.catalogue import ALL_STEMS, CATALOGUE, CatalogueEntry, Fetchable, WeightFile
from stemkit.artifacts.checkpoint import load_checkpoint
from stemkit.artifacts.fetch import cached_path
from stemkit.cli import main as cli
from stemkit.cli import model_choice
from weights_server import WeightsServer

RATE = 44100
N_FFT, N_HOP, HIDDEN = 512, 128, 16
NAME = "umx-tiny"
RECORD = "/records/1234/files"


@pytest.fixture(autouse=True)
def only_models_and_separate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMANDS", ("separate", "models"))


def _official_file(upstream: ModuleType, seed: int) -> bytes:
    """The bytes of an upstream per-target file of a tiny stereo model (current layout)."""
    torch.manual_seed(seed)
    core = upstream.OpenUnmix(nb_bins=N_FFT // 2 + 1, nb_channels=2, hidden_size=HIDDEN)
    with torch.no_grad():
        core.output_mean.uniform_(0.2, 1.0)
    buffer = io.BytesIO()
    torch.save(core.state_dict(), buffer)
    return buffer.getvalue()


@pytest.fixture
def tiny(
    upstream: ModuleType,
    server: WeightsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> CatalogueEntry:
    """A fetchable catalogue entry ``umx-tiny`` whose files the local server holds.

    vocals is checked by its 8-digit published prefix (as Open-Unmix publishes it), drums by
    its full SHA-256.
    """
    files = []
    for seed, target in enumerate(("vocals", "drums")):
        body = _official_file(upstream, seed)
        digest = hashlib.sha256(body).hexdigest()
        path = f"{RECORD}/{target}-{digest[:8]}.pth"
        server.files[path] = body
        published = digest[:8] if target == "vocals" else digest
        files.append(WeightFile(f"https://zenodo.org{path}", published, target))
    entry = CatalogueEntry(
        name=NAME,
        title="a tiny Open-Unmix for tests",
        system="umx",
        kwargs={"sources": ["vocals", "drums"], "hidden_size": HIDDEN, "n_fft": N_FFT},
        stems=("vocals", "drums"),
        sample_rate=RATE,
        parameters=None,
        trained_on="nothing (random weights)",
        score=None,
        weights=Fetchable(tuple(files), options={"sample_rate": RATE, "n_hop": N_HOP}),
    )
    monkeypatch.setitem(CATALOGUE, NAME, entry)
    monkeypatch.setenv("STEMKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("STEMKIT_WEIGHTS_MIRROR", server.url)
    monkeypatch.delenv("STEMKIT_OFFLINE", raising=False)
    return entry


@pytest.fixture
def song(tmp_path: Path) -> Path:
    path = tmp_path / "song.wav"
    mixture = np.random.default_rng(0).standard_normal((RATE, 2)).astype(np.float32) * 0.1
    sf.write(path, mixture, RATE, subtype="FLOAT")
    return path


def _cache_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "cache").rglob("*") if p.is_file())


def test_fetch_converts_caches_and_then_needs_no_network(
    tiny: CatalogueEntry,
    server: WeightsServer,
    song: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "separated"
    argv = ["separate", str(song), "--model", NAME, "-o", str(out)]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert f"model: {NAME} (a tiny Open-Unmix for tests, published weights trained on" in err
    assert len(server.requests) == 2
    for name in ("vocals", "drums"):
        stem, rate = sf.read(out / "song" / f"{name}.wav", dtype="float32")
        assert rate == RATE and stem.shape == (RATE, 2) and np.abs(stem).max() > 1e-4

    cached = cached_path(tiny)
    assert _cache_files(tmp_path) == [cached, cached.with_name(cached.name + ".sha256")]
    payload = load_checkpoint(cached)
    assert payload["sources"] == ["vocals", "drums"]
    assert payload["model_kwargs"]["n_hop"] == N_HOP
    origin = payload["provenance"]["openunmix_import"]["origin"]
    assert origin["catalogue"] == NAME
    assert [f["url"] for f in origin["files"]] == [f.url for f in tiny.weights.files]  # type: ignore[union-attr]

    # offline from now on: the cached, verified checkpoint is used without a request
    monkeypatch.setenv("STEMKIT_OFFLINE", "1")
    assert cli.main([*argv[:-1], str(tmp_path / "again"), "-q"]) == 0
    assert len(server.requests) == 2
    again, _ = sf.read(tmp_path / "again" / "song" / "vocals.wav", dtype="float32")
    first, _ = sf.read(out / "song" / "vocals.wav", dtype="float32")
    np.testing.assert_array_equal(again, first)


def test_models_fetch_verb_and_the_listing_status(
    tiny: CatalogueEntry, server: WeightsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if f"  {NAME} " in line)
    assert row.rstrip().endswith("fetchable")

    # a download folder left by a fetch killed a day ago goes; a fresh one (a live fetch) stays
    stale, live = (cached_path(tiny).parent / f".fetch-{NAME}-{k}" for k in ("old", "new"))
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "vocals.pth").write_bytes(b"partial")
    os.utime(stale, (time.time() - 2 * 86400,) * 2)

    assert cli.main(["models", "fetch", NAME]) == 0
    assert not stale.exists() and live.is_dir()
    shutil.rmtree(live)
    captured = capsys.readouterr()
    assert captured.out.strip() == str(cached_path(tiny))
    assert f"stemkit: cached {NAME} as" in captured.err
    assert cli.main(["models", "fetch", NAME]) == 0  # already cached: no request
    assert len(server.requests) == 2

    assert cli.main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if f"  {NAME} " in line)
    assert row.rstrip().endswith("cached")

    assert cli.main(["models", "fetch", NAME, "--force"]) == 0
    assert len(server.requests) == 4


def test_umxse_layout_converts_with_the_entrys_own_settings(
    upstream: ModuleType,
    server: WeightsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """umxse's files (mono, 16 kHz, all 513 bins, named ``speech_<hash>.pth``) go through the
    real entry's targets and options; only the hidden size is shrunk."""
    real = CATALOGUE["umxse"]
    assert isinstance(real.weights, Fetchable)
    files = []
    for seed, original in enumerate(real.weights.files):
        torch.manual_seed(seed)
        core = upstream.OpenUnmix(nb_bins=513, nb_channels=1, hidden_size=HIDDEN, max_bin=513)
        buffer = io.BytesIO()
        torch.save(core.state_dict(), buffer)
        digest = hashlib.sha256(buffer.getvalue()).hexdigest()
        path = f"{RECORD}/{original.target}_{digest[:8]}.pth"
        server.files[path] = buffer.getvalue()
        files.append(WeightFile(f"https://zenodo.org{path}", digest[:8], original.target))
    entry = replace(real, name="umxse-tiny", weights=replace(real.weights, files=tuple(files)))
    monkeypatch.setitem(CATALOGUE, entry.name, entry)
    monkeypatch.setenv("STEMKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("STEMKIT_WEIGHTS_MIRROR", server.url)
    monkeypatch.delenv("STEMKIT_OFFLINE", raising=False)

    song = tmp_path / "speech.wav"
    noisy = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    sf.write(song, noisy, 16000, subtype="FLOAT")
    out = tmp_path / "out"
    assert cli.main(["separate", str(song), "--model", entry.name, "-o", str(out), "-q"]) == 0
    for stem in ("speech", "noise"):
        audio, rate = sf.read(out / "speech" / f"{stem}.wav", dtype="float32")
        assert rate == 16000 and audio.shape == noisy.shape
    kwargs = load_checkpoint(cached_path(entry))["model_kwargs"]
    assert (kwargs["sample_rate"], kwargs["audio_channels"], kwargs["n_fft"], kwargs["n_hop"]) == (
        16000,
        1,
        1024,
        512,
    )
    for key in ("sources", "n_fft", "n_hop", "sample_rate", "audio_channels", "niter"):
        assert kwargs[key] == real.kwargs[key], key


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


FAILURES: dict[str, tuple[str, str]] = {
    # mode: (what the server does to the drums file, what the message says)
    "corrupt": ("corrupt", "its SHA-256 is"),
    "truncated": ("truncated", "the connection closed after"),
    "missing": ("missing", "HTTP 404"),
    "slow-drop": ("slow-drop", "no data for 0.3 s"),
    "refused": ("refused", "Connection refused"),
    "offline": ("offline", "STEMKIT_OFFLINE is set"),
}


# every failure through `separate`; `models fetch` shares the download path, two suffice there
CASES = [("separate", f) for f in FAILURES] + [("fetch", "corrupt"), ("fetch", "truncated")]


@pytest.mark.parametrize(("verb", "failure"), CASES, ids=[f"{v}-{f}" for v, f in CASES])
def test_a_failed_download_caches_nothing_and_is_one_line(
    failure: str,
    verb: str,
    tiny: CatalogueEntry,
    server: WeightsServer,
    song: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mode, says = FAILURES[failure]
    assert isinstance(tiny.weights, Fetchable)
    vocals, drums = tiny.weights.files
    path = drums.url.removeprefix("https://zenodo.org")
    if mode == "corrupt":
        body = bytearray(server.files[path])
        body[len(body) // 2] ^= 0xFF
        server.files[path] = bytes(body)
    elif mode == "refused":
        monkeypatch.setenv("STEMKIT_WEIGHTS_MIRROR", f"http://127.0.0.1:{_closed_port()}")
    elif mode == "offline":
        monkeypatch.setenv("STEMKIT_OFFLINE", "1")
    else:
        server.modes[path] = mode
    monkeypatch.setenv("STEMKIT_DOWNLOAD_TIMEOUT", "0.3")

    out = tmp_path / "separated"
    if verb == "separate":
        argv = ["separate", str(song), "--model", NAME, "-o", str(out), "-q"]
    else:
        argv = ["models", "fetch", NAME]
    started = time.monotonic()
    assert cli.main(argv) == 2
    assert time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    if verb == "separate":  # -q: the error alone
        assert len(lines) == 1, err
    else:  # the progress lines of `models fetch`, then the error
        assert all(line.startswith("stemkit: fetching ") for line in lines[:-1]), err
    line = lines[-1]
    assert line.startswith("stemkit: error:")
    assert says in line
    failing = vocals if mode in ("refused", "offline") else drums
    assert failing.url in line
    assert failing.expected() in line
    assert "by hand" in line
    assert "stemkit models import-openunmix" in line and f"-o {NAME}.pt" in line
    assert _cache_files(tmp_path) == []
    assert not out.exists() or list(out.rglob("*.wav")) == []
    if mode not in ("refused", "offline"):
        assert len(server.requests) == 2  # vocals fetched and discarded, drums failed


def test_a_not_fetchable_entry_says_why(
    song: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["separate", str(song), "--model", "xumx-musdb18", "-o", str(tmp_path / "o"), "-q"]
    assert cli.main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "xumx-musdb18 is not fetchable: no published hash" in line
    assert "zenodo.org/record/4704231" in line


def test_catalogue_parameter_counts_match_the_built_models() -> None:
    checked = []
    for entry in CATALOGUE.values():
        if entry.parameters is None:
            continue
        with torch.device("meta"):  # sizes only: no memory, no initialisation
            model = models.build(entry.system, **entry.kwargs)
        assert sum(p.numel() for p in model.parameters()) == entry.parameters, entry.name
        assert tuple(model.sources) == entry.stems, entry.name
        assert model.sample_rate == entry.sample_rate, entry.name
        checked.append(entry.name)
    assert {"default", "umx", "umxhq", "umxl", "umxse"} <= set(checked)
    # the spec-notes per-target counts: umx/umxhq 8,893,348, umxl 28,257,188, umxse 1,583,622
    assert CATALOGUE["umxhq"].parameters == 4 * 8_893_348
    assert CATALOGUE["umxl"].parameters == 4 * 28_257_188
    assert CATALOGUE["umxse"].parameters == 2 * 1_583_622


def test_bundled_entry_is_the_bundled_checkpoint() -> None:
    from stemkit.artifacts import bundled_path

    payload = load_checkpoint(bundled_path("default"))
    entry = CATALOGUE["default"]
    assert payload["model_kwargs"] == dict(entry.kwargs)
    assert (
        sum(
            v.numel()
            for k, v in payload["state_dict"].items()
            if "running" not in k and "num_batches" not in k
        )
        == entry.parameters
    )


def test_catalogue_entries_are_well_formed() -> None:
    for entry in CATALOGUE.values():
        assert entry.stems and entry.sample_rate > 0 and entry.trained_on
        if entry.score is not None:
            assert entry.score.metric.startswith(("cSDR", "uSDR"))
            assert entry.score.test_set and entry.score.reference
        if isinstance(entry.weights, Fetchable) and entry.weights.converter == "openunmix":
            assert [f.target for f in entry.weights.files] == list(entry.stems)
            for file in entry.weights.files:
                assert file.url.startswith("https://zenodo.org/records/")
                assert len(file.sha256) >= 8 and int(file.sha256, 16) >= 0
                # Open-Unmix's file names end in the published SHA-256 prefix
                assert file.filename.removesuffix(".pth").endswith(file.sha256)
                assert file.hash_is_prefix
        elif isinstance(entry.weights, Fetchable):
            # the Demucs v1 release: one whole-model file, its full SHA-256 in separate.py
            assert entry.weights.converter == "demucs-v1", entry.name
            (file,) = entry.weights.files
            assert file.url.startswith("https://dl.fbaipublicfiles.com/demucs/")
            assert len(file.sha256) == 64 and int(file.sha256, 16) >= 0
            assert file.target == ALL_STEMS and entry.stems == ("drums", "bass", "other", "vocals")
            assert entry.import_command().startswith("stemkit models import-demucs-v1 ")
    fetchable = {n for n, e in CATALOGUE.items() if e.status == "fetchable"}
    v1 = {"demucs-v1", "demucs-v1-extra", "tasnet-v1", "tasnet-v1-extra"}
    assert fetchable == {"umxhq", "umx", "umxl", "umxse"} | v1
    assert CATALOGUE["xumx-musdb18"].import_command() == (
        "stemkit models import-xumx pretrained_xumx.pth -o xumx-musdb18.pt"
    )


def test_catalogue_names_are_not_untrained_and_name_their_data() -> None:
    for name in ("umxhq", "umx", "default", "xumx-musdb18"):
        assert not model_choice.is_untrained(name), name
    assert model_choice.is_untrained("umx", random_weights=True)
    assert model_choice.is_untrained("xumx")

    class Fake:
        sources = ("vocals", "drums", "bass", "other")
        sample_rate = RATE

    line = model_choice.describe("umxhq", Fake())
    assert "Open-Unmix UMX-HQ" in line and "trained on MUSDB18-HQ" in line
    assert "cSDR 5.41 dB, MUSDB18 test" in line
    assert "CC BY-NC-SA" in model_choice.describe("umxl", Fake())
    assert "RANDOM weights" in model_choice.describe("umx", Fake(), random_weights=True)


def test_the_mirror_keeps_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from stemkit.artifacts.fetch import mirrored

    url = "https://zenodo.org/records/3370489/files/vocals-b62c91ce.pth"
    monkeypatch.delenv("STEMKIT_WEIGHTS_MIRROR", raising=False)
    assert mirrored(url) == url
    monkeypatch.setenv("STEMKIT_WEIGHTS_MIRROR", "http://127.0.0.1:9/base/")
    assert mirrored(url) == "http://127.0.0.1:9/base/records/3370489/files/vocals-b62c91ce.pth"
