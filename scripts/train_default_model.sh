#!/usr/bin/env bash
# Rebuilds the bundled default model from nothing: render the training songs, train, evaluate
# on the generator's test split, copy the best checkpoint into the package, run the demo with
# it and write its model card from what the run recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUN=runs/umx_synth_small
DEST=src/stemkit/pretrained

$BIN/stemkit data synth data/synth --tracks 48 --duration 24 --seed 0 --workers 2
$BIN/stemkit train -c configs/umx_synth_small.yaml --quiet "$@"
$BIN/stemkit evaluate --model $RUN/best.pt --data data/synth -o $RUN/eval
cp $RUN/best.pt $DEST/umx-synth-small.pt
echo "$(sha256sum $DEST/umx-synth-small.pt | cut -d' ' -f1)  umx-synth-small.pt" \
    > $DEST/umx-synth-small.pt.sha256
$BIN/stemkit demo --out $RUN/demo
$BIN/python scripts/model_card.py $DEST/umx-synth-small.pt $RUN/eval/summary.json \
    $RUN/demo/scores.json $DEST/umx-synth-small.md
