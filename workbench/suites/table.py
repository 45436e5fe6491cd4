"""A suite's results as one table: per model and metric, the seeds' mean ± std (or a Wilson interval for
one seed), the paper's number beside it, collapsed runs marked and left out of the mean.

Torch-free: it reads the saved evaluation reports only. Metric names (also the keys of the suite's
`paper:` block):
  clean                 clean accuracy (from the evaluation with the most samples)
  LABEL@EPS             one attack row, e.g. "FGSM@0.3", "PGD-40@0.325", "DeepFool d@0.2"
  LABEL                 a minimum-norm attack's row, e.g. "C&W c=10"
  worst PROTOCOL@EPS    the worst case over a protocol's attacks, e.g. "worst strong@0.3"
  EVALUATION/NAME       a row whose name an earlier evaluation of the suite already gave (e.g. the paper's
                        attacks again on the prototype head: "prototype/FGSM@0.3")
"""

from __future__ import annotations

import fnmatch
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import WorkbenchError
from ..stats import wilson_interval
from ..runs.files import load_json
from .layout import SuitePaths
from .state import cell_state

if TYPE_CHECKING:  # the schema brings pydantic: tables of plain runs (`workbench compare`, the TUI) need none
    from .spec import Suite

COLLAPSE_FACTOR = 2.0  # clean accuracy below this many times chance: the model predicts (nearly) one class


@dataclass
class Measure:
    """One metric of one run: robust (or clean) accuracy on n samples."""

    value: float
    n: int
    ci95: tuple[float, float]
    source: str  # the report file it came from


@dataclass
class Metric:
    name: str
    eps: float | None
    protocol: str
    order: int


@dataclass
class TableCell:
    model: str
    metric: str
    values: list[float]  # per seed, the non-collapsed ones
    seeds: list[int]
    n: list[int]
    sources: list[str]
    collapsed_seeds: list[int] = field(default_factory=list)
    missing_seeds: list[int] = field(default_factory=list)
    paper: float | None = None  # percent

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    ci95: tuple[float, float] | None = None  # Wilson, when one seed

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "metric": self.metric, "mean": self.mean, "std": self.std, "ci95": self.ci95,
                "values": self.values, "seeds": self.seeds, "n": self.n, "paper": self.paper,
                "collapsed_seeds": self.collapsed_seeds, "missing_seeds": self.missing_seeds, "sources": self.sources}


@dataclass
class Framing:
    """How a table that is not a suite's presents itself (runs compared, say): the title of its rows, the
    lines under it (in place of the suite's), and the fields that open its JSON (in place of suite and budget)."""

    row: str
    notes: list[str]
    about: dict[str, Any] = field(default_factory=dict)


@dataclass
class SuiteTable:
    suite: str
    budget: str
    models: list[str]
    metrics: list[Metric]
    cells: dict[tuple[str, str], "TableCell"]
    seeds: list[int]
    collapsed: dict[str, list[int]]  # model -> seeds whose run collapsed
    missing: dict[str, list[int]]  # model -> seeds with no finished evaluation yet
    incomplete: dict[str, list[int]] = field(default_factory=dict)  # model -> seeds with some evaluations missing
    checks: list = field(default_factory=list)  # the suite's claims, checked (checks.CheckResult)
    framing: Framing | None = None  # None: a suite's table

    def cell(self, model: str, metric: str) -> "TableCell | None":
        return self.cells.get((model, metric))

    def has_paper(self, metric: str) -> bool:
        return any(c.paper is not None for (m, name), c in self.cells.items() if name == metric)


def _eps_text(value: float) -> str:
    return f"{value:g}"


def report_measures(report: dict[str, Any], source: str, start: int = 0) -> list[tuple[Metric, Measure]]:
    """Every metric a saved evaluation report holds, in report order."""
    out: list[tuple[Metric, Measure]] = []
    order = start

    def add(name, eps, protocol, value, n, ci95):
        nonlocal order
        if value is None or not isinstance(n, int):
            return
        ci = tuple(ci95) if isinstance(ci95, (list, tuple)) and len(ci95) == 2 else wilson_interval(round(value * n), n)
        out.append((Metric(name, eps, protocol, order), Measure(float(value), n, ci, source)))
        order += 1

    add("clean", None, "clean", report.get("clean_accuracy"), report.get("n"), report.get("clean_ci95"))
    for r in report.get("results") or []:
        if r.get("threshold_of_minimum_norm"):
            continue
        value = r.get("value")
        name = r["label"] if value is None else f"{r['label']}@{_eps_text(value)}"
        eps = value if r.get("sweep_param") == "eps" else None
        add(name, eps, r.get("protocol", ""), r.get("robust_accuracy"), r.get("n"), r.get("ci95"))
    for w in report.get("worst_case") or []:
        add(f"worst {w['protocol']}@{_eps_text(w['eps'])}", w["eps"], w["protocol"], w.get("robust_accuracy"),
            w.get("n"), w.get("ci95"))
    return out


