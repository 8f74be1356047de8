"""Write the model card of the bundled checkpoint from the files its training run left behind.

Usage::

    python scripts/model_card.py CHECKPOINT OUT.md --demo DEMO_SCORES.json \
        --eval "LABEL=SUMMARY.json" ... [--previous "LABEL=SUMMARY.json" ...]

Each ``--eval`` is a ``stemkit evaluate`` summary of the checkpoint on one split, in the order
the card shows them; ``--previous`` gives the summary of the model it replaces on the split of
the same label, for the comparison table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from stemkit.artifacts.checkpoint import load_checkpoint, sha256_of

#: How each split was made, by label (the commands of scripts/train_default_model.sh).
SPLITS = {
    "in-distribution": (
        "the test split of the current generator's corpus: `stemkit data synth data/synth2 "
        "--tracks 48 --duration 24 --seed 0` (10 test songs, same soundfonts, voices and "
        "effect ranges as training)"
    ),
    "held-out": (
        "`stemkit data synth data/synth2-heldout --tracks 10 --duration 24 --seed 1 "
        "--heldout`: a soundfont, singing voices and effect settings training never used"
    ),
    "old test split": (
        "the test split of the corpus the previous default was trained on: `stemkit data synth "
        "data/synth1 --tracks 48 --duration 24 --seed 0 --soundfonts TimGM6mb --no-production "
        "--voice synth` (dry TimGM6mb songs, a synth patch as vocals)"
    ),
}

METRICS = (
    "uSDR: MDX 2021 SDR per track, mean over tracks; cSDR: BSS Eval v4 SDR on 1 s frames, "
    "median over frames then tracks; in dB. The mixture columns are the baseline (the mixture "
    "itself as every estimate)."
)


def _pairs(values: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for value in values:
        label, _, path = value.partition("=")
        out[label] = json.loads(Path(path).read_text())
    return out


def _score_table(summary: dict[str, Any]) -> list[str]:
    lines = [
        "| source | uSDR | mixture uSDR | gain | cSDR | mixture cSDR |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for source, row in summary["sources"].items():
        lines.append(
            f"| {source} | {row['uSDR']:.2f} | {row['mixture_uSDR']:.2f} | "
            f"{row['uSDR'] - row['mixture_uSDR']:+.2f} | {row['cSDR']:.2f} | "
            f"{row['mixture_cSDR']:.2f} |"
        )
    return lines


def _comparison(new: dict[str, Any], old: dict[str, Any]) -> list[str]:
    lines = [
        "| source | uSDR previous | uSDR this | change | cSDR previous | cSDR this | change |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for source, row in new["sources"].items():
        before = old["sources"][source]
        lines.append(
            f"| {source} | {before['uSDR']:.2f} | {row['uSDR']:.2f} | "
            f"{row['uSDR'] - before['uSDR']:+.2f} | {before['cSDR']:.2f} | {row['cSDR']:.2f} | "
            f"{row['cSDR'] - before['cSDR']:+.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--demo", type=Path, required=True)
    parser.add_argument("--eval", action="append", default=[], metavar="LABEL=SUMMARY")
    parser.add_argument("--previous", action="append", default=[], metavar="LABEL=SUMMARY")
    args = parser.parse_args()

    payload = load_checkpoint(args.checkpoint)
    evaluations = _pairs(args.eval)
    previous = _pairs(args.previous)
    demo = json.loads(args.demo.read_text())
    ledger = payload["ledger"]
    totals = ledger["totals"]
    prov = payload["provenance"]
    config = payload["config"]
    nb_params = sum(
        t.numel()
        for k, t in payload["state_dict"].items()
        if "running" not in k and "num_batches" not in k
    )
    name = args.checkpoint.name
    lines = [
        f"# Model card: `default` ({args.checkpoint.stem})",
        "",
        "A small Open-Unmix (one core per target, hidden size "
        f"{payload['model_kwargs'].get('hidden_size')}, STFT 4096/1024, bandwidth 16 kHz) "
        "trained by us on CPU on songs from stemkit's own generator. It is the model "
        "`stemkit separate` and `make demo` use when no other is named. **It has never heard a "
        "real recording**: every song it learned from was rendered from MIDI by the generator "
        "(soundfont instruments, a synthesised singing voice, simulated mixing). Expect it to "
        "separate generated songs well and real music poorly; for real music use a catalogue "
        "model (`stemkit models`) or train on MUSDB18.",
        "",
        "## Data",
        "",
        "76 training songs of 24 s (a seeded 10 % of them validate), from two corpora rendered "
        "by `scripts/train_default_model.sh`:",
        "",
        "* `stemkit data synth data/synth2 --tracks 48 --duration 24 --seed 0` (generator "
        "defaults: sung vocals from espeak-ng and Praat with vibrato, doubles and harmonies; "
        "FluidR3, TimGM6mb and MuseScore General soundfonts; song forms, humanised timing; a "
        "per-stem mixing chain with bus compression and a limiter applied as one gain curve, "
        "so the mixture is still the sum of the stems);",
        "* `stemkit data synth data/synth1 --tracks 48 --duration 24 --seed 0 --soundfonts "
        "TimGM6mb --no-production --voice synth` (the dry corpus the previous default "
        "learned from), so that nothing it separated well is lost.",
        "",
        "Both corpora's train splits are linked into one folder (`data/synthmix`, track names "
        "prefixed by corpus). Data fingerprint (train split): "
        f"`{prov.get('data_fingerprint')}`.",
        "",
        "## Training",
        "",
        f"`stemkit train -c configs/umx_synth_small.yaml data.root={config['data']['root']} "
        f"data.samples_per_track={config['data']['samples_per_track']} "
        f"optim.epochs={config['optim']['epochs']}`. Magnitude MSE, Adam (lr "
        f"{config['optim']['lr']}, plateau decay), batch {config['optim']['batch_size']} of "
        f"{config['data']['segment']:g} s excerpts, random remixing across tracks, "
        f"{len(ledger['epochs'])} epochs, input statistics fitted on the training mixtures. "
        "The bundled file is the best-validation checkpoint with the separator switched to one "
        "Wiener EM iteration (`niter=1`, as upstream Open-Unmix separates).",
        "",
        f"* parameters: {nb_params:,} (4 targets); file `{name}`, "
        f"{args.checkpoint.stat().st_size / 1e6:.1f} MB, sha256 `{sha256_of(args.checkpoint)}`",
        f"* code: stemkit {prov.get('stemkit')}, git `{prov.get('git_commit')}`"
        f"{' (dirty)' if prov.get('git_dirty') else ''}, torch {prov.get('torch')}, seed "
        f"{prov.get('seed')}",
        f"* machine: {prov.get('platform')}, {ledger['nb_cores']} CPU cores, no GPU",
        "",
        "## Cost",
        "",
        f"* wall time {totals['wall_seconds'] / 3600:.2f} h ({totals['core_hours']:.2f} "
        "core-hours), on a 2-core machine shared with other work for most of the run",
        f"* energy {totals['energy_kwh'] * 1000:.1f} Wh, carbon {totals['carbon_g']:.1f} g CO2e "
        "(Green Algorithms estimate; constants: "
        + ", ".join(f"{k} {v}" for k, v in ledger["constants"].items())
        + ")",
        "",
        "## Scores",
        "",
        f"`stemkit evaluate --model {name} --data DIR -o eval/` on each split. {METRICS}",
    ]
    for label, summary in evaluations.items():
        lines += [
            "",
            f"### {label} ({summary['nb_tracks']} songs)",
            "",
            f"{SPLITS.get(label, label)}.",
            "",
            *_score_table(summary),
        ]
    if previous:
        lines += [
            "",
            "### Against the model it replaces",
            "",
            "The previous default (`umx-synth-small`, the same architecture trained on the dry "
            "corpus only), on the same splits:",
        ]
        for label, old in previous.items():
            if label in evaluations:
                lines += ["", f"{label}:", "", *_comparison(evaluations[label], old)]
    lines += [
        "",
        "## Scores on the demo song",
        "",
        "`make demo` (`stemkit demo`: a 20 s song, generator seed 20261121, never seen in "
        "training), in dB:",
        "",
        "| source | uSDR | mixture uSDR | gain |",
        "| --- | --- | --- | --- |",
    ]
    for source, row in demo["sources"].items():
        lines.append(
            f"| {source} | {row['uSDR']:.2f} | {row['mixture_uSDR']:.2f} | "
            f"{row['improvement_uSDR']:+.2f} |"
        )
    lines += [
        "",
        "## Limits",
        "",
        "Trained on synthetic renderings only: General MIDI soundfonts, pop-like generated "
        "songs, a formant-synthesised singing voice with pseudo-words. It has heard no real "
        "recording, no real singer and no real mix. Not a substitute for a model trained on "
        "MUSDB18.",
        "",
    ]
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
