"""``stemkit separate`` (``Separator.separate_file``) holds no more memory for a long song than
for a 1-minute one: decoding, separation and encoding all go in blocks.

Each run is a fresh interpreter that separates one generated 44.1 kHz stereo song (16-bit wav
of noise and tones) and reports its peak RSS (``ru_maxrss``): the identity model on 1 and 10
minutes, a tiny Open-Unmix at 8 kHz (resampling both ways, Wiener EM) on 1 and 5 minutes. The
bound: holding the song once as float32 costs 44100 · 2 · 4 bytes per second (190 MiB for 9
extra minutes; the in-memory path held it several times over: the mixture, every stem, the
stems resampled, about 2 MB per second in all); the streamed path may grow by less than a
tenth of that one copy (19 MiB for 9 minutes, 8.5 MiB for 4).

The children run with glibc's mmap threshold fixed at its initial 128 KiB
(``MALLOC_MMAP_THRESHOLD_``). By default glibc raises the threshold each time a large block is
freed, after which freed blocks stay in the heap, and the peak RSS then wanders by up to about
20 MiB with the order of allocations, whatever the song's length (measured here: 10 minutes
peaked 10 to 19 MiB above 1 minute, and 20 MiB below it in the middle of the run). A fixed
threshold returns freed blocks to the system, so the peak is what the program holds: the same
to 0.1 MiB for 1 and 10 minutes. ``bench/memory.py`` measures with the default allocator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

RATE = 44100
SHORT = 60  # seconds
#: Bytes per second of the song held once as float32 stereo.
HELD_PER_SECOND = RATE * 2 * 4

CHILD = r"""
import json, resource, sys
import torch
from stemkit.api import Separator
from stemkit.models import build

model_name, song, out = sys.argv[1:4]
torch.set_num_threads(1)
torch.manual_seed(0)
if model_name == "identity":
    model, segment = build("identity", sample_rate=44100), 15.0
else:  # a tiny bidirectional Open-Unmix with Wiener EM at 8 kHz: resampling both ways too
    model, segment = build(
        "umx", sources=("vocals", "drums"), hidden_size=8, nb_layers=1, sample_rate=8000,
        n_fft=256, n_hop=64, bandwidth=3000, niter=1,
    ), 30.0
Separator(model, segment=segment).separate_file(song, out)
print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_song(path: Path, seconds: int) -> Path:
    """Noise and two tones, written a block at a time (the test process holds no song)."""
    rng = np.random.default_rng(0)
    block = 10 * RATE
    with sf.SoundFile(path, "w", RATE, 2, subtype="PCM_16") as handle:
        for start in range(0, seconds * RATE, block):
            t = np.arange(start, start + block) / RATE
            tones = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)])
            handle.write((tones + 0.1 * rng.standard_normal((2, block))).T.astype(np.float32))
    return path


def peak_mib(tmp_path: Path, model_name: str, song: Path) -> float:
    out = tmp_path / f"out-{model_name}-{song.stem}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, model_name, str(song), str(out)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (out / song.stem).is_dir()
    return float(json.loads(result.stdout.splitlines()[-1])["peak_mib"])


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("songs")
    return {seconds: write_song(folder / f"{seconds}.wav", seconds) for seconds in (60, 300, 600)}


@pytest.mark.parametrize(("model_name", "long"), [("identity", 600), ("umx", 300)])
def test_peak_memory_does_not_grow_with_the_song(
    tmp_path: Path, songs: dict[int, Path], model_name: str, long: int
) -> None:
    bound = 0.1 * (long - SHORT) * HELD_PER_SECOND / 2**20
    short_peak = peak_mib(tmp_path, model_name, songs[SHORT])
    long_peak = peak_mib(tmp_path, model_name, songs[long])
    growth = long_peak - short_peak
    assert growth < bound, (
        f"{model_name}: {short_peak:.0f} MiB for {SHORT} s, {long_peak:.0f} MiB for {long} s: "
        f"grew by {growth:.1f} MiB, more than {bound:.1f} MiB (a tenth of holding it once)"
    )
