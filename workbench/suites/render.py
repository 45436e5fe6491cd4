"""A suite table as markdown, CSV, LaTeX (booktabs) or JSON; one column per metric, the paper's beside it.

The same for any table in that shape with a `framing` (runs compared: `workbench compare`)."""

from __future__ import annotations

import csv
import io
import json
from typing import Callable

from ..registry import Registry
from .table import SuiteTable, TableCell, fmt_pct

FORMATS: Registry[Callable[[SuiteTable], str]] = Registry("table format")


def cell_text(cell: TableCell | None, pm: str = " ± ") -> str:
    """"97.3 ± 0.4" over seeds, "97.3 [96.2-98.1]" for one seed, "—" for none."""
    if cell is None or not cell.values:
        return "collapsed" if cell is not None and cell.collapsed_seeds else "—"
    text = fmt_pct(cell.mean)
    if cell.std is not None:
        text += f"{pm}{fmt_pct(cell.std)}"
    elif cell.ci95 is not None:
        text += f" [{fmt_pct(cell.ci95[0])}-{fmt_pct(cell.ci95[1])}]"
    if cell.collapsed_seeds:
        text += "*"
    if cell.missing_seeds:
        text += "†"
    return text


def paper_text(cell: TableCell | None) -> str:
    return "" if cell is None or cell.paper is None else f"{cell.paper:g}"


def row_title(table: SuiteTable) -> str:
    return table.framing.row if table.framing else "model"


def _header(table: SuiteTable) -> list[tuple[str, str | None]]:
    """(column title, metric) pairs: each metric, then 'paper' where the paper reports it."""
    cols: list[tuple[str, str | None]] = [(row_title(table), None)]
    for metric in table.metrics:
        cols.append((metric.name, metric.name))
        if table.has_paper(metric.name):
            cols.append(("paper", metric.name))
    return cols


def _rows(table: SuiteTable, pm: str = " ± ") -> list[list[str]]:
    rows = []
    for model in table.models:
        row = [model + (" (collapsed: " + ", ".join(f"s{s}" for s in table.collapsed[model]) + ")"
                        if model in table.collapsed else "")]
        for metric in table.metrics:
            cell = table.cell(model, metric.name)
            row.append(cell_text(cell, pm))
            if table.has_paper(metric.name):
                row.append(paper_text(cell))
        rows.append(row)
    return rows


def check_lines(table: SuiteTable) -> list[str]:
    return [f"- {c.text}: **{c.verdict}** ({c.detail})." for c in table.checks]


def notes(table: SuiteTable) -> list[str]:
    out = list(table.framing.notes) if table.framing else [
        f"Suite {table.suite}, budget {table.budget}, seeds {', '.join(map(str, table.seeds))}. "
        "Robust accuracy (%): mean ± std over seeds, or [95% Wilson interval] with one seed; "
        "'paper' is the paper's number; 'worst strong' is the strong protocol's worst case."]
    if any(c.values and c.missing_seeds for c in table.cells.values()):
        out.append("† some seeds not evaluated yet: the number is over the seeds that are (see the CSV/JSON "
                   "missing_seeds).")
    if table.collapsed:
        out.append("Collapsed runs (clean accuracy near chance), left out of the means and marked *: "
                   + "; ".join(f"{m} seed {', '.join(map(str, s))}" for m, s in table.collapsed.items()) + ".")
    for title, runs in (("Not evaluated yet", table.missing), ("Some evaluations still missing", table.incomplete)):
        if runs:
            out.append(f"{title}: " + "; ".join(f"{m} seed {', '.join(map(str, s))}" for m, s in runs.items()) + ".")
    return out


@FORMATS.register("md")
def markdown(table: SuiteTable) -> str:
    cols = _header(table)
    lines = ["| " + " | ".join(title for title, _ in cols) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(cols))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(table)]
    checks = ["", "The paper's claims on our numbers:", *check_lines(table)] if table.checks else []
    return "\n".join(lines) + "\n\n" + "\n".join(notes(table) + checks) + "\n"


@FORMATS.register("csv")
def as_csv(table: SuiteTable) -> str:
    """Long format, one row per model and metric: what a plotting script wants."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([row_title(table), "metric", "eps", "mean", "std", "ci95_low", "ci95_high", "seeds", "n", "paper",
                "collapsed_seeds", "missing_seeds"])
    for model in table.models:
        for metric in table.metrics:
            c = table.cell(model, metric.name)
            if c is None:
                continue
            lo, hi = c.ci95 or (None, None)
            w.writerow([model, metric.name, "" if metric.eps is None else metric.eps,
                        "" if c.mean is None else c.mean, "" if c.std is None else c.std,
                        "" if lo is None else lo, "" if hi is None else hi,
                        " ".join(map(str, c.seeds)), " ".join(map(str, c.n)), "" if c.paper is None else c.paper,
                        " ".join(map(str, c.collapsed_seeds)), " ".join(map(str, c.missing_seeds))])
    return buf.getvalue()


LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                 "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)


@FORMATS.register("latex")
def latex(table: SuiteTable) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs})."""
    cols = _header(table)
    rows = _rows(table, pm=" $\\pm$ ")
    head = [latex_escape(t).replace("@", " @ ") for t, _ in cols]
    lines = [r"\begin{tabular}{l" + "r" * (len(cols) - 1) + "}", r"\toprule", " & ".join(head) + r" \\",
             r"\midrule"]
    for row in rows:
        cells = [latex_escape(row[0])] + [c if "$" in c else latex_escape(c) for c in row[1:]]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n" + "".join(f"% {n}\n" for n in notes(table) + check_lines(table))


@FORMATS.register("json")
def as_json(table: SuiteTable) -> str:
    head = ({**table.framing.about, "notes": notes(table)} if table.framing
            else {"suite": table.suite, "budget": table.budget})
    return json.dumps({
        **head, "seeds": table.seeds, "models": table.models,
        "metrics": [{"name": m.name, "eps": m.eps, "protocol": m.protocol} for m in table.metrics],
        "cells": [c.to_json() for c in table.cells.values()],
        "collapsed": table.collapsed, "missing": table.missing, "incomplete": table.incomplete,
        "checks": [c.to_json() for c in table.checks],
    }, indent=1)


def render(table: SuiteTable, fmt: str) -> str:
    return FORMATS.get(fmt)(table)
