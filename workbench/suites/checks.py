"""The paper's claims, checked against a suite's table: does the order, the win, the floor hold for us?

A check holds, fails, or is open (a number it needs is not measured yet). Means over seeds are compared;
collapsed runs are already out of them. Torch-free, like the table.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from itertools import pairwise

from .spec import Check, Suite
from .table import SuiteTable, fmt_pct


@dataclass
class CheckResult:
    text: str  # the claim as checked
    holds: bool | None  # None: not every number it needs is measured yet
    detail: str  # our numbers behind it

    @property
    def verdict(self) -> str:
        return {True: "holds", False: "does NOT hold", None: "open"}[self.holds]

    def to_json(self) -> dict:
        return {"check": self.text, "holds": self.holds, "detail": self.detail}


def _metrics(table: SuiteTable, pattern: str) -> list[str]:
    return [m.name for m in table.metrics if fnmatch.fnmatchcase(m.name, pattern)]


def _mean(table: SuiteTable, model: str, metric: str) -> float | None:
    cell = table.cell(model, metric)
    return None if cell is None else cell.mean


def _order(check: Check, table: SuiteTable) -> CheckResult:
    text = f"{' > '.join(check.order)} on {check.metric}"
    metrics = _metrics(table, check.metric)
    values = {m: [_mean(table, m, name) for name in metrics] for m in check.order}
    detail = "; ".join(f"{name}: " + ", ".join(f"{m} {fmt_pct(values[m][i])}" for m in check.order)
                       for i, name in enumerate(metrics)) or "not measured"
    if not metrics or any(v is None for vals in values.values() for v in vals):
        return CheckResult(text, None, detail)
    holds = all(values[a][i] > values[b][i] for i in range(len(metrics)) for a, b in pairwise(check.order))
    return CheckResult(text, holds, detail)


def _beats(check: Check, table: SuiteTable) -> CheckResult:
    better, worse = check.beats
    text = f"{better} above {worse} on {check.metric}"
    pairs = [(name, _mean(table, better, name), _mean(table, worse, name)) for name in _metrics(table, check.metric)]
    both = [(n, a, b) for n, a, b in pairs if a is not None and b is not None]
    losses = [f"{n} ({fmt_pct(a)} vs {fmt_pct(b)})" for n, a, b in both if not a > b]
    if not both:
        return CheckResult(text, None, "not measured")
    detail = f"{len(both) - len(losses)}/{len(both)} metrics" + (f"; not on {', '.join(losses)}" if losses else "")
    return CheckResult(text, not losses, detail)


def _at_least(check: Check, table: SuiteTable) -> CheckResult:
    models = check.models or table.models
    text = f"{check.metric} >= {check.at_least:g}% for {', '.join(models) if check.models else 'every model'}"
    values = [(m, name, _mean(table, m, name)) for m in models for name in _metrics(table, check.metric)]
    measured = [(m, n, v) for m, n, v in values if v is not None]
    below = [f"{m} {fmt_pct(v)}" for m, n, v in measured if 100 * v < check.at_least]
    if not measured:
        return CheckResult(text, None, "not measured")
    holds = not below if len(measured) == len(values) or below else None
    return CheckResult(text, holds, f"{len(measured) - len(below)}/{len(values)} at or above"
                       + (f"; below: {', '.join(below)}" if below else ""))


def _paper_within(check: Check, table: SuiteTable) -> CheckResult:
    text = f"within {check.paper_within:g} points of the paper"
    gaps = []
    for (model, metric), cell in table.cells.items():
        if cell.paper is not None and cell.mean is not None and fnmatch.fnmatchcase(metric, check.metric) \
                and (check.models is None or model in check.models):
            gaps.append((abs(100 * cell.mean - cell.paper), model, metric, cell))
    if not gaps:
        return CheckResult(text, None, "no cell with both numbers yet")
    far = sorted((g for g in gaps if g[0] > check.paper_within), key=lambda g: -g[0])
    detail = f"{len(gaps) - len(far)}/{len(gaps)} cells" + (
        "; furthest: " + ", ".join(f"{m} {k} ({fmt_pct(c.mean)} vs {c.paper:g})" for _, m, k, c in far[:5])
        if far else "")
    return CheckResult(text, not far, detail)


KINDS = {"order": _order, "beats": _beats, "at_least": _at_least, "paper_within": _paper_within}


def with_checks(suite: Suite, paths, budget: str, table: SuiteTable) -> SuiteTable:
    """`table` with the suite's checks run on every measured metric (not only the table's columns)."""
    from .table import build_table

    if suite.checks:
        table.checks = run_checks(suite, build_table(suite, paths, budget, ["*"]))
    return table


def run_checks(suite: Suite, table: SuiteTable) -> list[CheckResult]:
    """Every check of the suite against `table` (build it with every column: a check may need any metric)."""
    out = []
    for check in suite.checks:
        kind = next(k for k in KINDS if getattr(check, k) is not None)
        result = KINDS[kind](check, table)
        if check.claim:
            result.text = f"{check.claim} ({result.text})"
        out.append(result)
    return out
