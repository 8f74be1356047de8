"""MIR-1K: layout checks, the singer split, channel mapping, excerpts, and protocol scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import Tensor

from stemkit.data.mir1k import Mir1k, list_clips, read_clip, split_clips
from stemkit.data.mir1k_writer import write_mir1k_from_musdb
from stemkit.errors import DatasetError
from stemkit.evaluation.mir1k import evaluate_mir1k, score_clip
from stemkit.metrics import bss_eval_sources
from stemkit.models.base import SeparationModel

RATE = 16000


def _write_clip(folder: Path, name: str, seconds: float, seed: int) -> np.ndarray:
    """A stereo clip (left = accompaniment: noise + low sine; right = voice: a glide)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    voice = 0.3 * np.sin(2 * np.pi * (rng.uniform(200, 400) * t + 50 * t**2))
    accompaniment = 0.2 * np.sin(2 * np.pi * 110 * t) + 0.05 * rng.standard_normal(t.size)
    audio = np.stack([accompaniment, voice]).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / f"{name}.wav", audio.T, RATE, subtype="FLOAT")
    return audio


@pytest.fixture(scope="module")
def mir1k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 clips: abjones (2 songs), amy (1 song), and 2 test singers; lengths 0.6-1.1 s."""
    root = tmp_path_factory.mktemp("MIR-1K")
    names = [
        "abjones_1_01",
        "abjones_1_02",
        "abjones_2_01",
        "amy_3_01",
        "bobon_4_01",
        "heycat_5_01",
    ]
    for seed, name in enumerate(names):
        _write_clip(root / "Wavfile", name, 0.6 + 0.1 * seed, seed)
    return root


def test_split_follows_the_singers(mir1k: Path) -> None:
    clips = list_clips(mir1k)
    assert [c.name for c in split_clips(clips, "test")] == ["bobon_4_01", "heycat_5_01"]
    everything = {c.name for c in split_clips(clips, "train", valid_fraction=0.0)}
    assert everything == {"abjones_1_01", "abjones_1_02", "abjones_2_01", "amy_3_01"}
    train = split_clips(clips, "train", valid_fraction=0.3)
    valid = split_clips(clips, "valid", valid_fraction=0.3)
    # whole songs are held out, and train + valid = the training singers' clips
    assert {c.song for c in train}.isdisjoint({c.song for c in valid})
    assert {c.name for c in train} | {c.name for c in valid} == everything
    assert len({c.song for c in valid}) == 1
    with pytest.raises(DatasetError, match="no valid clips"):
        split_clips(clips, "valid", valid_fraction=0.0)


def test_channels_map_to_sources_and_sum_to_the_average(mir1k: Path) -> None:
    clip = next(c for c in list_clips(mir1k) if c.name == "amy_3_01")
    audio, _ = sf.read(str(clip.path), dtype="float32", always_2d=True)
    stems = read_clip(clip, ("vocals", "accompaniment"))
    assert stems.shape == (2, 1, audio.shape[0])
    np.testing.assert_allclose(stems[0, 0].numpy(), audio[:, 1] / 2)  # right = voice
    np.testing.assert_allclose(stems[1, 0].numpy(), audio[:, 0] / 2)  # left = accompaniment
    np.testing.assert_allclose(stems.sum(0)[0].numpy(), audio.mean(axis=1), atol=1e-7)
    low = read_clip(clip, ("vocals",), sample_rate=8000)
    assert low.shape == (1, 1, audio.shape[0] // 2)


def test_excerpts_are_seeded_per_epoch_and_item(mir1k: Path) -> None:
    data = Mir1k(mir1k, "train", segment=0.25, samples_per_track=3, valid_fraction=0.0, seed=1)
    assert len(data) == 12 and data.sample_rate == 8000 and data.segment_frames == 2000
    stems, name = data[4]
    assert stems.shape == (2, 1, 2000) and stems.dtype == torch.float32
    assert name == data.clips[1].name
    assert torch.equal(data[4][0], stems)  # same (seed, epoch, index): same item
    data.set_epoch(1)
    assert not torch.equal(data[4][0], stems)
    # the excerpt is a slice of the resampled clip
    full = read_clip(data.clips[1], data.sources, 8000)[0, 0]
    window = data[4][0][0, 0]
    starts = [s for s in range(full.numel() - 2000 + 1) if torch.equal(full[s : s + 2000], window)]
    assert len(starts) == 1
    mixed = Mir1k(mir1k, "train", segment=0.25, random_mix=True, valid_fraction=0.0)
    assert any("|" in mixed[i][1] for i in range(len(mixed)))
    whole = Mir1k(mir1k, "test", segment=None, sample_rate=None)
    assert [s.shape[-1] for s, _ in whole] == [c.nb_frames for c in whole.clips]
    assert data.fingerprint() != whole.fingerprint()
    assert data.fingerprint() == Mir1k(mir1k, "train", valid_fraction=0.0).fingerprint()


def test_wrong_layouts_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        list_clips(tmp_path / "nowhere")
    _write_clip(tmp_path / "flat", "amy_1_01", 0.2, 0)
    with pytest.raises(DatasetError, match="pass its parent"):
        list_clips(tmp_path / "flat")
    mono = tmp_path / "mono" / "Wavfile"
    mono.mkdir(parents=True)
    sf.write(mono / "amy_1_01.wav", np.zeros(800, dtype=np.float32), RATE)
    with pytest.raises(DatasetError, match=r"amy_1_01\.wav: 1 channel"):
        list_clips(tmp_path / "mono")
    rate = tmp_path / "rate" / "Wavs"
    rate.mkdir(parents=True)
    sf.write(rate / "amy_1_01.wav", np.zeros((800, 2), dtype=np.float32), 44100)
    with pytest.raises(DatasetError, match=r"amy_1_01\.wav: 44100 Hz"):
        list_clips(tmp_path / "rate")
    assert list_clips(tmp_path / "rate", native_rate=None)[0].sample_rate == 44100
    _write_clip(tmp_path / "name" / "Wavfile", "amy01", 0.2, 0)
    with pytest.raises(DatasetError, match=r"amy01\.wav: the name is not"):
        list_clips(tmp_path / "name")
    with pytest.raises(DatasetError, match="MIR-1K sources"):
        Mir1k(tmp_path / "rate", sources=["drums"], native_rate=None)


def test_write_from_musdb_layout(hq_tree: Path, tmp_path: Path) -> None:
    paths = write_mir1k_from_musdb(hq_tree, tmp_path / "MIR-1K", clip_seconds=1.5)
    clips = list_clips(tmp_path / "MIR-1K")
    assert [c.path for c in clips] == paths
    # 5 tracks of 4 s: clips of 1.5, 1.5 and 1.0 s each; singers cycle from abjones, amy
    assert len(clips) == 15 and {c.singer for c in clips[:6]} == {"abjones", "amy"}
    assert {round(c.duration, 3) for c in clips} == {1.5, 1.0}
    assert len(split_clips(clips, "test")) == 9
    assert len(list((tmp_path / "MIR-1K" / "UndividedWavfile").glob("*.wav"))) == 5
    # right channel = the vocals of the first train track, mono, at 16 kHz
    vocals, rate = sf.read(str(hq_tree / "train" / "Toy - Train 0" / "vocals.wav"))
    stems = read_clip(clips[0], ("vocals",), sample_rate=rate)[0, 0].numpy() * 2
    expected = vocals.mean(axis=1)[: stems.size]
    assert np.corrcoef(stems[2000:-2000], expected[2000 : stems.size - 2000])[0, 1] > 0.99


class _HalfMixture(SeparationModel):
    """Half the mixture for every source, plus a faint seeded dither (an exact sum of the
    references would have an infinite SAR): the unprocessed baseline, NSDR ≈ 0. It keeps its
    outputs so that the test can score them independently."""

    def __init__(self, rate: int) -> None:
        super().__init__(("vocals", "accompaniment"), sample_rate=rate, audio_channels=1)
        self.outputs: list[Tensor] = []
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, mixture: Tensor) -> Tensor:
        out = 0.5 * mixture.unsqueeze(1).expand(-1, 2, -1, -1)
        out = out + 1e-4 * torch.randn(out.shape, generator=self.gen)
        self.outputs.append(out[0, :, 0])
        return out


def test_protocol_scores_of_the_unprocessed_mixture(mir1k: Path) -> None:
    model = _HalfMixture(RATE)
    result = evaluate_mir1k(model, mir1k)
    assert result["clips"] == 2 and list(result["GNSDR"]) == ["accompaniment", "vocals"]
    for value in result["GNSDR"].values():
        assert abs(value) < 0.01
    # GNSDR/GSIR/GSAR recomputed here from the files, length-weighted
    nsdr, sir, sar, lengths = [], [], [], []
    clips = split_clips(list_clips(mir1k), "test")
    assert [row["name"] for row in result["per_clip"]] == [c.name for c in clips]
    for clip, output in zip(clips, model.outputs, strict=True):
        audio, _ = sf.read(str(clip.path), dtype="float64", always_2d=True)
        refs = audio.T  # (accompaniment, vocals): left, right
        estimates = output.double().numpy()[[1, 0]]  # the model's order is (vocals, acc.)
        scores = bss_eval_sources(refs, estimates)
        baseline = bss_eval_sources(refs, np.repeat(audio.mean(axis=1)[None], 2, axis=0))
        nsdr.append(scores.sdr - baseline.sdr)
        sir.append(scores.sir)
        sar.append(scores.sar)
        lengths.append(audio.shape[0])
    weights = np.array(lengths) / sum(lengths)
    for key, values in (("GNSDR", nsdr), ("GSIR", sir), ("GSAR", sar)):
        np.testing.assert_allclose(
            list(result[key].values()), weights @ np.array(values), atol=1e-6
        )
    # the voice is the louder source of these clips, so the mixture estimates it better
    assert result["GSIR"]["vocals"] > result["GSIR"]["accompaniment"]
    # at 8 kHz the mixture goes through the resampler both ways: still finite scores
    low = evaluate_mir1k(_HalfMixture(8000), mir1k, max_clips=1)
    assert low["clips"] == 1 and all(np.isfinite(v) for v in low["GNSDR"].values())


def test_score_clip_matches_mir_eval() -> None:
    mir_eval = pytest.importorskip("mir_eval")
    rng = np.random.default_rng(0)
    refs = rng.standard_normal((2, 8000))
    mixture = refs.sum(axis=0)
    estimates = refs + 0.3 * rng.standard_normal(refs.shape) + 0.2 * refs[::-1]
    ours = score_clip(refs, estimates, mixture)
    with pytest.warns(FutureWarning):  # deprecated in mir_eval 0.8, still the reference
        sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(refs, estimates)
    with pytest.warns(FutureWarning):
        sdr_mix = mir_eval.separation.bss_eval_sources(refs, np.stack([mixture, mixture]))[0]
    np.testing.assert_allclose(ours["SDR"], sdr, atol=1e-3)
    np.testing.assert_allclose(ours["SIR"], sir, atol=1e-3)
    np.testing.assert_allclose(ours["SAR"], sar, atol=1e-3)
    np.testing.assert_allclose(ours["NSDR"], sdr - sdr_mix, atol=1e-3)
    assert (ours["NSDR"] > 3).all()  # a real improvement over the mixture


def test_write_from_musdb_skips_stretches_without_singing(tmp_path: Path) -> None:
    # 3 s of song: voice in the first and last second only, accompaniment throughout.
    rate = 16000
    t = np.arange(3 * rate) / rate
    vocals = 0.3 * np.sin(2 * np.pi * 440 * t)
    vocals[rate : 2 * rate] = 0.0
    accompaniment = 0.2 * np.sin(2 * np.pi * 110 * t)
    track = tmp_path / "musdb" / "train" / "Song"
    track.mkdir(parents=True)
    sf.write(track / "vocals.wav", np.stack([vocals, vocals], axis=1), rate)
    mixture = vocals + accompaniment
    sf.write(track / "mixture.wav", np.stack([mixture, mixture], axis=1), rate)
    paths = write_mir1k_from_musdb(tmp_path / "musdb", tmp_path / "MIR-1K", clip_seconds=1.0)
    # the silent middle second is left out; clips stay numbered without a gap
    assert [p.name for p in paths] == ["abjones_1_01.wav", "abjones_1_02.wav"]
    for path in paths:
        clip, _ = sf.read(path)
        assert np.sqrt(np.mean(clip[:, 1] ** 2)) > 0.1
