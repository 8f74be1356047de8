"""Experiment grids: train named variants of one preset, score them, tabulate the results.

A grid is a YAML file::

    base: configs/bsrnn_small_musdb18hq.yaml   # training preset every variant starts from
    root: runs/grids/bsrnn                      # variant <name> runs in <root>/<name>
    overrides: [optim.scheduler=step]           # dotted overrides shared by every variant
    evaluate: {subset: test, segment: 10.0, overlap: 0.25}   # optional
    variants:
      - name: small
        overrides: []
      - name: large
        overrides: [model.kwargs.n_features=128, model.kwargs.n_layers=12]
      - name: umx
        base: configs/umx_synth_small.yaml     # a variant may start from its own preset

Relative ``base`` and ``root`` paths are taken from the current directory when they exist
there, else from the grid file's folder. Each variant's configuration is its own ``base`` or the
grid's base preset, then the shared overrides, then the variant's, then any given on the command
line, and its ``run_dir`` is ``<root>/<name>``.

:func:`run_grid` trains each variant (resuming an interrupted run, skipping a finished one),
then scores its best checkpoint on the dataset's test split with :func:`stemkit.evaluation.evaluate`
into ``<root>/<name>/eval/summary.json``. :func:`grid_table` gathers these into the table of
the BSRNN replication paper: SDR (cSDR) per source and on average, the average uSDR, the size
in millions of parameters, the energy, and the training time.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stemkit.errors import StemkitError
from stemkit.train.config import TrainConfig, resolve_config

logger = logging.getLogger(__name__)

#: Placeholder of a value the table cannot give.
MISSING = "–"


@dataclass
class Variant:
    """One named row of a grid: dotted overrides on top of its own base or the grid's."""

    name: str
    overrides: list[str] = field(default_factory=list)
    base: Path | None = None


@dataclass
class Grid:
    """A parsed grid file (see the module docstring for the YAML layout)."""

    path: Path
    base: Path | None
    root: Path
    overrides: list[str]
    variants: list[Variant]
    subset: str = "test"
    segment: float | None = 10.0
    overlap: float = 0.25

    def run_dir(self, variant: Variant) -> Path:
        """The run folder of ``variant``."""
        return self.root / variant.name

    def config(self, variant: Variant, extra: list[str] | None = None) -> TrainConfig:
        """The resolved training configuration of ``variant`` (``extra`` overrides last)."""
        overrides = [*self.overrides, *variant.overrides, *(extra or [])]
        overrides.append(f"run_dir={self.run_dir(variant)}")
        return resolve_config(variant.base or self.base, overrides)


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid file.

    Raises:
        StemkitError: a missing file, an unknown key, a variant without a name or with a
            repeated name, or an override list that is not a list; the message names the file.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(path)
    if not path.is_file():
        raise StemkitError(f"{path}: no such grid file")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OmegaConfBaseException, OSError, ValueError) as error:
        raise StemkitError(f"{path}: not a readable YAML grid ({error})") from error
    if not isinstance(raw, dict):
        raise StemkitError(f"{path}: a grid is a mapping with base, root, variants")
    unknown = set(raw) - {"base", "root", "overrides", "variants", "evaluate"}
    if unknown:
        raise StemkitError(f"{path}: unknown grid key(s) {', '.join(sorted(map(str, unknown)))}")
    if "root" not in raw or not raw.get("variants"):
        raise StemkitError(f"{path}: a grid needs 'root' and a non-empty 'variants' list")
    variants = []
    for index, item in enumerate(raw["variants"]):
        if not isinstance(item, dict) or not item.get("name"):
            raise StemkitError(f"{path}: variant {index} needs a 'name'")
        unknown = set(item) - {"name", "overrides", "base"}
        if unknown:
            raise StemkitError(
                f"{path}: variant {item['name']!r} has unknown key(s) "
                f"{', '.join(sorted(map(str, unknown)))} (allowed: name, overrides, base)"
            )
        own_base = None if item.get("base") is None else _locate(str(item["base"]), path)
        variants.append(
            Variant(str(item["name"]), _string_list(item.get("overrides"), path), own_base)
        )
    names = [v.name for v in variants]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise StemkitError(f"{path}: variant name(s) used twice: {', '.join(repeated)}")
    evaluation = raw.get("evaluate") or {}
    unknown = set(evaluation) - {"subset", "segment", "overlap"}
    if unknown:
        raise StemkitError(f"{path}: unknown evaluate key(s) {', '.join(sorted(unknown))}")
    segment = evaluation.get("segment", 10.0)
    return Grid(
        path=path,
        base=None if raw.get("base") is None else _locate(str(raw["base"]), path),
        root=_locate(str(raw["root"]), path),
        overrides=_string_list(raw.get("overrides"), path),
        variants=variants,
        subset=str(evaluation.get("subset", "test")),
        segment=None if segment is None else float(segment),
        overlap=float(evaluation.get("overlap", 0.25)),
    )


def run_grid(
    grid: Grid,
    extra: list[str] | None = None,
    *,
    only: list[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Train and evaluate every variant of ``grid`` (or those named in ``only``).

    Finished runs are not trained again and scored runs are not scored again, so re-running
    a grid after an interruption picks up where it stopped.

    Returns:
        The ``eval/summary.json`` path of each variant run.
    """
    variants = _select(grid, only)
    # Resolve every configuration first: a typo in the last variant fails before hours of work.
    configs = {v.name: grid.config(v, extra) for v in variants}
    summaries = []
    for variant in variants:
        summaries.append(run_variant(grid, variant, configs[variant.name], progress=progress))
    return summaries


def run_variant(
    grid: Grid, variant: Variant, config: TrainConfig, *, progress: bool = True
) -> Path:
    """Train one variant unless its run is finished, then score it unless already scored."""
    from stemkit.artifacts.checkpoint import load_checkpoint, model_from_checkpoint
    from stemkit.evaluation import evaluate
    from stemkit.train.config import config_to_dict
    from stemkit.train.loop import check_same_run, run_finished, train

    run_dir = Path(config.run_dir)
    summary_path = run_dir / "eval" / "summary.json"
    if config.model.name in ORACLES:
        return _score_oracle(grid, variant, config, summary_path, progress)
    check_same_run(run_dir, config_to_dict(config))
    if run_finished(config):
        logger.info("[%s] training finished earlier: skipped", variant.name)
    else:
        logger.info("[%s] training in %s", variant.name, run_dir)
        train(config, progress=progress)
        summary_path.unlink(missing_ok=True)  # new weights: the old scores are stale
    if _scored(summary_path):
        logger.info("[%s] already evaluated: %s", variant.name, summary_path)
        return summary_path
    best = run_dir / "best.pt"
    if not best.is_file():
        raise StemkitError(f"{run_dir}: no best.pt to evaluate; the run saved no epoch")
    model = model_from_checkpoint(load_checkpoint(best), best)
    if config.data.format == "mir1k":
        return _score_mir1k(variant, config, model, summary_path)
    report = evaluate(
        model,
        config.data.root,
        grid.subset,
        method=variant.name,
        segment=grid.segment,
        overlap=grid.overlap,
        device=config.device,
        out_dir=run_dir / "eval",
        progress=progress,
    )
    ledger = load_checkpoint(run_dir / "last.pt")["ledger"]
    summary = report.summary()
    summary.update(
        variant=variant.name,
        subset=grid.subset,
        parameters=sum(p.numel() for p in model.parameters()),
        ledger_totals=ledger["totals"],
        epochs_trained=len(ledger["epochs"]),
    )
    summary_path.write_text(json.dumps(summary, indent=2))
    logger.info("[%s] scores:\n%s", variant.name, report.table())
    return summary_path


def grid_rows(grid: Grid) -> list[dict[str, Any]]:
    """One row per variant, from its ``eval/summary.json``; values are None where missing."""
    rows = []
    for variant in grid.variants:
        path = grid.run_dir(variant) / "eval" / "summary.json"
        row: dict[str, Any] = {"model": variant.name}
        row.update(_study_cells(grid.run_dir(variant), path))
        if _scored(path) and "mir1k" not in json.loads(path.read_text()):
            summary = json.loads(path.read_text())
            for source, scores in summary["sources"].items():
                row[f"sdr_{source}"] = scores["cSDR"]
            row["usdr_average"] = summary["sources"]["average"]["uSDR"]
            row["parameters_m"] = summary["parameters"] / 1e6
            totals = summary["ledger_totals"]
            row["energy_kwh_green_algorithms"] = totals["energy_kwh"]
            row["energy_kwh_codecarbon"] = totals.get("codecarbon_kwh")
            row["training_hours"] = totals["wall_seconds"] / 3600.0
        rows.append(row)
    return rows


def grid_table(grid: Grid, write: bool = True) -> str:
    """The replication-paper table of ``grid`` as Markdown (and ``<root>/table.md``/``.csv``).

    Columns: SDR (cSDR, dB) per source and their average, the average uSDR (dB), parameters
    (millions), energy in kWh by the Green Algorithms estimate of the run's ledger and by
    CodeCarbon's offline tracker ("–" where it could not measure), and the training time.
    """
    rows = grid_rows(grid)
    keys = dict.fromkeys(key for row in rows for key in row if key.startswith("sdr_"))
    sources = [key[4:] for key in keys if key != "sdr_average"]
    columns = [
        ("model", "Model", "{}"),
        *[(f"sdr_{s}", f"{s.capitalize()} SDR", "{:.2f}") for s in sources],
        ("sdr_average", "Avg SDR", "{:.2f}"),
        ("usdr_average", "Avg uSDR", "{:.2f}"),
        ("parameters_m", "Params (M)", "{:.2f}"),
        ("energy_kwh_green_algorithms", "Energy GA (kWh)", "{:.3g}"),
        ("energy_kwh_codecarbon", "Energy CC (kWh)", "{:.3g}"),
        ("training_hours", "Train time (h)", "{:.3g}"),
    ]
    columns[1:1] = _study_columns(rows)  # after the name, so the usual columns end the row
    cells = [[_cell(row.get(key), fmt) for key, _, fmt in columns] for row in rows]
    header = [title for _, title, _ in columns]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        *("| " + " | ".join(line) + " |" for line in cells),
    ]
    note = (
        f"\nSDR = cSDR (BSS Eval v4, median over 1 s frames then tracks) and uSDR (MDX, mean "
        f"over tracks), on the '{grid.subset}' split, in dB. Energy GA: Green Algorithms estimate "
        "from each run's cost ledger; CodeCarbon '–' where it could not measure.\n"
    )
    markdown = "\n".join(lines) + "\n" + note
    if write:
        grid.root.mkdir(parents=True, exist_ok=True)
        (grid.root / "table.md").write_text(markdown)
        with open(grid.root / "table.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([key for key, _, _ in columns])
            for row in rows:
                writer.writerow(["" if row.get(key) is None else row[key] for key, _, _ in columns])
    return markdown


#: Columns some studies add (present only when a row has them): the final training loss (the
#: Open-Unmix study) and the MIR-1K protocol scores (the Stacked Hourglass study).
STUDY_COLUMNS = (
    ("final_train_loss", "Final loss", "{:.4g}"),
    *(
        (f"{metric.lower()}_{source}", f"{label} {metric}", "{:.2f}")
        for source, label in (("vocals", "Voice"), ("accompaniment", "Accomp."))
        for metric in ("GNSDR", "GSIR", "GSAR")
    ),
)


def _study_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [column for column in STUDY_COLUMNS if any(column[0] in row for row in rows)]


def _study_cells(run_dir: Path, summary_path: Path) -> dict[str, Any]:
    """The last epoch's training loss, and for a MIR-1K run its scores, size, energy, time."""
    cells: dict[str, Any] = {}
    history = run_dir / "history.json"
    if history.is_file():
        epochs = json.loads(history.read_text())
        if epochs:
            cells["final_train_loss"] = epochs[-1]["train_loss"]
    if _scored(summary_path):
        summary = json.loads(summary_path.read_text())
        if "mir1k" in summary:
            for metric in ("GNSDR", "GSIR", "GSAR"):
                for source, value in summary["mir1k"][metric].items():
                    cells[f"{metric.lower()}_{source}"] = value
            totals = summary["ledger_totals"]
            cells.update(
                parameters_m=summary["parameters"] / 1e6,
                energy_kwh_green_algorithms=totals["energy_kwh"],
                energy_kwh_codecarbon=totals.get("codecarbon_kwh"),
                training_hours=totals["wall_seconds"] / 3600.0,
            )
    return cells


#: Model names that are oracles (``stemkit.models.oracle.KINDS``): a row that is scored, not
#: trained (the IRM row of the Demucs study).
ORACLES = ("ibm1", "ibm2", "irm1", "irm2", "mwf")


def _score_oracle(
    grid: Grid, variant: Variant, config: TrainConfig, summary_path: Path, progress: bool
) -> Path:
    """Score an oracle row on whole tracks; it has no parameters and costs no training."""
    from stemkit.evaluation import evaluate
    from stemkit.models import build

    if _scored(summary_path):
        logger.info("[%s] already evaluated: %s", variant.name, summary_path)
        return summary_path
    model = build(config.model.name, sources=config.data.sources, **config.model.kwargs)
    report = evaluate(
        model,
        config.data.root,
        grid.subset,
        method=variant.name,
        device=config.device,
        out_dir=summary_path.parent,
        progress=progress,
    )
    summary = report.summary()
    summary.update(
        variant=variant.name,
        subset=grid.subset,
        parameters=0,
        ledger_totals={"energy_kwh": 0.0, "codecarbon_kwh": None, "wall_seconds": 0.0},
        epochs_trained=0,
    )
    summary_path.write_text(json.dumps(summary, indent=2))
    return summary_path


def _score_mir1k(variant: Variant, config: TrainConfig, model: Any, summary_path: Path) -> Path:
    """Score a MIR-1K run by the protocol (GNSDR, GSIR, GSAR) into ``summary_path``."""
    from stemkit.artifacts.checkpoint import load_checkpoint
    from stemkit.evaluation.mir1k import evaluate_mir1k

    scores = evaluate_mir1k(model, config.data.root, sources=config.data.sources)
    ledger = load_checkpoint(Path(config.run_dir) / "last.pt")["ledger"]
    summary = {
        "variant": variant.name,
        "mir1k": {key: scores[key] for key in ("GNSDR", "GSIR", "GSAR", "clips")},
        "parameters": sum(p.numel() for p in model.parameters()),
        "ledger_totals": ledger["totals"],
        "epochs_trained": len(ledger["epochs"]),
    }
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2))
    logger.info("[%s] MIR-1K: %s", variant.name, summary["mir1k"])
    return summary_path


def _scored(summary_path: Path) -> bool:
    """Whether ``summary_path`` holds a complete variant summary (not only evaluate's)."""
    if not summary_path.is_file():
        return False
    try:
        return "parameters" in json.loads(summary_path.read_text())
    except ValueError:
        return False


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return fmt.format(value)


def _select(grid: Grid, only: list[str] | None) -> list[Variant]:
    if not only:
        return list(grid.variants)
    names = [v.name for v in grid.variants]
    unknown = [name for name in only if name not in names]
    if unknown:
        raise StemkitError(
            f"{grid.path}: no variant named {', '.join(unknown)}; variants: {', '.join(names)}"
        )
    return [v for v in grid.variants if v.name in only]


def _locate(value: str, grid_path: Path) -> Path:
    path = Path(value)
    if path.is_absolute() or path.exists():
        return path
    beside = grid_path.parent / path
    return beside if beside.exists() else path


def _string_list(value: Any, path: Path) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise StemkitError(f"{path}: overrides must be a list of KEY=VALUE strings, got {value!r}")
    return [str(item) for item in value]