def _run_measures(reports: dict[str, str]) -> tuple[dict[str, Measure], dict[str, Metric]]:
    """One run's metrics over its evaluations (in plan order). A row whose name an earlier evaluation took
    (the same label at the same eps, e.g. the paper's attacks on another head) is kept under
    "EVALUATION/NAME", never dropped. Clean accuracy: the softmax head's, on the most samples."""
    measures: dict[str, Measure] = {}
    metrics: dict[str, Metric] = {}
    clean_rank = (False, -1)
    for evaluation, path in reports.items():
        report = load_json(Path(path))
        if not report:
            continue
        head = str(report.get("head") or "softmax")
        for metric, measure in report_measures(report, path, len(metrics) * 1000):
            if metric.name == "clean":
                rank = (head == "softmax", measure.n)
                if "clean" in measures and rank <= clean_rank:
                    continue
                clean_rank = rank
            elif metric.name in measures:
                for name in (f"{evaluation}/{metric.name}", f"{evaluation}/{metric.protocol}/{metric.name}"):
                    if name not in measures:
                        metric.name = name
                        break
            measures[metric.name] = measure
            metrics.setdefault(metric.name, metric)
    return measures, metrics


def default_columns(suite: Suite, metrics: list[Metric]) -> list[Metric]:
    """The suite's `table` columns; else clean, the metrics the paper reports and every protocol's worst
    case, grouped by eps so each paper number stands beside the strong worst case at that eps; without
    paper numbers, every row but the strong protocol's stages."""
    if suite.table:
        return pick_columns(suite.table, metrics)
    wanted = {name for numbers in suite.paper.values() for name in numbers}
    worst = [m for m in metrics if m.name.startswith("worst ")]
    if wanted:
        chosen = [m for m in metrics if m.name in wanted or m.name == "clean"] + worst
    else:
        chosen = plain_columns(metrics)
    return by_eps(chosen)


def plain_columns(metrics: list[Metric]) -> list[Metric]:
    """Every metric but the strong protocol's stages (its worst case sums them up)."""
    return [m for m in metrics if m.protocol != "strong" or m.name.startswith("worst ")]


def by_eps(metrics: list[Metric]) -> list[Metric]:
    """Each metric once: clean first, then grouped by eps, each protocol's worst case after its attacks."""
    seen: set[str] = set()
    unique = [m for m in metrics if not (m.name in seen or seen.add(m.name))]
    return sorted(unique, key=lambda m: (m.name != "clean", m.eps is not None, m.eps or 0.0,
                                         m.name.startswith("worst "), m.order))


def pick_columns(patterns: list[str], metrics: list[Metric]) -> list[Metric]:
    out: list[Metric] = []
    for pattern in patterns:
        out += [m for m in metrics if fnmatch.fnmatchcase(m.name, pattern) and m not in out]
    return out


def chosen_columns(patterns: list[str], metrics: list[Metric]) -> list[Metric]:
    """`--columns`: the metrics the names or globs match, in their order; an error when there are metrics
    and they match none."""
    chosen = pick_columns(patterns, metrics)
    if not chosen and metrics:
        raise WorkbenchError(f"--columns {','.join(patterns)} matches no metric; metrics: "
                             + ", ".join(m.name for m in metrics[:12]) + (" ..." if len(metrics) > 12 else ""))
    return chosen


def build_table(suite: Suite, paths: SuitePaths, budget: str, columns: list[str] | None = None) -> SuiteTable:
    """The table of `budget`'s cells under `paths` (cells without saved evaluations count as missing)."""
    per_run: dict[tuple[str, int], dict[str, Measure]] = {}
    all_metrics: dict[str, Metric] = {}
    collapsed: dict[str, list[int]] = {}
    missing: dict[str, list[int]] = {}
    incomplete: dict[str, list[int]] = {}
    for cell in paths.cells_of(budget):
        st = cell_state(cell, budget)
        if st is None:
            continue
        if not st.reports:
            missing.setdefault(st.model, []).append(st.seed)
            continue
        if st.evaluations_done < st.evaluations:
            incomplete.setdefault(st.model, []).append(st.seed)
        measures, metrics = _run_measures(st.reports)
        per_run[(st.model, st.seed)] = measures
        for name, metric in metrics.items():
            all_metrics.setdefault(name, metric)
        clean = measures.get("clean")
        if clean is not None and clean.value < COLLAPSE_FACTOR / max(2, st.num_classes):
            collapsed.setdefault(st.model, []).append(st.seed)
    ordered = sorted(all_metrics.values(), key=lambda m: m.order)
    chosen = chosen_columns(columns, ordered) if columns else default_columns(suite, ordered)
    models = [m.name for m in suite.models]
    spec = suite.budgets.get(budget)
    seeds_of = {model: suite.seeds_of(model, spec) if spec else list(suite.seeds) for model in models}
    cells: dict[tuple[str, str], "TableCell"] = {}
    for model in models:
        for metric in chosen:
            cell = TableCell(model, metric.name, [], [], [], [], paper=suite.paper.get(model, {}).get(metric.name))
            for seed in seeds_of[model]:
                measure = per_run.get((model, seed), {}).get(metric.name)
                if measure is None:
                    cell.missing_seeds.append(seed)
                elif seed in collapsed.get(model, []):
                    cell.collapsed_seeds.append(seed)
                else:
                    cell.values.append(measure.value)
                    cell.seeds.append(seed)
                    cell.n.append(measure.n)
                    cell.sources.append(measure.source)
                    if len(cell.values) == 1:
                        cell.ci95 = measure.ci95
            if len(cell.values) != 1:
                cell.ci95 = None
            cells[(model, metric.name)] = cell
    all_seeds = sorted({seed for seeds in seeds_of.values() for seed in seeds})
    return SuiteTable(suite.name, budget, models, chosen, cells, all_seeds, collapsed, missing, incomplete)


def fmt_pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.{digits}f}"
