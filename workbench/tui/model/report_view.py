"""A saved evaluation report (JSON) -> what the attack panel shows: table rows, chart series, summary.

Pure: works on the dict `workbench attack` writes (workbench/evaluation/engine.py `evaluate`),
tolerating missing keys and values of the wrong type (read through the same helpers as the
history's workbench.runs.evals.summarize_report), so an older or partial report still renders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...runs.evals import as_number, report_entries
from .format import duration, pct

# Most telling first: at 80 columns the table shows up to the CI and scrolls for the rest.
COLUMNS = ("attack", "eps", "robust", "95% CI", "success", "mean norm", "time", "protocol")
WORST = "worst case"


_num = as_number


def _g(value: Any) -> str:
    v = _num(value)
    return "-" if v is None else f"{v:.3g}"


def _ci(ci: Any) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(v) is not None for v in ci):
        return f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}"
    return "-"


def _seconds(value: Any) -> str:
    v = _num(value)
    if v is None:
        return "-"
    return f"{v:.2f}s" if v < 10 else duration(v)


def sweep_text(row: dict[str, Any]) -> str:
    """eps for bounded attacks; 'd=…' for DeepFool ratios; 'min' for an unbounded minimum-norm run."""
    if _num(row.get("eps")) is not None:
        return _g(row["eps"])
    if _num(row.get("value")) is not None:
        return f"{row.get('sweep_param') or 'value'}={_g(row['value'])}"
    return "min"


def results(report: dict[str, Any]) -> list[dict[str, Any]]:
    return report_entries(report, "results")


def worst_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return report_entries(report, "worst_case")


def table_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row for clean accuracy, one per attack and sweep value, then the worst case per eps (COLUMNS)."""
    rows = [("clean", "-", pct(_num(report.get("clean_accuracy"))), _ci(report.get("clean_ci95")), "-", "-",
             _seconds(report.get("clean_seconds")), "-")]
    for r in results(report):
        rows.append((str(r.get("label") or r.get("attack") or "?"), sweep_text(r), pct(_num(r.get("robust_accuracy"))),
                     _ci(r.get("ci95")), pct(_num(r.get("success_rate"))), _g(r.get("mean_norm")),
                     _seconds(r.get("seconds")), str(r.get("protocol", ""))))
    for w in worst_rows(report):
        rows.append((WORST, _g(w.get("eps")), pct(_num(w.get("robust_accuracy"))), _ci(w.get("ci95")), "-", "-", "-",
                     str(w.get("protocol", ""))))
    return rows


def _several_protocols(report: dict[str, Any]) -> bool:
    return len({str(r.get("protocol")) for r in results(report) + worst_rows(report)}) > 1


def series(report: dict[str, Any]) -> dict[str, tuple[list[float], list[float]]]:
    """Robust accuracy vs eps: one series per attack (protocol-prefixed when there are several), then
    the worst case. Rows without an eps (DeepFool ratios, an unbounded C&W run) are not on this axis."""
    prefix = _several_protocols(report)
    out: dict[str, list[tuple[float, float]]] = {}

    def add(name: str, x: Any, y: Any) -> None:
        if _num(x) is not None and _num(y) is not None:
            out.setdefault(name, []).append((float(x), float(y)))

    for r in results(report):
        label = str(r.get("label") or r.get("attack") or "?")
        add(f"{r.get('protocol')}:{label}" if prefix else label, r.get("eps"), r.get("robust_accuracy"))
    for w in worst_rows(report):
        add(f"{WORST} ({w.get('protocol')})" if prefix else WORST, w.get("eps"), w.get("robust_accuracy"))
    return {name: ([x for x, _ in sorted(pts)], [y for _, y in sorted(pts)]) for name, pts in out.items()}


def worst_case(report: dict[str, Any]) -> tuple[float, float] | None:
    """(eps, robust accuracy) of the lowest worst-case row, at the largest eps on a tie."""
    rows = [(float(w["robust_accuracy"]), -float(w["eps"])) for w in worst_rows(report)
            if _num(w.get("robust_accuracy")) is not None and _num(w.get("eps")) is not None]
    if not rows:
        return None
    acc, neg_eps = min(rows)
    return -neg_eps, acc


def summary(report: dict[str, Any]) -> str:
    """'digits/tiny/softmax · n=200 · clean 98.5% · worst 83.5% at eps 0.1' (one line)."""
    parts = []
    model = "/".join(str(report[k]) for k in ("dataset", "model", "defense") if report.get(k))
    if model:
        parts.append(model)
    n = report.get("n")
    if isinstance(n, (int, float, str)) and not isinstance(n, bool) and n:  # older reports may say "all"
        parts.append(f"n={n}")
    parts.append(f"clean {pct(_num(report.get('clean_accuracy')))}")
    worst = worst_case(report)
    if worst is not None:
        parts.append(f"worst {pct(worst[1])} at eps {worst[0]:g}")
    return " · ".join(parts)


def examples_path(report: dict[str, Any], report_path: Path | None = None) -> Path | None:
    """The report's examples file; a relative path that does not resolve from here is looked up beside
    the report (the report may have been written from another working folder)."""
    name = report.get("examples")
    if not isinstance(name, str) or not name:
        return None
    path = Path(name)
    try:
        if path.is_file() or report_path is None:
            return path
        beside = Path(report_path).parent / path.name
        return beside if beside.is_file() else path
    except (OSError, ValueError):  # a name no file system takes: loading it says why
        return path
