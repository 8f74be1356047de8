#!/usr/bin/env bash
# Checks that stemkit installs like a library: builds a wheel from this checkout, installs it
# with its core dependencies only (torch, numpy, soundfile, soxr, tqdm) into an empty venv, and
# separates a generated song with `stemkit separate --model identity` and the bundled default.
#
#   scripts/check-wheel.sh            # work in a temporary folder, removed afterwards
#   WORK=/tmp/wheel-check KEEP=1 scripts/check-wheel.sh
#
# Needs the package registry. torch is pinned to its
# CPU build: an unpinned `pip install torch` on Linux pulls the CUDA wheels (gigabytes).
set -euo pipefail

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
# e.g. https://download.pytorch.org/whl/cpu where the registry serves only CUDA builds; empty:
# `pip install torch==X` as configured here (a local CPU wheel)
TORCH_INDEX=${TORCH_INDEX:-}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/stemkit-wheel.XXXXXX")}
KEEP=${KEEP:-0}

cleanup() { [ "$KEEP" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT
say() { echo "check-wheel: $*" >&2; }
started=$SECONDS

mkdir -p "$WORK/dist"
say "building the wheel in $WORK/dist"
"$PYTHON" -m pip wheel -q --no-deps -w "$WORK/dist" "$REPO"
wheel=$(ls "$WORK"/dist/stemkit-*.whl)

say "creating an empty venv"
"$PYTHON" -m venv "$WORK/venv"
bin="$WORK/venv/bin"
"$bin/python" -m pip install -q --upgrade pip
say "installing torch==$TORCH_VERSION (CPU)${TORCH_INDEX:+ from $TORCH_INDEX}"
"$bin/python" -m pip install -q ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "torch==$TORCH_VERSION"
say "installing $(basename "$wheel") and its core dependencies"
"$bin/python" -m pip install -q "$wheel"

# Nothing of the extras came along.
"$bin/python" - <<'PY'
import importlib.util, sys
optional = ["matplotlib", "omegaconf", "lightning", "lightning_fabric", "yaml", "pretty_midi",
            "codecarbon", "tensorboard"]
present = [name for name in optional if importlib.util.find_spec(name) is not None]
if present:
    sys.exit(f"check-wheel: optional packages installed with the core: {', '.join(present)}")
PY

say "generating a song"
song="$WORK/song.wav"
"$bin/python" - "$song" <<'PY'
import sys
import numpy as np
import soundfile as sf

rate = 44100
t = np.arange(3 * rate) / rate
rng = np.random.default_rng(0)
voice = 0.2 * np.sin(2 * np.pi * (220 * t + 30 * t**2))
bass = 0.25 * np.sin(2 * np.pi * 55 * t)
noise = 0.05 * rng.standard_normal(t.size)
sf.write(sys.argv[1], np.stack([voice + bass, bass + noise], axis=1), rate)
PY

cd "$WORK"  # not the checkout: the installed package must be the one that runs
for model in identity default; do
    say "stemkit separate --model $model"
    "$bin/stemkit" separate "$song" -o "$WORK/out-$model" --model "$model" --device cpu
done
test -f "$WORK/out-identity/song/mixture.wav"
for stem in vocals drums bass other; do
    test -f "$WORK/out-default/song/$stem.wav"
done
"$bin/python" -c "import stemkit; print(stemkit.__file__)" | grep -q "$WORK/venv/"
say "ok: the wheel installs and separates ($((SECONDS - started)) s)"
