#!/usr/bin/env bash
# Rebuilds the bundled default model from nothing: render the training songs, train, evaluate,
# and copy the best checkpoint into the package. The model card quotes this script's output.
set -euo pipefail
cd "$(dirname "$0")/.."
STEMKIT=${STEMKIT:-.venv/bin/stemkit}

$STEMKIT data synth data/synth --tracks 48 --duration 24 --seed 0 --workers 2
$STEMKIT train -c configs/umx_synth_small.yaml --quiet "$@"
$STEMKIT evaluate --model runs/umx_synth_small/best.pt --data data/synth -o runs/umx_synth_small/eval
cp runs/umx_synth_small/best.pt src/stemkit/pretrained/umx-synth-small.pt
cp runs/umx_synth_small/best.pt.sha256 src/stemkit/pretrained/umx-synth-small.pt.sha256
sed -i 's/best\.pt$/umx-synth-small.pt/' src/stemkit/pretrained/umx-synth-small.pt.sha256
