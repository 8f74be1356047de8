#!/usr/bin/env bash
# Rebuilds the bundled default model from nothing: render the training songs (two corpora and
# a held-out split), train, switch the separator to one Wiener EM iteration (as upstream
# Open-Unmix separates), evaluate on every split, copy into the package, run the demo with it
# and write its model card from what the run recorded. About 3 hours on 2 idle CPU cores.
# PREVIOUS=DIR (optional): evaluation folders of the model being replaced, named
# DIR/{synth2,synth2-heldout,synth1}/summary.json, for the card's comparison table.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUN=runs/umx_synthmix_small
DEST=src/stemkit/artifacts/weights
FILE=umx-synthmix-small

# The current generator's songs (sung vocals, three soundfonts, production), the held-out split
# (a soundfont, voices and effects training never uses) and the dry corpus of the previous
# default, so that what it separated well is not lost.
$BIN/stemkit data synth data/synth2 --tracks 48 --duration 24 --seed 0 --workers 2
$BIN/stemkit data synth data/synth2-heldout --tracks 10 --duration 24 --seed 1 --heldout --workers 2
$BIN/stemkit data synth data/synth1 --tracks 48 --duration 24 --seed 0 --workers 2 \
    --soundfonts TimGM6mb --no-production --voice synth

# One training folder: hard links to both corpora, track names prefixed by corpus (the loader
# does not follow symbolic links).
rm -rf data/synthmix
for corpus in synth1 synth2; do
    for split in train test; do
        mkdir -p data/synthmix/$split
        for track in data/$corpus/$split/*/; do
            cp -al "$track" "data/synthmix/$split/$corpus-$(basename "$track")"
        done
    done
done

$BIN/stemkit train -c configs/umx_synth_small.yaml data.root=data/synthmix run_dir=$RUN \
    data.samples_per_track=4 optim.epochs=120 --quiet "$@"
$BIN/python - "$RUN/best.pt" "$DEST/$FILE.pt" <<'PY'
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
sha256sum "$DEST/$FILE.pt" | sed "s#  .*#  $FILE.pt#" > "$DEST/$FILE.pt.sha256"
for split in synth2 synth2-heldout synth1; do
    $BIN/stemkit evaluate --model "$DEST/$FILE.pt" --data data/$split -o $RUN/eval-$split --force
done
$BIN/stemkit demo --model "$DEST/$FILE.pt" --out $RUN/demo
compare=()
if [[ -n "${PREVIOUS:-}" ]]; then
    compare=(--previous "in-distribution=$PREVIOUS/synth2/summary.json"
             --previous "held-out=$PREVIOUS/synth2-heldout/summary.json"
             --previous "old test split=$PREVIOUS/synth1/summary.json")
fi
$BIN/python scripts/model_card.py "$DEST/$FILE.pt" "$DEST/$FILE.md" --demo $RUN/demo/scores.json \
    --eval "in-distribution=$RUN/eval-synth2/summary.json" \
    --eval "held-out=$RUN/eval-synth2-heldout/summary.json" \
    --eval "old test split=$RUN/eval-synth1/summary.json" "${compare[@]}"
