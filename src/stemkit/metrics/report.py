"""Per-track scores, their aggregates, and the tables and plots made of them.

A :class:`TrackScores` holds one track's frame metrics (BSS Eval v4 on 1 s frames), its
whole-track uSDR and the same numbers for the mixture baseline (the mixture taken as the
estimate of every source). It converts to and from the museval-layout JSON document of
:mod:`stemkit.metrics.store`; documents museval wrote itself lack the ``stemkit`` key, so their
uSDR and baseline are unknown (NaN, shown as "–").

A :class:`Report` is one method's tracks. Its aggregates, per source:

* ``c<M>`` (cSDR, cISR, cSIR, cSAR): median over frames, then median over tracks (the
  MUSDB18 / SiSEC 2018 convention);
* ``c<M>_mean``: median over frames, then mean over tracks (some papers report this one);
* ``uSDR``: one SNR per track, mean over tracks (the MDX convention);
* ``mixture_cSDR``, ``mixture_uSDR``: the same for the mixture baseline.

The ``average`` row is the mean of the source rows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stemkit.errors import StemkitError
from stemkit.metrics.store import METRICS, read_json, track_document

#: The BSS Eval metrics, spelled out.
METRIC_NAMES: dict[str, str] = {
    "SDR": "source-to-distortion ratio",
    "ISR": "source-image-to-spatial-distortion ratio",
    "SIR": "source-to-interference ratio",
    "SAR": "source-to-artifacts ratio",
}

#: The order in which metrics are shown.
METRIC_ORDER: tuple[str, ...] = ("SDR", "ISR", "SIR", "SAR")

#: What the ``metrics`` entry of a summary says about each key.
LEGEND: dict[str, str] = {
    "uSDR": "utterance SDR: MDX 2021 SDR over the whole track (eps 1e-7), mean over tracks",
    "cSDR": "BSS Eval v4 source-to-distortion ratio on 1 s frames, median over frames, "
    "median over tracks",
    "cISR": "BSS Eval v4 source-image-to-spatial-distortion ratio, same aggregation as cSDR",
    "cSIR": "BSS Eval v4 source-to-interference ratio, same aggregation as cSDR",
    "cSAR": "BSS Eval v4 source-to-artifacts ratio, same aggregation as cSDR",
    "c*_mean": "median over frames, then MEAN over tracks of the per-track medians",
    "mixture_*": "the same with the mixture as the estimate of every source",
}

#: Shown in tables for a number that is not available (e.g. uSDR of a museval file).
MISSING = "–"


class ReportError(StemkitError):
    """A folder of per-track scores cannot be read or compared."""


@dataclass
class TrackScores:
    """Scores of one track.

    Attributes:
        name: track name.
        usdr: ``{source: dB}`` of the separator (NaN where unknown).
        sdr_frames: ``{source: (nb_frames,)}`` v4 frame SDR in dB (NaN on silent frames).
        baseline_usdr: ``{source: dB}`` of the mixture taken as the estimate.
        baseline_sdr_frames: frame SDR of that baseline (all-NaN where unknown).
        other_frames: ``{metric: {source: (nb_frames,)}}`` for ISR, SIR and SAR, present only
            when the full BSS Eval was computed.
        cost: what separating and scoring the track cost (time, energy; see
            :mod:`stemkit.energy`), stored under ``stemkit.cost``; empty when not measured.
    """

    name: str
    usdr: dict[str, float]
    sdr_frames: dict[str, np.ndarray]
    baseline_usdr: dict[str, float]
    baseline_sdr_frames: dict[str, np.ndarray]
    other_frames: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)

    def frames(self, metric: str) -> dict[str, np.ndarray]:
        """``{source: (nb_frames,)}`` of ``metric`` (``"SDR"``, ``"ISR"``, …); may be empty."""
        return self.sdr_frames if metric == "SDR" else self.other_frames.get(metric, {})

    def to_document(self) -> dict[str, Any]:
        """The museval-layout JSON document, with uSDR and the baseline under ``stemkit``."""
        frames = {
            source: {
                metric: self.frames(metric)[source]
                for metric in METRICS
                if source in self.frames(metric)
            }
            for source in self.sdr_frames
        }
        extra = {
            "uSDR": self.usdr,
            "mixture_uSDR": self.baseline_usdr,
            "mixture_SDR": {
                s: [_json_number(v) for v in f] for s, f in self.baseline_sdr_frames.items()
            },
        }
        if self.cost:
            extra["cost"] = self.cost
        return track_document(frames, extra=extra)

    @classmethod
    def from_document(cls, name: str, document: Mapping[str, Any]) -> TrackScores:
        """Read a document back (ours, or museval's: then uSDR and the baseline are NaN).

        Frame values come back rounded to 5 decimals, as they are stored.
        """
        try:
            targets = {t["name"]: t["frames"] for t in document["targets"]}
            per_metric: dict[str, dict[str, np.ndarray]] = {}
            for metric in METRICS:
                columns = {
                    source: np.array(
                        [_float(f["metrics"].get(metric)) for f in frames], dtype=np.float64
                    )
                    for source, frames in targets.items()
                }
                # museval writes all four; ours leave the unscored ones NaN: keep those out
                if metric == "SDR" or any(np.isfinite(c).any() for c in columns.values()):
                    per_metric[metric] = columns
        except (KeyError, TypeError, AttributeError) as err:
            raise ReportError(
                f"track '{name}': not a museval-layout score document (missing {err}); "
                "expected {'targets': [{'name': ..., 'frames': [{'metrics': {...}}]}]}"
            ) from err
        extra = document.get("stemkit", {})
        sources = list(targets)
        nan = dict.fromkeys(sources, math.nan)
        baseline = extra.get("mixture_SDR", {})
        return cls(
            name=name,
            usdr=_per_source(nan, extra.get("uSDR", {})),
            sdr_frames=per_metric["SDR"],
            baseline_usdr={
                s: _float(v) for s, v in {**nan, **extra.get("mixture_uSDR", {})}.items()
            },
            baseline_sdr_frames={
                s: np.array([_float(v) for v in baseline.get(s, [math.nan])], dtype=np.float64)
                for s in sources
            },
            other_frames={m: c for m, c in per_metric.items() if m != "SDR"},
            cost=dict(extra.get("cost", {})),
        )


@dataclass
class Report:
    """Scores of one method over a set of tracks, with their aggregates."""

    method: str
    sources: tuple[str, ...]
    tracks: list[TrackScores] = field(default_factory=list)
    #: totals of the tracks' costs, when every track's was measured (set by the evaluation)
    cost: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> tuple[str, ...]:
        """The BSS Eval metrics every track has (``("SDR",)`` in fast mode, else all four)."""
        return tuple(
            m
            for m in METRIC_ORDER
            if self.tracks and all(set(self.sources) <= set(t.frames(m)) for t in self.tracks)
        ) or ("SDR",)

    def summary(self) -> dict[str, Any]:
        """Aggregates per source and their average over sources (see the module docstring)."""
        rows: dict[str, dict[str, float]] = {}
        for source in self.sources:
            row = {"uSDR": _mean([t.usdr.get(source, math.nan) for t in self.tracks])}
            for metric in self.metrics():
                medians = [_median(t.frames(metric)[source]) for t in self.tracks]
                row[f"c{metric}"] = median_of_medians(medians)
                row[f"c{metric}_mean"] = _mean(medians)
            row["mixture_uSDR"] = _mean(
                [t.baseline_usdr.get(source, math.nan) for t in self.tracks]
            )
            row["mixture_cSDR"] = median_of_medians(
                [_median(t.baseline_sdr_frames.get(source, np.array([]))) for t in self.tracks]
            )
            rows[source] = row
        keys = rows[self.sources[0]].keys() if self.sources else []
        rows["average"] = {key: _mean([rows[s][key] for s in self.sources]) for key in keys}
        return {
            "method": self.method,
            "nb_tracks": len(self.tracks),
            "metrics": {
                key: text
                for key, text in LEGEND.items()
                if key[1:] not in METRIC_ORDER or key[1:] in self.metrics()
            },
            "sources": rows,
            **({"cost": self.cost} if self.cost else {}),
        }

    def columns(self) -> list[tuple[str, str]]:
        """``(summary key, column title)`` of the table, in order."""
        columns = [("uSDR", "uSDR"), ("cSDR", "cSDR"), ("cSDR_mean", "cSDR mean")]
        columns += [(f"c{m}", f"c{m}") for m in self.metrics() if m != "SDR"]
        return [*columns, ("mixture_uSDR", "mix uSDR"), ("mixture_cSDR", "mix cSDR")]

    def table(self) -> str:
        """The summary as a fixed-width text table (dB)."""
        summary = self.summary()["sources"]
        columns = self.columns()
        header = f"{'source':<10}" + "".join(f"{title:>11}" for _, title in columns)
        lines = [f"{self.method} on {len(self.tracks)} track(s), scores in dB", header]
        for source in [*self.sources, "average"]:
            cells = "".join(f"{_fmt(summary[source][key]):>11}" for key, _ in columns)
            lines.append(f"{source:<10}{cells}")
        lines.append("cSDR: median over 1 s frames, then over tracks; cSDR mean: mean over tracks")
        return "\n".join(lines)

    def markdown(self) -> str:
        """The report as Markdown: one table per metric family, the baseline, a legend."""
        summary = self.summary()["sources"]
        lines = [
            f"# {self.method}: separation scores",
            "",
            f"{len(self.tracks)} track(s); every number in dB, higher is better.",
            "",
        ]
        metrics = self.metrics()
        header = ["source", "uSDR (mean)"]
        for m in metrics:
            header += [f"c{m} (median)", f"c{m} (mean)"]
        lines += [_md_row(header), _md_row(["---"] * len(header))]
        for source in [*self.sources, "average"]:
            row = summary[source]
            cells = [source, _fmt(row["uSDR"])]
            for m in metrics:
                cells += [_fmt(row[f"c{m}"]), _fmt(row[f"c{m}_mean"])]
            lines.append(_md_row(cells))
        lines += [
            "",
            "## Mixture baseline (the mixture as the estimate of every source)",
            "",
            _md_row(["source", "uSDR (mean)", "cSDR (median)"]),
            _md_row(["---"] * 3),
        ]
        for source in [*self.sources, "average"]:
            row = summary[source]
            lines.append(_md_row([source, _fmt(row["mixture_uSDR"]), _fmt(row["mixture_cSDR"])]))
        lines += ["", "## Metrics", ""]
        lines.append(f"- uSDR: {LEGEND['uSDR']}.")
        for m in metrics:
            lines.append(
                f"- c{m}: BSS Eval v4 {METRIC_NAMES[m]} on 1 s frames; (median): median over "
                "frames then median over tracks; (mean): median over frames then mean over tracks."
            )
        lines += ["", "## Per track (median over frames of SDR)", ""]
        lines += [_md_row(["track", *self.sources]), _md_row(["---"] * (len(self.sources) + 1))]
        for track in self.tracks:
            lines.append(
                _md_row([track.name, *(_fmt(_median(track.sdr_frames[s])) for s in self.sources)])
            )
        return "\n".join(lines) + "\n"


def median_of_medians(medians: Sequence[float]) -> float:
    """Median over tracks of per-track values, skipping NaN; NaN when none is finite."""
    finite = [m for m in medians if not math.isnan(m)]
    return float(np.median(finite)) if finite else math.nan


def track_medians(report: Report, source: str, metric: str = "SDR") -> list[float]:
    """Per-track median over frames of ``metric`` for ``source`` (NaN tracks left out)."""
    values = [_median(t.frames(metric).get(source, np.array([]))) for t in report.tracks]
    return [v for v in values if not math.isnan(v)]


def load_report(folder: str | os.PathLike[str], subset: str = "test") -> Report:
    """Read a folder of per-track JSON files (ours or museval's) into a :class:`Report`.

    ``folder`` is either an evaluation output (holding ``<subset>/<track>.json``) or the folder
    of track files itself. The method is named by ``folder/evaluation.json`` when there is
    one, else by the folder's name.

    Raises:
        ReportError: no track file found, or a file that is not a score document.
    """
    import json

    folder = Path(folder)
    tracks_dir = folder / subset if (folder / subset).is_dir() else folder
    files = sorted(p for p in tracks_dir.glob("*.json") if not p.name.startswith("."))
    files = [p for p in files if p.name not in {"summary.json", "evaluation.json"}]
    if not folder.is_dir() or not files:
        raise ReportError(
            f"{folder}: no per-track score files found (looked for {tracks_dir}/<track>.json); "
            "pass the -o folder of `stemkit evaluate` or museval's output folder"
        )
    method = folder.resolve().name
    settings_file = folder / "evaluation.json"
    if settings_file.is_file():
        method = str(json.loads(settings_file.read_text()).get("method", method))
    tracks = []
    for path in files:
        try:
            document = read_json(path)
        except (OSError, ValueError) as err:
            raise ReportError(f"{path}: cannot read this score file ({err})") from err
        try:
            tracks.append(TrackScores.from_document(path.stem, document))
        except ReportError as err:
            raise ReportError(f"{path}: {err}") from err
    sources = tuple(tracks[0].sdr_frames)
    for path, track in zip(files, tracks, strict=True):
        if tuple(track.sdr_frames) != sources:
            raise ReportError(
                f"{path}: targets {', '.join(track.sdr_frames)} differ from "
                f"{', '.join(sources)} in {files[0].name}; one folder must hold one evaluation"
            )
    return Report(method=method, sources=sources, tracks=tracks)


def comparison_table(reports: Sequence[Report], markdown: bool = False) -> str:
    """Side by side, per source: cSDR (median/median) and uSDR of each method, in dB.

    Rows are the sources every method has (in the first method's order) and their average.
    """
    sources = _common_sources(reports)
    summaries = [r.summary()["sources"] for r in reports]
    rows: list[list[str]] = []
    for source in [*sources, "average"]:
        cells = [source]
        for summary in summaries:
            if source == "average":
                csdr = _mean([summary[s]["cSDR"] for s in sources])
                us = _mean([summary[s]["uSDR"] for s in sources])
            else:
                csdr, us = summary[source]["cSDR"], summary[source]["uSDR"]
            cells += [_fmt(csdr), _fmt(us)]
        rows.append(cells)
    header = ["source"]
    for report in reports:
        header += [f"{report.method} cSDR", f"{report.method} uSDR"]
    counts = ", ".join(f"{r.method}: {len(r.tracks)} track(s)" for r in reports)
    note = (
        "cSDR: BSS Eval v4 SDR, median over 1 s frames then median over tracks; "
        "uSDR: mean over tracks (– where the files do not hold it). dB."
    )
    if markdown:
        lines = [_md_row(header), _md_row(["---"] * len(header))]
        lines += [_md_row(r) for r in rows]
        return "\n".join(["# Comparison", "", counts, "", *lines, "", note]) + "\n"
    width = max(11, *(len(h) + 2 for h in header[1:]))
    lines = [f"{header[0]:<10}" + "".join(f"{h:>{width}}" for h in header[1:])]
    lines += [f"{r[0]:<10}" + "".join(f"{c:>{width}}" for c in r[1:]) for r in rows]
    return "\n".join([counts, *lines, note])


def plot_scores(report: Report, path: str | os.PathLike[str]) -> Path:
    """Box plot (with the tracks as dots) of per-track median SDR, one box per source."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 * len(report.sources) + 2, 4))
    data = [track_medians(report, s) for s in report.sources]
    _boxes(ax, data, positions=list(range(1, len(data) + 1)), width=0.5)
    ax.set_xticks(range(1, len(data) + 1), report.sources)
    ax.set_ylabel("SDR, median over 1 s frames (dB)")
    ax.set_title(f"{report.method}: per-track SDR ({len(report.tracks)} track(s))")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_comparison(reports: Sequence[Report], path: str | os.PathLike[str]) -> Path:
    """Grouped box plot: per source, one box of per-track median SDR per method."""
    plt = _pyplot()
    sources = _common_sources(reports)
    nb = len(reports)
    width = 0.8 / nb
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * nb * len(sources) + 2), 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, report in enumerate(reports):
        positions = [i + 1 - 0.4 + width * (k + 0.5) for i in range(len(sources))]
        data = [track_medians(report, s) for s in sources]
        _boxes(ax, data, positions, width * 0.9, color=colors[k % len(colors)])
        ax.plot([], [], "s", color=colors[k % len(colors)], label=report.method)
    ax.set_xticks(range(1, len(sources) + 1), sources)
    ax.set_ylabel("SDR, median over 1 s frames (dB)")
    ax.set_title("per-track SDR by method")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return _save(fig, path)


def write_report(report: Report, folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``report.md`` and ``scores.png`` into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    markdown = folder / "report.md"
    _atomic_text(markdown, report.markdown())
    return markdown, plot_scores(report, folder / "scores.png")


def write_comparison(
    reports: Sequence[Report], folder: str | os.PathLike[str]
) -> tuple[Path, Path]:
    """Write ``comparison.md`` and ``comparison.png`` into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    markdown = folder / "comparison.md"
    _atomic_text(markdown, comparison_table(reports, markdown=True))
    return markdown, plot_comparison(reports, folder / "comparison.png")


# --- helpers ----------------------------------------------------------------------------------


def _common_sources(reports: Sequence[Report]) -> list[str]:
    if not reports:
        raise ReportError("nothing to compare: give at least one folder of scores")
    sources = [s for s in reports[0].sources if all(s in r.sources for r in reports)]
    if not sources:
        names = "; ".join(f"{r.method}: {', '.join(r.sources)}" for r in reports)
        raise ReportError(f"the methods share no source, so they cannot be compared ({names})")
    return sources


def _boxes(
    ax: Any, data: list[list[float]], positions: list[float], width: float, **kw: Any
) -> None:
    color = kw.get("color", "C0")
    shown = [(d, p) for d, p in zip(data, positions, strict=True) if d]
    if shown:
        ax.boxplot(
            [d for d, _ in shown],
            positions=[p for _, p in shown],
            widths=width,
            showfliers=False,
            manage_ticks=False,
            boxprops={"color": color},
            medianprops={"color": color, "linewidth": 2},
            whiskerprops={"color": color},
            capprops={"color": color},
        )
    # every track as a dot, spread a little sideways (seeded: the picture is reproducible)
    rng = np.random.default_rng(0)
    for values, position in shown:
        jitter = rng.uniform(-width / 4, width / 4, size=len(values))
        ax.plot(position + jitter, values, "o", color=color, alpha=0.6, markersize=3)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _fmt(value: float) -> str:
    return MISSING if value is None or math.isnan(value) else f"{value:.2f}"


def _per_source(default: dict[str, float], values: Mapping[str, Any]) -> dict[str, float]:
    return {s: _float(v) for s, v in {**default, **values}.items()}


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _json_number(value: float) -> float:
    return math.nan if not math.isfinite(value) else round(float(value), 5)


def _median(frames: np.ndarray) -> float:
    frames = np.asarray(frames, dtype=np.float64)
    return float(np.nanmedian(frames)) if np.isfinite(frames).any() else math.nan


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan
