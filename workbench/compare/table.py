"""`workbench compare`: robust accuracy per attack × eps across runs, as a suite table: one row per run, one
"seed" each, so a cell shows its 95% Wilson interval ("83.5 [80.1-86.4]"). Rendered by suites.render (md, csv,
latex, json), exported by the TUI's Compare screen.

Torch-free and pydantic-free: it reads saved evaluation reports only. Which evaluations of a run: the
checkpoint of its newest saved report, and every saved report on that checkpoint merged, each metric from
the newest report that measured it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..atomic import atomic_write_text
from ..errors import WorkbenchError
from ..suites.render import FORMATS, render
from ..suites.table import (Framing, Measure, Metric, SuiteTable, TableCell, by_eps, chosen_columns, plain_columns,
                            report_measures)
from ..runs.evals import list_reports
from ..runs.files import RunPaths, read_json

SEED = 0  # a run is one measurement: the table's only "seed"
# The file each format is exported to (`FORMATS` names the formats).
SUFFIXES = {"md": ".md", "csv": ".csv", "latex": ".tex", "json": ".json"}
# Reports of another threat model than a white-box attack on the softmax head: their metrics are kept
# apart under a prefix ("prototype/PGD@0.1"), never merged with the plain ones.
VARIANTS: dict[str, Callable[[dict[str, Any]], str]] = {
    "head": lambda r: "" if str(r.get("head") or "softmax") == "softmax" else str(r["head"]),
    "transfer": lambda r: "transfer" if r.get("transfer_from") else "",
    "targeted": lambda r: "targeted" if r.get("targeted") is True else "",
}


@dataclass
class RunRef:
    """A run folder to compare, and the checkpoint asked for (None: the newest evaluated one)."""

    root: Path
    checkpoint: str | None = None

    @property
    def name(self) -> str:
        return self.named(self.root.name)

    def named(self, base: str) -> str:
        """`base`, and the checkpoint when one was asked for: "run (last.pt)"."""
        return base + (f" ({self.checkpoint})" if self.checkpoint else "")


@dataclass
class RunEvaluation:
    """What a run's saved reports say about one of its checkpoints."""

    checkpoint: str  # as the reports name it
    reports: list[Path]  # merged, newest first
    measures: dict[str, Measure] = field(default_factory=dict)
    metrics: dict[str, Metric] = field(default_factory=dict)
    skipped: list[Path] = field(default_factory=list)  # report files that could not be read


def resolve_run(path: str | Path) -> RunRef:
    """A run folder, or a checkpoint file (its run, that checkpoint's evaluations); else one error line."""
    p = Path(path)
    if p.is_file():
        run = RunPaths(p.absolute().parent.parent)
        if p.absolute().parent != run.checkpoints or not run.is_run():
            raise WorkbenchError(f"{p} is a file, but not a checkpoint of a run folder (RUN/checkpoints/NAME.pt)")
        return RunRef(run.root, p.name)
    if not p.is_dir():
        raise WorkbenchError(f"{p}: no such run folder or checkpoint")
    if not RunPaths(p).is_run():
        raise WorkbenchError(f"{p} is not a run folder (no config.yaml)")
    return RunRef(p)


def variant(report: dict[str, Any]) -> str:
    """'' for a plain report, else the prefix of its metric names ("prototype/", "transfer/")."""
    parts = [text for text in (kind(report) for kind in VARIANTS.values()) if text]
    return "/".join(parts) + "/" if parts else ""


def run_evaluation(run: RunRef) -> RunEvaluation | None:
    """The merged evaluations of the run's checkpoint; None when it has no saved report (on that checkpoint)."""
    evals = RunPaths(run.root).evals
    skipped: list[Path] = []
    newest = list_reports(evals, run.checkpoint, skipped=skipped)
    if not newest:
        return None
    summaries = newest if run.checkpoint else list_reports(evals, newest[0].checkpoint)
    found = RunEvaluation(newest[0].checkpoint, [], skipped=skipped)
    for rank, summary in enumerate(summaries):  # newest first: the first report to measure a metric gives it
        pairs = _measures(summary.path, rank * 1000)
        if pairs is None:
            found.skipped.append(summary.path)
            continue
        found.reports.append(summary.path)
        for metric, measure in pairs:
            if metric.name not in found.measures:
                found.measures[metric.name], found.metrics[metric.name] = measure, metric
    return found


