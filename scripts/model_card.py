"""Write the model card of a bundled checkpoint from the files its training run left behind.

Usage: python scripts/model_card.py CHECKPOINT EVAL_SUMMARY DEMO_SCORES OUT.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from stemkit.artifacts.checkpoint import load_checkpoint, sha256_of


def main(checkpoint: str, eval_summary: str, demo_scores: str, out: str) -> None:
    payload = load_checkpoint(checkpoint)
    summary = json.loads(Path(eval_summary).read_text())
    demo = json.loads(Path(demo_scores).read_text())
    ledger = payload["ledger"]
    totals = ledger["totals"]
    prov = payload["provenance"]
    nb_params = sum(
        t.numel()
        for k, t in payload["state_dict"].items()
        if "running" not in k and "num_batches" not in k
    )
    rows = summary["sources"]
    lines = [
        "# Model card: `default` (umx-synth-small)",
        "",
        "A small Open-Unmix (one core per target, hidden size "
        f"{payload['model_kwargs'].get('hidden_size')}, STFT 4096/1024, bandwidth 16 kHz) "
        "trained by us on CPU on songs from stemkit's own generator. It is the model "
        "`stemkit separate` and `make demo` use when no other is named. It has never heard "
        "real recordings: expect it to separate generated songs well and real music poorly.",
        "",
        "## Data",
        "",
        "`stemkit data synth data/synth --tracks 48 --duration 24 --seed 0 --workers 2`: 48 "
        "songs of 24 s (38 train, of which a seeded 10 % validate; 10 test), FluidSynth with "
        "the TimGM6mb General MIDI soundfont. Data fingerprint (train split): "
        f"`{prov.get('data_fingerprint')}`.",
        "",
        "## Training",
        "",
        "`stemkit train -c configs/umx_synth_small.yaml` (or `scripts/train_default_model.sh` "
        "for data, training, evaluation and copy in one go). Magnitude MSE, Adam, "
        f"{len(ledger['epochs'])} epochs, input statistics fitted on the training mixtures.",
        "",
        f"* parameters: {nb_params:,} (4 targets); file `umx-synth-small.pt`, "
        f"{Path(checkpoint).stat().st_size / 1e6:.1f} MB, sha256 `{sha256_of(checkpoint)}`",
        f"* code: stemkit {prov.get('stemkit')}, git `{prov.get('git_commit')}`"
        f"{' (dirty)' if prov.get('git_dirty') else ''}, torch {prov.get('torch')}, seed "
        f"{prov.get('seed')}",
        f"* machine: {prov.get('platform')}, {ledger['nb_cores']} CPU cores, no GPU",
        "",
        "## Cost",
        "",
        f"* wall time {totals['wall_seconds'] / 60:.1f} min ({totals['core_hours']:.2f} "
        "core-hours)",
        f"* energy {totals['energy_kwh'] * 1000:.1f} Wh, carbon {totals['carbon_g']:.1f} g CO2e "
        "(Green Algorithms estimate; constants: "
        + ", ".join(f"{k} {v}" for k, v in ledger["constants"].items())
        + ")",
        "",
        f"## Scores on the generator's test split ({summary['nb_tracks']} unseen songs)",
        "",
        "`stemkit evaluate --model umx-synth-small.pt --data data/synth -o eval/`. uSDR: MDX "
        "2021 SDR per track, mean over tracks; cSDR: BSS Eval v4 SDR on 1 s frames, median "
        "over frames then tracks. The mixture row is the baseline (estimate = mixture).",
        "",
        "| source | uSDR | mixture uSDR | gain | cSDR | mixture cSDR |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for source, row in rows.items():
        lines.append(
            f"| {source} | {row['uSDR']:.2f} | {row['mixture_uSDR']:.2f} | "
            f"{row['uSDR'] - row['mixture_uSDR']:+.2f} | {row['cSDR']:.2f} | "
            f"{row['mixture_cSDR']:.2f} |"
        )
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
        "Trained on synthetic General MIDI renderings only (one soundfont, pop-like songs, a "
        "voice-like synth patch as vocals). Not a substitute for a model trained on MUSDB18.",
        "",
    ]
    Path(out).write_text("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:5])
