"""``stemkit demo``: the main job on built-in defaults, start to finish, offline.

1. render a song the default model has never seen (the generator, a seed outside its training
   range);
2. separate it with the bundled default model;
3. score the stems against the song's true stems, next to the mixture baseline;
4. write the stems, the scores and a spectrogram picture to the output folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

#: The bundled model was trained on the songs of dataset seed 0; other seeds give unseen songs.
DEMO_SEED = 20261121


def add_parser(subparsers: Any) -> None:
    """Declare ``stemkit demo``."""
    parser = subparsers.add_parser(
        "demo", help="render an unseen song, separate it with the bundled model and score it"
    )
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--model", default="default")
    parser.add_argument("--duration", type=float, default=20.0, help="song length in seconds")
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Render, separate, score, draw."""
    import torch

    from stemkit.artifacts import load_model
    from stemkit.audio import read_audio, write_audio
    from stemkit.data.synth import synthesize
    from stemkit.evaluation import score_track
    from stemkit.inference import separate
    from stemkit.metrics.store import track_document, write_json
    from stemkit.plots import spectrogram_grid

    out: Path = args.out
    model = load_model(args.model)
    print(f"model: {args.model} ({', '.join(model.sources)} at {model.sample_rate} Hz)")

    with tempfile.TemporaryDirectory(prefix="stemkit-demo-") as tmp:
        print(f"rendering a {args.duration:g} s song (seed {args.seed})")
        # The generator's defaults: a sung voice, several soundfonts, a mixing chain.
        [track] = synthesize(Path(tmp), 1, args.duration, args.seed, n_test=1)
        song = out / "song"
        if song.exists():
            shutil.rmtree(song)
        song.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(track, song)
    mixture, rate = read_audio(song / "mixture.wav", sample_rate=model.sample_rate)
    references = torch.stack(
        [read_audio(song / f"{s}.wav", sample_rate=model.sample_rate)[0] for s in model.sources]
    )

    print("separating")
    estimates = separate(
        model,
        mixture,
        segment=model.default_segment,
        batch_size=model.default_batch_size,
        progress=True,
    )
    stems_dir = out / "stems"
    stems_dir.mkdir(parents=True, exist_ok=True)
    for name, stem in zip(model.sources, estimates, strict=True):
        write_audio(stems_dir / f"{name}.wav", stem, rate)

    scores = score_track("demo", references, estimates, model.sources, rate)
    summary = {
        "model": args.model,
        "song": str(song),
        "metrics": {
            "uSDR": "MDX 2021 SDR over the whole song (eps 1e-7), dB",
            "SDR_frame_median": "BSS Eval v4 SDR on 1 s frames, median over frames, dB",
            "mixture_*": "the same with the mixture as the estimate (the baseline to beat)",
        },
        "sources": {
            s: {
                "uSDR": scores.usdr[s],
                "mixture_uSDR": scores.baseline_usdr[s],
                "improvement_uSDR": scores.usdr[s] - scores.baseline_usdr[s],
                "SDR_frame_median": _nanmedian(scores.sdr_frames[s]),
                "mixture_SDR_frame_median": _nanmedian(scores.baseline_sdr_frames[s]),
            }
            for s in model.sources
        },
    }
    (out / "scores.json").write_text(json.dumps(summary, indent=2))
    write_json(
        out / "scores_museval.json",
        track_document({s: {"SDR": scores.sdr_frames[s]} for s in model.sources}),
    )
    picture = spectrogram_grid(
        {
            "true": {"mixture": mixture, **dict(zip(model.sources, references, strict=True))},
            "estimated": dict(zip(model.sources, estimates, strict=True)),
        },
        rate,
        out / "spectrograms.png",
    )

    print(f"\n{'source':<10}{'uSDR':>8}{'mixture':>9}{'gain':>8}   (dB)")
    for s, row in summary["sources"].items():
        print(
            f"{s:<10}{row['uSDR']:>8.2f}{row['mixture_uSDR']:>9.2f}{row['improvement_uSDR']:>+8.2f}"
        )
    print(f"\nstems: {stems_dir}\nscores: {out / 'scores.json'}\npicture: {picture}")
    return 0


def _nanmedian(values: Any) -> float:
    import numpy as np

    return float(np.nanmedian(values)) if np.isfinite(values).any() else float("nan")
