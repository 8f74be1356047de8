"""The Python API, ``stemkit.Separator``: arrays and tensors in, the same kind out; files in,
a stem folder out, written like ``stemkit separate`` writes it; and the README's example."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import stemkit
import stemkit.api
from conftest import RATE, toy_stems
from stemkit.cli import main as cli
from stemkit.errors import StemkitError
from stemkit.outputs import MARKER, OutputError

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "## Python API"

#: The README's example, the fenced ``python`` block under "## Python API"; it runs in a
#: folder holding ``song.wav``.
README_EXAMPLE = """\
import soundfile as sf
import stemkit

# The bundled model (trained on generated songs only), a checkpoint file, or "identity".
separator = stemkit.Separator.from_pretrained("default")
print(separator.sources, separator.sample_rate)

# In memory: numpy or torch, (time,) or (channels, time), at any rate.
audio, rate = sf.read("song.wav", dtype="float32")  # soundfile reads (time, channels)
stems = separator.separate(audio.T, rate)  # {"vocals": array (channels, time), ...}
sf.write("vocals.wav", stems["vocals"].T, rate)

# A file into separated/song/, written as `stemkit separate` writes it.
paths = separator.separate_file("song.wav", "separated", two_stems="vocals")
print(paths)  # [separated/song/vocals.wav, separated/song/no_vocals.wav]
"""


def _song(path: Path, seconds: float = 1.5, seed: int = 3, scale: float = 1.0) -> Path:
    mixture = toy_stems(seconds, seed=seed).sum(axis=0) * scale
    sf.write(path, mixture.T, RATE, subtype="FLOAT")
    return path


def _run_example(code: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _song(folder / "song.wav")
    monkeypatch.chdir(folder)
    exec(compile(code, "README example", "exec"), {"__name__": "__readme__"})
    assert sorted(p.name for p in (folder / "separated" / "song").glob("*.wav")) == [
        "no_vocals.wav",
        "vocals.wav",
    ]
    assert sf.info(folder / "vocals.wav").samplerate == RATE


def _readme_block() -> str | None:
    """The first fenced ``python`` block after the heading, or None without the heading."""
    if not README.is_file():
        return None
    text = README.read_text(encoding="utf-8")
    at = re.search(rf"^{re.escape(HEADING)}\s*$", text, flags=re.MULTILINE)
    if at is None:
        return None
    section = re.split(r"^## ", text[at.end() :], maxsplit=1, flags=re.MULTILINE)[0]
    block = re.search(r"^```python\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    assert block is not None, f"README.md: no ```python block under {HEADING!r}"
    return block.group(1)


# -- the README example -----------------------------------------------------------------------


def test_the_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run_example(README_EXAMPLE, tmp_path, monkeypatch)


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = _readme_block()
    if code is None:
        pytest.skip(f"README.md has no {HEADING!r} section yet (README_EXAMPLE is its text)")
    _run_example(code, tmp_path, monkeypatch)


def test_the_readme_block_is_found_under_its_heading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# stemkit\n\n```python\nnot this\n```\n\n{HEADING}\n\nSome words.\n\n"
        f"```python\n{README_EXAMPLE}```\n\n## Next\n\n```python\nnor this\n```\n"
    )
    monkeypatch.setitem(globals(), "README", readme)
    assert _readme_block() == README_EXAMPLE
    readme.write_text("# stemkit\n\n## Python\n\n```python\nx = 1\n```\n")
    assert _readme_block() is None


# -- the public name --------------------------------------------------------------------------


def test_stemkit_separator_is_the_api_and_the_models_one_stays() -> None:
    from stemkit.models.spectral import Separator as Masking

    assert stemkit.Separator is stemkit.api.Separator
    assert "Separator" in stemkit.__all__
    assert Masking is not stemkit.Separator
    assert issubclass(Masking, torch.nn.Module)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = stemkit.Nope  # type: ignore[attr-defined]


# -- arrays and tensors -----------------------------------------------------------------------


def test_numpy_channels_time_comes_back_exactly_with_identity() -> None:
    separator = stemkit.Separator.from_pretrained("identity", device="cpu")
    assert separator.sources == ("mixture",) and separator.sample_rate == RATE
    mixture = toy_stems(1.0, seed=1).sum(axis=0)
    stems = separator.separate(mixture, RATE)
    assert list(stems) == ["mixture"]
    out = stems["mixture"]
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == mixture.shape
    np.testing.assert_array_equal(out, mixture)


def test_mono_numpy_at_another_rate_keeps_its_layout_rate_and_dtype() -> None:
    separator = stemkit.Separator.from_pretrained("identity", device="cpu", segment=0.3)
    rate = 22050
    mono = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(rate) / rate)  # well inside both bands
    out = separator.separate(mono, rate)["mixture"]
    assert out.shape == mono.shape and out.dtype == np.float64
    # through soxr to 44.1 kHz and back: the same signal but for the resampler's ripple
    error = np.sqrt(np.mean((out - mono) ** 2) / np.mean(mono**2))
    assert error < 1e-3


def test_tensors_come_back_as_tensors_of_the_same_dtype() -> None:
    separator = stemkit.Separator.from_pretrained("default", device="cpu")
    mixture = torch.from_numpy(toy_stems(1.0, seed=4).sum(axis=0)).double()
    stems = separator.separate(mixture, RATE)
    assert list(stems) == ["vocals", "drums", "bass", "other"] == list(separator.sources)
    for stem in stems.values():
        assert isinstance(stem, torch.Tensor)
        assert stem.dtype == torch.float64 and stem.shape == mixture.shape
        assert torch.isfinite(stem).all()


@pytest.mark.parametrize(
    ("audio", "rate", "message"),
    [
        (np.zeros((RATE, 2), np.float32), RATE, r"\(channels, time\).*pass audio\.T"),
        (np.zeros((2, 2, 100), np.float32), RATE, r"\(time,\) or \(channels, time\)"),
        (np.zeros(0, np.float32), RATE, r"\(time,\) or \(channels, time\)"),
        (np.zeros((2, 100), np.int16), RATE, "floats"),
        (np.zeros((2, 100), np.float32), 0, "positive number of Hz"),
        (np.full((2, 100), np.nan, np.float32), RATE, "NaN"),
        (np.zeros((3, 100), np.float32), RATE, "downmix"),
        ([0.0, 0.1], RATE, "numpy array or a torch tensor"),
    ],
    ids=["time-channels", "3-d", "empty", "int16", "rate-0", "nan", "3-channels", "list"],
)
def test_bad_audio_is_refused_with_the_fix(audio: object, rate: int, message: str) -> None:
    separator = stemkit.Separator.from_pretrained("identity", device="cpu")
    with pytest.raises(StemkitError, match=message):
        separator.separate(audio, rate)  # type: ignore[type-var]


def test_downmix_gives_the_callers_channels_back() -> None:
    separator = stemkit.Separator.from_pretrained("identity", device="cpu")
    surround = np.tile(toy_stems(0.5, seed=5, channels=1).sum(axis=0), (6, 1))
    out = separator.separate(surround, RATE, downmix=True)["mixture"]
    assert out.shape == surround.shape
    np.testing.assert_allclose(out, surround, atol=1e-6)


# -- loading ----------------------------------------------------------------------------------


def test_untrained_architectures_are_refused_unless_random_weights() -> None:
    # (`umx` names the published weights in the catalogue; `xumx` is only an architecture)
    with pytest.raises(StemkitError, match=r"'xumx' has no trained weights.*random_weights=True"):
        stemkit.Separator.from_pretrained("xumx")
    separator = stemkit.Separator.from_pretrained("umx", device="cpu", random_weights=True)
    assert separator.sources == ("vocals", "drums", "bass", "other")


def test_oracles_unknown_names_and_bad_settings_are_refused() -> None:
    with pytest.raises(StemkitError, match="is an oracle"):
        stemkit.Separator.from_pretrained("irm1")
    with pytest.raises(StemkitError, match="neither a checkpoint file"):
        stemkit.Separator.from_pretrained("no-such-model")
    with pytest.raises(StemkitError, match="overlap"):
        stemkit.Separator.from_pretrained("identity", overlap=0.9)
    with pytest.raises(StemkitError, match="segment"):
        stemkit.Separator.from_pretrained("identity", segment=-1)
    with pytest.raises(StemkitError, match="--device 'warp'"):
        stemkit.Separator.from_pretrained("identity", device="warp")


def test_segment_defaults_to_the_models_own_and_zero_means_whole() -> None:
    default = stemkit.Separator.from_pretrained("default", device="cpu")
    assert default.segment == default.model.default_segment
    assert stemkit.Separator.from_pretrained("identity", device="cpu", segment=0).segment is None
    assert stemkit.Separator.from_pretrained("identity", device="cpu", segment=2).segment == 2


# -- files ------------------------------------------------------------------------------------


def test_separate_file_writes_a_marked_folder_and_returns_its_files(tmp_path: Path) -> None:
    song = _song(tmp_path / "my song.wav")
    separator = stemkit.Separator.from_pretrained("default", device="cpu")
    paths = separator.separate_file(song, tmp_path / "out")
    folder = tmp_path / "out" / "my song"
    assert paths == [folder / f"{name}.wav" for name in separator.sources]
    assert all(p.is_file() and sf.info(p).samplerate == RATE for p in paths)
    marker = json.loads((folder / MARKER).read_text())
    assert marker["model"] == "default" and marker["song"] == os.path.abspath(song)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".stemkit-")]


def test_separate_file_stems_formats_and_two_stems(tmp_path: Path) -> None:
    song = _song(tmp_path / "song.wav")
    separator = stemkit.Separator.from_pretrained("default", device="cpu")
    paths = separator.separate_file(song, tmp_path / "a", format="flac", stems=["bass", "vocals"])
    assert [p.name for p in paths] == ["bass.flac", "vocals.flac"]
    paths = separator.separate_file(song, tmp_path / "b", two_stems="vocals")
    assert [p.name for p in paths] == ["vocals.wav", "no_vocals.wav"]
    mixture, _ = sf.read(song, always_2d=True)
    vocals, _ = sf.read(paths[0], always_2d=True)
    rest, _ = sf.read(paths[1], always_2d=True)
    np.testing.assert_allclose(vocals + rest, mixture, atol=2e-3)  # two 16-bit roundings
    with pytest.raises(StemkitError, match="this model gives vocals, drums, bass, other"):
        separator.separate_file(song, tmp_path / "c", two_stems="kazoo")
    with pytest.raises(StemkitError, match="unknown stem"):
        separator.separate_file(song, tmp_path / "c", stems=["kazoo"])
    with pytest.raises(StemkitError, match="format 'aiff'"):
        separator.separate_file(song, tmp_path / "c", format="aiff")
    assert not (tmp_path / "c" / "song").exists()


def test_separate_file_never_replaces_a_folder_it_did_not_write(tmp_path: Path) -> None:
    song = _song(tmp_path / "song.wav")
    separator = stemkit.Separator.from_pretrained("identity", device="cpu")
    (tmp_path / "out" / "song").mkdir(parents=True)
    with pytest.raises(OutputError, match="already exists"):
        separator.separate_file(song, tmp_path / "out")
    with pytest.raises(OutputError, match="not written by stemkit"):
        separator.separate_file(song, tmp_path / "out", force=True)
    (tmp_path / "out" / "song").rmdir()
    first = separator.separate_file(song, tmp_path / "out")
    assert separator.separate_file(song, tmp_path / "out", force=True) == first


# -- logging, not printing --------------------------------------------------------------------


def test_the_library_logs_clipping_and_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    song = _song(tmp_path / "loud.wav", scale=4.0)
    separator = stemkit.Separator.from_pretrained("identity", device="cpu")
    with caplog.at_level(logging.DEBUG, logger="stemkit"):
        separator.separate_file(song, tmp_path / "out")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all(r.name == "stemkit.api" for r in warnings)
    assert str(tmp_path / "out" / "loud" / "mixture.wav") in warnings[0].getMessage()
    assert any(r.levelno == logging.DEBUG and "read" in r.getMessage() for r in caplog.records)


def test_cli_verbose_and_quiet_set_the_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "COMMANDS", ("separate",))
    song = _song(tmp_path / "song.wav", scale=4.0)
    base = ["separate", str(song), "--model", "identity"]
    assert cli.main([*base, "-o", str(tmp_path / "quiet"), "-q"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err and all(line.startswith("stemkit: warning: ") for line in err)  # clipping only
    assert cli.main([*base, "-o", str(tmp_path / "normal")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("stemkit: model: identity") and "[1/1] separating" in err
    assert "stemkit: debug:" not in err
    assert cli.main([*base, "-o", str(tmp_path / "verbose"), "-v"]) == 0
    assert "stemkit: debug: read " in capsys.readouterr().err
    # the command's handler is gone after it: the library is silent again
    handlers = logging.getLogger("stemkit").handlers
    assert all(isinstance(h, logging.NullHandler) for h in handlers)
