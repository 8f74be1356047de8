"""Chunked separation keeps its working memory bounded as songs get longer.

Blocked vs unblocked Wiener filtering is already covered by
``tests/parity/test_openunmix_parity.py`` (blocks are independent norbert problems, and with
``niter=0`` the block size is never used), so this module checks the other half of bounded
memory: :func:`stemkit.inference.separate` with a bounded ``segment``.

Each measurement runs in a fresh interpreter: a tiny Open-Unmix (2 sources, hidden 16, 8 kHz,
``niter=1`` so that the Wiener EM runs too) separates 0.5 or 2 minutes of stereo noise, with
the kernel's peak-RSS mark (``VmHWM``) reset just before separating. The *overhead* is that
peak minus the RSS before separating minus the stems, which every method must return and so
grow linearly. Chunked, the overhead must not grow with the song; whole-song application with
the Wiener EM pooled over the whole song (``wiener_win_len=None``: one block of every frame,
the control showing that the measurement sees real growth) must.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MEASURE = r"""
import gc, json, sys
from pathlib import Path
import torch
from stemkit.inference import separate
from stemkit.models import build

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)

minutes, segment = float(sys.argv[1]), sys.argv[2]
win_len = None if sys.argv[3] == "none" else int(sys.argv[3])
torch.set_num_threads(1)
torch.manual_seed(0)
model = build(
    "umx", sources=("vocals", "accompaniment"), hidden_size=16, nb_layers=1, sample_rate=8000,
    n_fft=256, n_hop=64, bandwidth=3000, niter=1, wiener_win_len=win_len,
)
gen = torch.Generator().manual_seed(0)
mixture = 0.25 * torch.randn(2, int(minutes * 60 * 8000), generator=gen)
with torch.inference_mode():  # warm-up: lazy allocations of torch itself
    model(mixture[None, :, :8000])
gc.collect()
before = status("VmRSS")
Path("/proc/self/clear_refs").write_text("5")
stems = separate(model, mixture, segment=None if segment == "none" else float(segment))
peak = status("VmHWM")
stems_mib = stems.numel() * stems.element_size() / 2**20
print(json.dumps({"overhead_mib": peak - before - stems_mib, "stems_mib": stems_mib}))
"""


def _clear_refs_works() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return Path("/proc/self/status").exists()


def _overhead_mib(minutes: float, segment: str, win_len: str = "100") -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(minutes), segment, win_len],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return float(json.loads(done.stdout.strip().splitlines()[-1])["overhead_mib"])


@pytest.mark.slow  # three fresh interpreters importing torch: ~10-20 s on 2 shared cores
@pytest.mark.skipif(
    not _clear_refs_works(), reason="needs Linux /proc/self/clear_refs to reset the RSS peak"
)
def test_chunked_separation_memory_does_not_grow_with_song_length() -> None:
    chunked_short = _overhead_mib(0.5, "5")
    chunked_long = _overhead_mib(2.0, "5")
    whole_long = _overhead_mib(2.0, "none", "none")
    found = f"chunked 0.5 min {chunked_short:.1f}, 2 min {chunked_long:.1f}; whole {whole_long:.1f}"
    # the control: one Wiener block of 2 minutes (complex estimates and EM statistics of every
    # frame) takes well over 100 MiB, so the measurement does see growth with length
    assert whole_long > 100.0, found
    # chunked: 4x the audio, about the same working set (one 5 s chunk at a time), where
    # linear growth would add 3x the short song's overhead
    assert chunked_long < chunked_short + 0.05 * whole_long + 8.0, found
    assert chunked_long < 0.2 * whole_long, found
