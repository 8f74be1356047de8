#!/usr/bin/env bash
# Rebuilds the bundled default model from nothing: render the training songs, train, switch the
# separator to one Wiener EM iteration (as upstream Open-Unmix separates), evaluate on the
# generator's test split, copy into the package, run the demo with it and write its model card
# from what the run recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUN=runs/umx_synth_small
DEST=src/stemkit/artifacts/weights

# The bundled model heard dry TimGM6mb songs (generator 1.x); generator 2.0 adds song forms and
# humanisation even with these flags, so a rebuild gives similar, not identical, weights.
$BIN/stemkit data synth data/synth --tracks 48 --duration 24 --seed 0 --workers 2 \
    --soundfonts TimGM6mb --no-production --voice synth
$BIN/stemkit train -c configs/umx_synth_small.yaml --quiet "$@"
$BIN/python - "$RUN/best.pt" "$DEST/umx-synth-small.pt" <<'PY'
import sys

from stemkit import models
from stemkit.artifacts.checkpoint import load_checkpoint, save_checkpoint

payload = load_checkpoint(sys.argv[1])
kwargs = {**payload["model_kwargs"], "niter": 1}
model = models.build(payload["model_name"], **kwargs)
model.load_state_dict(payload["state_dict"])
meta = {key: payload[key] for key in ("config", "provenance", "ledger")}
save_checkpoint(sys.argv[2], model, **meta)
PY
$BIN/stemkit evaluate --model $DEST/umx-synth-small.pt --data data/synth -o $RUN/eval
$BIN/stemkit demo --out $RUN/demo
$BIN/python scripts/model_card.py $DEST/umx-synth-small.pt $RUN/eval/summary.json \
    $RUN/demo/scores.json $DEST/umx-synth-small.md