def _measures(path: Path, start: int) -> list[tuple[Metric, Measure]] | None:
    """A report's metrics, named with its variant's prefix; None when the file cannot be read as a report."""
    report = read_json(path)
    if report is None:
        return None
    try:
        pairs = report_measures(report, str(path), start)
    except (KeyError, TypeError, ValueError):  # another process's file, maybe hand-edited
        return None
    prefix = variant(report)
    for metric, _ in pairs:
        metric.name = prefix + metric.name
    return pairs


def source_text(ev: RunEvaluation) -> str:
    """Where a run's numbers come from: "best.pt (2 reports)"."""
    return f"{Path(ev.checkpoint).name or '?'} ({len(ev.reports)} report{'s' * (len(ev.reports) != 1)})"


def _cell(run: str, metric: str, measure: Measure | None) -> TableCell:
    if measure is None:
        return TableCell(run, metric, [], [], [], [], missing_seeds=[SEED])
    return TableCell(run, metric, [measure.value], [SEED], [measure.n], [measure.source], ci95=measure.ci95)


def _notes(runs: list[tuple[str, RunRef, RunEvaluation | None]]) -> list[str]:
    evaluated = [(name, ev) for name, _, ev in runs if ev is not None]
    notes = ["Robust accuracy (%) with its [95% Wilson interval]. Per run: the checkpoint of its newest saved "
             "evaluation, every saved report on it merged, each metric from the newest report that measured it; "
             "'worst P@eps' is protocol P's worst case over its attacks."]
    if evaluated:
        notes.append("Checkpoints: " + "; ".join(f"{name}: {source_text(ev)}" for name, ev in evaluated) + ".")
    missing = [name for name, _, ev in runs if ev is None]
    if missing:
        notes.append("No saved evaluation: " + ", ".join(missing) + ".")
    skipped = [str(p) for _, _, ev in runs if ev is not None for p in ev.skipped]
    if skipped:
        notes.append("Unreadable reports left out: " + ", ".join(skipped) + ".")
    return notes


def row_names(refs: list[RunRef]) -> list[str]:
    """Folder names, or the paths where two runs share a name."""
    names = [r.name for r in refs]
    if len(set(names)) == len(names):
        return names
    return [r.named(str(r.root)) for r in refs]


def compare_table(runs: list[tuple[str, RunRef, RunEvaluation | None]],
                  columns: list[str] | None = None) -> SuiteTable:
    """The table of already read evaluations: (row name, run, its evaluation or None) per run, in order.
    A run without evaluations has no row; the notes name it."""
    evaluated = [(name, ev) for name, _, ev in runs if ev is not None]
    metrics: dict[str, Metric] = {}
    for _, ev in evaluated:
        for name, metric in ev.metrics.items():
            metrics.setdefault(name, metric)
    ordered = by_eps(list(metrics.values()))  # also within one --columns glob: the runs' reports differ in order
    chosen = chosen_columns(columns, ordered) if columns else plain_columns(ordered)
    cells = {(name, m.name): _cell(name, m.name, ev.measures.get(m.name)) for name, ev in evaluated for m in chosen}
    about = {"runs": [{"name": name, "path": str(ref.root), "checkpoint": ev.checkpoint if ev else None,
                       "reports": [str(p) for p in ev.reports] if ev else []} for name, ref, ev in runs]}
    return SuiteTable("", "", [name for name, _ in evaluated], chosen, cells, [SEED], {}, {},
                      framing=Framing("run", _notes(runs), about))


def build_compare_table(paths: list[str | Path], columns: list[str] | None = None) -> SuiteTable:
    """The table of these run folders (or checkpoints); one error line for a path that is neither."""
    if not paths:
        raise WorkbenchError("compare needs at least one run folder")
    refs = list({(r.root.resolve(), r.checkpoint): r for r in map(resolve_run, paths)}.values())  # each once
    return compare_table([(name, ref, run_evaluation(ref)) for name, ref in zip(row_names(refs), refs)], columns)


def export_table(table: SuiteTable, folder: Path, stem: str) -> list[Path]:
    """The table in every format under `folder` (`stem.md`, `.csv`, `.tex`, `.json`), each written atomically;
    a stem already taken gets a -1, -2, ... so no earlier export is replaced."""
    folder = Path(folder)
    texts = {SUFFIXES.get(fmt, f".{fmt}"): render(table, fmt) for fmt in FORMATS.names()}
    for i in range(10_000):
        name = stem if i == 0 else f"{stem}-{i}"
        if not any((folder / (name + suffix)).exists() for suffix in texts):
            break
    else:
        raise WorkbenchError(f"{folder}: no free file name for {stem}")
    paths = []
    for suffix, text in texts.items():
        atomic_write_text(folder / (name + suffix), text)
        paths.append(folder / (name + suffix))
    return paths
