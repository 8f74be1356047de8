"""Experiment grids: train named variants of one preset, score them, tabulate the results.

A grid is a YAML file::

    base: configs/bsrnn_small_musdb18hq.yaml   # training preset every variant starts from
    root: runs/grids/bsrnn                      # variant <name> runs in <root>/<name>
    overrides: [optim.scheduler=step]           # dotted overrides shared by every variant
    evaluate: {subset: test, segment: 10.0, overlap: 0.25}   # optional; subset: valid too
    published: ../published/bsrnn_replication.yaml        # optional: the study's numbers
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
then scores its best checkpoint on the grid's split (``evaluate.subset``: ``test``, or ``valid``,
the tracks training monitors) with :func:`stemkit.evaluation.evaluate` into
``<root>/<name>/eval/summary.json``. :func:`grid_table` gathers these into the table of the BSRNN
replication: uSDR per source and on average (the replication's metric), the average cSDR, the
size in millions of parameters, the energy, and the training time; with a ``published`` file
(:class:`Published`), the study's number of each row beside ours.
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

#: Splits a grid's variants may be scored on (``evaluate.subset``).
EVALUATION_SPLITS = ("train", "valid", "test")

#: Placeholder of a value the table cannot give.
MISSING = "–"

#: Numbers a published row may give besides its ``label`` and the scores of its ``sources``
#: (and besides table keys ``<score>_<source>`` of :data:`SCORE_KINDS`, e.g. ``gsir_vocals``).
PUBLISHED_COLUMNS = (
    "average",
    "parameters_m",
    "energy_kwh_green_algorithms",
    "energy_kwh_codecarbon",
    "final_train_loss",
    "training_hours",
)

#: Scores a table key may name, as ``<kind>_<source>``: MUSDB (uSDR, cSDR) and MIR-1K (global
#: NSDR, SIR, SAR).
SCORE_KINDS = ("usdr", "csdr", "gnsdr", "gsir", "gsar")

#: Epochs whose energy the BSRNN replication measured before extrapolating to the whole run
#: (reference/anchors.md): its energy column is (energy of these epochs / their number) x epochs.
EXTRAPOLATED_EPOCHS = 3


@dataclass
class Published:
    """A study's own numbers for the rows of a grid, read from a YAML data file.

    The file names its ``source`` and the ``metric`` and ``split`` of its scores, and holds
    ``rows`` keyed by variant name: a ``label`` (the study's name of the row), a score per
    source and their ``average`` (in ``metric``), any of :data:`PUBLISHED_COLUMNS`, and other
    scores under their table key (``<kind>_<source>``, kinds :data:`SCORE_KINDS`). A variant
    without a row is an addition of ours.
    """

    path: Path
    source: str
    metric: str
    split: str
    sources: list[str]
    rows: dict[str, dict[str, Any]]


def load_published(path: Path) -> Published:
    """Read and check a published-numbers file (see :class:`Published`).

    Raises:
        StemkitError: a missing or malformed file; the message names it.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not path.is_file():
        raise StemkitError(f"{path}: no such published-numbers file")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OmegaConfBaseException, OSError, ValueError) as error:
        raise StemkitError(f"{path}: not a readable YAML file ({error})") from error
    if not isinstance(raw, dict) or not isinstance(raw.get("rows"), dict):
        raise StemkitError(f"{path}: needs source, metric, split, sources and a 'rows' mapping")
    missing = [key for key in ("source", "metric", "split", "sources") if not raw.get(key)]
    if missing:
        raise StemkitError(f"{path}: missing key(s) {', '.join(missing)}")
    sources = [str(s) for s in raw["sources"]]
    allowed = {"label", *sources, *PUBLISHED_COLUMNS}
    rows: dict[str, dict[str, Any]] = {}
    for name, row in raw["rows"].items():
        if not isinstance(row, dict) or not row.get("label"):
            raise StemkitError(f"{path}: row {name!r} needs a 'label'")
        unknown = {key for key in row if key not in allowed and not _is_score_key(str(key))}
        if unknown:
            raise StemkitError(
                f"{path}: row {name!r} has unknown key(s) {', '.join(sorted(map(str, unknown)))}"
            )
        rows[str(name)] = dict(row)
    return Published(path, str(raw["source"]), str(raw["metric"]), str(raw["split"]), sources, rows)


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
    published: Published | None = None

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
    unknown = set(raw) - {"base", "root", "overrides", "variants", "evaluate", "published"}
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
    subset = str(evaluation.get("subset", "test"))
    if subset not in EVALUATION_SPLITS:
        raise StemkitError(
            f"{path}: evaluate.subset={subset!r}: choose one of {', '.join(EVALUATION_SPLITS)}"
        )
    published = None
    if raw.get("published") is not None:
        published = load_published(_locate(str(raw["published"]), path))
        orphans = sorted(set(published.rows) - set(names))
        if orphans:
            raise StemkitError(
                f"{path}: published row(s) {', '.join(orphans)} of {published.path} match no "
                "variant name"
            )
    segment = evaluation.get("segment", 10.0)
    return Grid(
        path=path,
        base=None if raw.get("base") is None else _locate(str(raw["base"]), path),
        root=_locate(str(raw["root"]), path),
        overrides=_string_list(raw.get("overrides"), path),
        variants=variants,
        subset=subset,
        segment=None if segment is None else float(segment),
        overlap=float(evaluation.get("overlap", 0.25)),
        published=published,
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
        valid_fraction=config.data.valid_fraction,
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
    """One row per variant, from its ``eval/summary.json``; values are None where missing.

    Keys: ``model``; ``usdr_<source>``, ``csdr_<source>`` (sources and ``average``);
    ``parameters_m``, ``energy_kwh_green_algorithms``, ``energy_kwh_codecarbon``,
    ``training_hours``, and both energies the replication's way (``..._extrapolated``: the
    first :data:`EXTRAPOLATED_EPOCHS` epochs' energy per epoch times the epochs trained); with
    a published file, ``label`` (the study's row name, or ``None`` for an addition of ours) and
    ``paper_<key>`` for each of the study's numbers of that row.
    """
    published = grid.published
    rows = []
    for variant in grid.variants:
        path = grid.run_dir(variant) / "eval" / "summary.json"
        row: dict[str, Any] = {"model": variant.name}
        row.update(_study_cells(grid.run_dir(variant), path))
        if _scored(path) and "mir1k" not in json.loads(path.read_text()):
            summary = json.loads(path.read_text())
            for source, scores in summary["sources"].items():
                row[f"usdr_{source}"] = scores["uSDR"]
                row[f"csdr_{source}"] = scores.get("cSDR")
            row["parameters_m"] = summary["parameters"] / 1e6
            totals = summary["ledger_totals"]
            row["energy_kwh_green_algorithms"] = totals["energy_kwh"]
            row["energy_kwh_codecarbon"] = totals.get("codecarbon_kwh")
            row["training_hours"] = totals["wall_seconds"] / 3600.0
        if _scored(path):
            row.update(_extrapolated_energy(grid.run_dir(variant)))
        if published is not None:
            paper = published.rows.get(variant.name)
            row["label"] = None if paper is None else paper["label"]
            for key, value in (paper or {}).items():
                if key != "label":
                    row[_paper_key(key, published)] = value
        rows.append(row)
    return rows


@dataclass(frozen=True)
class Column:
    """A column of the results table: the row key, its title, its number format, and how a
    measured cell is compared with a published one (``"diff"``: ours − published; ``"ratio"``:
    ours ÷ published, for energy and time, which differ by orders of magnitude between a
    CPU-sized run and a study's GPU run)."""

    key: str
    title: str
    fmt: str
    compare: str = "diff"
    #: The published key compared with this column, when it is not ``key`` itself.
    paper_key: str | None = None


def table_columns(
    rows: list[dict[str, Any]], published: Published | None, scores: str, paper: bool
) -> list[Column]:
    """The columns of :func:`grid_table`, those no row can fill left out.

    Args:
        rows: :func:`grid_rows`.
        published: the grid's published numbers, if any.
        scores: per-source scores shown: ``"usdr"``, ``"csdr"`` or ``"both"``.
        paper: the ``--paper`` layout: the published energy sits beside the extrapolated
            energy (the published runs were measured that way), not the measured one.
    """
    keys = dict.fromkeys(k for row in rows for k in row)
    found = [key[5:] for key in keys if key[:5] == "usdr_"]
    order = [*(published.sources if published else []), *found]
    sources = [s for s in dict.fromkeys(order) if s != "average"]
    kinds = ("usdr", "csdr") if scores == "both" else (scores,)
    names = {"usdr": "uSDR", "csdr": "cSDR"}
    columns = [*_study_columns(rows)]  # the study's own columns first
    columns += [
        Column(f"{kind}_{s}", f"{s.capitalize()} {names[kind]}", "{:.2f}")
        for kind in kinds
        for s in sources
    ]
    columns += [
        Column("usdr_average", "Avg uSDR", "{:.2f}"),
        Column("csdr_average", "Avg cSDR", "{:.2f}"),
        Column("parameters_m", "Params (M)", "{:.2f}"),
    ]
    if paper:
        columns += [
            Column("energy_kwh_green_algorithms", "Energy GA (kWh)", "{:.3g}", "ratio", ""),
            Column("energy_kwh_codecarbon", "Energy CC (kWh)", "{:.3g}", "ratio", ""),
            Column(
                "energy_kwh_green_algorithms_extrapolated",
                f"Energy GA, {EXTRAPOLATED_EPOCHS} ep. extrapolated (kWh)",
                "{:.3g}",
                "ratio",
                "energy_kwh_green_algorithms",
            ),
            Column(
                "energy_kwh_codecarbon_extrapolated",
                f"Energy CC, {EXTRAPOLATED_EPOCHS} ep. extrapolated (kWh)",
                "{:.3g}",
                "ratio",
                "energy_kwh_codecarbon",
            ),
        ]
    else:
        columns += [
            Column("energy_kwh_green_algorithms", "Energy GA (kWh)", "{:.3g}", "ratio"),
            Column("energy_kwh_codecarbon", "Energy CC (kWh)", "{:.3g}", "ratio"),
        ]
    columns.append(Column("training_hours", "Train time (h)", "{:.3g}", "ratio"))
    # Scores no row has, measured or published (a MIR-1K grid's uSDR), are left out.
    kept = []
    for column in columns:
        score = column.key.split("_")[0] in SCORE_KINDS
        paper_key = f"paper_{column.paper_key if column.paper_key is not None else column.key}"
        if not score or any(row.get(column.key) is not None or paper_key in row for row in rows):
            kept.append(column)
    return kept


def grid_table(
    grid: Grid, write: bool = True, *, paper: bool = False, scores: str | None = None
) -> str:
    """The replication-paper table of ``grid`` as Markdown (and ``<root>/table.md``/``.csv``).

    Columns: a score per source (uSDR, MDX definition, mean over tracks; or cSDR, BSS Eval v4,
    median over frames then tracks; ``scores``), the average uSDR and cSDR, parameters
    (millions), energy in kWh by the Green Algorithms estimate of the run's ledger and by
    CodeCarbon's offline tracker ("–" where it could not measure), and the training time. With
    a published file, each cell the study reports reads ``ours (published)``, and a column
    names the study's row (or marks an addition of ours). With ``paper``, every column the study
    reports is followed by the published column and the difference (ours − published; for
    energy and time the ratio, ours ÷ published), and the energy is also given the
    replication's way (:data:`EXTRAPOLATED_EPOCHS` epochs measured, extrapolated to the run),
    beside which the published energy sits. The CSV holds every number in its own column
    (both scores per source, both energies, the published numbers) whatever the layout.

    Args:
        grid: the grid.
        write: also write ``<root>/table.md`` (``table-paper.md`` with ``paper``) and
            ``<root>/table.csv``.
        paper: the published/difference layout (needs a published file to compare with).
        scores: per-source scores: ``"usdr"``, ``"csdr"`` or ``"both"``; default: the
            published file's metric when it is one of these, else uSDR.

    Raises:
        StemkitError: ``scores`` is not one of the three.
    """
    published = grid.published
    metric = published.metric.lower() if published else "usdr"
    scores = scores or (metric if metric in ("usdr", "csdr") else "usdr")
    if scores not in ("usdr", "csdr", "both"):
        raise StemkitError(f"scores={scores!r}: choose usdr, csdr or both")
    rows = grid_rows(grid)
    columns = table_columns(rows, published, scores, paper)

    def paper_value(row: dict[str, Any], column: Column) -> Any:
        return row.get(f"paper_{column.key if column.paper_key is None else column.paper_key}")

    compared = {c.key for c in columns if any(paper_value(r, c) is not None for r in rows)}
    header = ["Model", *(["Published row"] if published else [])]
    for column in columns:
        header.append(column.title)
        if paper and column.key in compared:
            header += ["published", "Δ" if column.compare == "diff" else "÷"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|"
        + "|".join(
            ["---"] * (2 if published else 1) + ["---:"] * (len(header) - 1 - bool(published))
        )
        + "|",
    ]
    for row in rows:
        cells = [row["model"]]
        if published:
            cells.append(row["label"] or "addition (not in the study)")
        for column in columns:
            ours = row.get(column.key)
            cell = _cell(ours, column.fmt)
            theirs = paper_value(row, column)
            if paper and column.key in compared:
                # As published (8.0, not 8): the study's own precision.
                cells += [cell, MISSING if theirs is None else str(theirs)]
                cells.append(_compare(ours, theirs, column))
            else:
                cells.append(cell if theirs is None else f"{cell} ({theirs})")
        lines.append("| " + " | ".join(cells) + " |")
    if any(c.key.startswith(("usdr_", "csdr_")) for c in columns):
        scored = (
            "uSDR (MDX: one SNR per track, mean over tracks) and cSDR (BSS Eval v4, median over "
            f"1 s frames then tracks) on the '{grid.subset}' split, in dB."
        )
    else:
        scored = (
            "GNSDR, GSIR, GSAR: the MIR-1K protocol (BSS Eval v3, length-weighted over the test "
            "singers' clips), in dB."
        )
    note = (
        f"\n{scored} Energy GA: Green Algorithms estimate from each run's cost ledger; "
        "CodeCarbon '–' where it could not measure.\n"
    )
    if published:
        where = "Published" if paper else "In parentheses: the published number"
        note += (
            f"{where} ({published.metric} on the '{published.split}' split; energy for the "
            f"whole published training run), from {published.source} ({published.path.name}).\n"
        )
    if paper:
        note += (
            "Δ: ours − published; ÷: ours ÷ published (energy, time). Extrapolated energy: the "
            f"replication's method, the first {EXTRAPOLATED_EPOCHS} epochs' energy per epoch "
            "times the epochs trained (a run of fewer epochs: its measured energy). Numbers of "
            "a run at another scale (a tiny grid on generated songs) are not expected to "
            "match the published ones.\n"
        )
    markdown = "\n".join(lines) + "\n" + note
    if write:
        _write_table(grid, rows, columns, markdown, paper)
    return markdown


def _write_table(
    grid: Grid, rows: list[dict[str, Any]], columns: list[Column], markdown: str, paper: bool
) -> None:
    """Write the Markdown table and a CSV of every number of ``rows`` under the grid's root."""
    published = grid.published
    sources = [c.key[5:] for c in columns if c.key.startswith(("usdr_", "csdr_"))]
    sources = [s for s in dict.fromkeys(sources) if s != "average"]
    keys = ["model", *(["label"] if published else [])]
    keys += [f"{kind}_{s}" for kind in ("usdr", "csdr") for s in [*sources, "average"]]
    keys += [c.key for c in columns if c.key not in keys]
    keys += [
        key
        for key in (
            "energy_kwh_green_algorithms_extrapolated",
            "energy_kwh_codecarbon_extrapolated",
        )
        if key not in keys
    ]
    keys += [k for k in dict.fromkeys(k for row in rows for k in row) if k.startswith("paper_")]
    keys = list(dict.fromkeys(keys))
    grid.root.mkdir(parents=True, exist_ok=True)
    (grid.root / ("table-paper.md" if paper else "table.md")).write_text(markdown)
    with open(grid.root / "table.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(keys)
        for row in rows:
            writer.writerow(["" if row.get(key) is None else row[key] for key in keys])


def _compare(ours: Any, theirs: Any, column: Column) -> str:
    """``ours − theirs`` (signed, the column's format) or ``ours ÷ theirs``; "–" if either is
    missing (or the ratio's denominator is zero)."""
    if ours is None or theirs is None or (isinstance(ours, float) and math.isnan(ours)):
        return MISSING
    if column.compare == "ratio":
        return MISSING if float(theirs) == 0 else f"{float(ours) / float(theirs):.3g}"
    return column.fmt.replace("{:", "{:+").format(ours - theirs)  # signed: +0.30, -1.20


def _extrapolated_energy(run_dir: Path) -> dict[str, float | None]:
    """Both energies of a run the replication's way (see :data:`EXTRAPOLATED_EPOCHS`).

    A run without recorded epochs (an oracle) costs 0; the CodeCarbon value is None when
    CodeCarbon did not measure every epoch used.
    """
    history = run_dir / "history.json"
    epochs = json.loads(history.read_text()) if history.is_file() else []
    if not epochs:
        return {
            "energy_kwh_green_algorithms_extrapolated": 0.0,
            "energy_kwh_codecarbon_extrapolated": None,
        }
    first = epochs[:EXTRAPOLATED_EPOCHS]
    scale = len(epochs) / len(first)
    codecarbon = [epoch.get("codecarbon_kwh") for epoch in first]
    return {
        "energy_kwh_green_algorithms_extrapolated": scale * sum(e["energy_kwh"] for e in first),
        "energy_kwh_codecarbon_extrapolated": (
            None if None in codecarbon else scale * sum(codecarbon)
        ),
    }


def _paper_key(key: str, published: Published) -> str:
    """The ``grid_rows`` key of a published row's ``key`` (scores: ``paper_<metric>_<source>``)."""
    if key in published.sources or key == "average":
        return f"paper_{published.metric.lower()}_{key}"
    return f"paper_{key}"


def _is_score_key(key: str) -> bool:
    """Whether ``key`` names a score column, ``<kind>_<source>`` with a kind of SCORE_KINDS."""
    kind, _, source = key.partition("_")
    return kind in SCORE_KINDS and bool(source)


#: Columns some studies add (present only when a row has them): the final training loss (the
#: Open-Unmix study) and the MIR-1K protocol scores (the Stacked Hourglass study).
STUDY_COLUMNS = (
    Column("final_train_loss", "Final loss", "{:.4g}"),
    *(
        Column(f"{metric.lower()}_{source}", f"{label} {metric}", "{:.2f}")
        for source, label in (("vocals", "Voice"), ("accompaniment", "Accomp."))
        for metric in ("GNSDR", "GSIR", "GSAR")
    ),
)


def _study_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """The :data:`STUDY_COLUMNS` some row has, measured or published."""
    return [c for c in STUDY_COLUMNS if any(c.key in r or f"paper_{c.key}" in r for r in rows)]


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
        valid_fraction=config.data.valid_fraction,  # the same validation tracks as trained rows
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
