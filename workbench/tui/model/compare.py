"""What the Compare screen shows of several runs (pure: no textual).

Config differences as flattened dotted keys, training curves through History, robust
accuracy against eps from each run's latest saved evaluation report, and the table of robust
accuracy per attack × eps (workbench.compare.table, as `workbench compare` prints it).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ...runs import RunPaths, Status, effective_state, read_json
from ...compare.table import (RunEvaluation, RunRef, compare_table, row_names, run_evaluation,
                                  source_text)
from ...runs.evals import as_number, list_reports
from ...runs.tail import JsonlTail
from ...suites.render import cell_text
from ...suites.table import SuiteTable
from .files import file_signature
from .history import Best, History, Series, best_accuracy

# Written by the framework, not chosen by the user: never a "difference".
IGNORED_PREFIXES = ("provenance",)
MISSING = object()


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c": [1, 2]} -> {"a.b": 1, "c": [1, 2]} (lists stay values)."""
    if not isinstance(data, Mapping):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def config_diff(configs: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[Any]]]:
    """The dotted keys whose values differ between the configs, in first-seen order.

    A key one config lacks counts as different; its value is `MISSING` there.
    """
    flat = {name: flatten(cfg) for name, cfg in configs.items()}
    keys: dict[str, None] = {}
    for f in flat.values():
        keys.update(dict.fromkeys(f))
    out = []
    for key in keys:
        if key.split(".")[0] in IGNORED_PREFIXES:
            continue
        values = [f.get(key, MISSING) for f in flat.values()]
        if any(v != values[0] or type(v) is not type(values[0]) for v in values[1:]):
            out.append((key, values))
    return out


def short_names(names: list[str]) -> list[str]:
    """Run names without their `-YYYYmmdd-HHMMSS` stamp, for chart legends, where that keeps them apart."""
    short = [re.sub(r"-\d{8}-\d{6}(-\d+)?$", "", n) or n for n in names]
    return short if len(set(short)) == len(short) else list(names)


def show_value(value: Any) -> str:
    if value is MISSING:
        return "—"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


# -- evaluations -----------------------------------------------------------------------------

@dataclass
class EvalCurves:
    """Robust accuracy against eps from one report; eps 0 is the report's clean accuracy."""

    report: Path
    checkpoint: str
    clean: float | None
    worst: dict[str, Series] = field(default_factory=dict)  # protocol -> worst case over its attacks
    attacks: dict[str, Series] = field(default_factory=dict)  # attack label (and norm) -> its curve


def _with_clean(points: dict[float, float], clean: float | None) -> Series:
    if clean is not None and 0.0 not in points:
        points = {0.0: clean, **points}
    xs = sorted(points)
    return xs, [points[x] for x in xs]


def _points(entries: Any, name_of) -> dict[str, dict[float, float]]:
    """{curve name: {eps: lowest robust accuracy}} of a report's result list; malformed entries are left out."""
    curves: dict[str, dict[float, float]] = {}
    for e in entries if isinstance(entries, list) else []:
        if not isinstance(e, dict):
            continue
        eps, acc = as_number(e.get("eps")), as_number(e.get("robust_accuracy"))
        if eps is None or acc is None:
            continue
        name = name_of(e)
        if e.get("norm") and e.get("norm") != "linf":
            name += f" {e['norm']}"
        points = curves.setdefault(name, {})
        points[eps] = min(points.get(eps, 1.0), acc)
    return curves


def curves_from_report(path: Path, report: Mapping[str, Any]) -> EvalCurves:
    # as_number, not float(): a report is another process's file, and float(10**400) overflows.
    clean = as_number(report.get("clean_accuracy"))
    worst = _points(report.get("worst_case"), lambda w: str(w.get("protocol", "?")))
    attacks = _points(report.get("results"), lambda r: str(r.get("label") or r.get("attack") or "?"))
    return EvalCurves(report=Path(path), checkpoint=str(report.get("checkpoint", "")), clean=clean,
                      worst={k: _with_clean(v, clean) for k, v in worst.items()},
                      attacks={k: _with_clean(v, clean) for k, v in attacks.items()})


def latest_eval_curves(run: Path) -> EvalCurves | None:
    """The curves of the run's newest saved evaluation report, or None when it has none."""
    for summary in list_reports(RunPaths(run).evals):
        report = read_json(summary.path)
        if report:
            return curves_from_report(summary.path, report)
    return None


# -- one run, everything the screen shows ----------------------------------------------------

@dataclass
class RunView:
    path: Path
    name: str
    config: dict[str, Any]
    history: History  # epoch records only: Compare draws no per-step series
    state: str
    status: Status | None
    evals: EvalCurves | None
    error: str = ""  # why the run could not be read (then nothing else is filled)
    robust: RunEvaluation | None = None  # every saved report on its newest evaluated checkpoint, merged

    def best(self, kind: str) -> Best | None:
        return best_accuracy(self.history, self.status, kind)


class RunFollower:
    """Keeps what Compare shows of one run current, reading only what changed since the last look.

    metrics.jsonl through a JsonlTail (appended lines only; the whole file again after a resume
    rewrote it); config.yaml, status.json and the evaluations folder again only when a stat says
    they changed. A trainer's status heartbeat then costs a status read, not the whole stream.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.run = RunPaths(path)
        self.tail = JsonlTail(self.run.metrics)
        self.history = History()
        self.config: dict[str, Any] = {}
        self.error = ""
        self.status: Status | None = None
        self.state = "unknown"
        self.evals: EvalCurves | None = None
        self.robust: RunEvaluation | None = None
        self._seen: dict[str, Any] = {}

    def _changed(self, name: str, path: Path) -> bool:
        sig = file_signature(path)
        if name in self._seen and self._seen[name] == sig:
            return False
        self._seen[name] = sig
        return True

    def refresh(self) -> bool:
        """Read what changed on disk; True when anything the view shows may have changed."""
        changed = False
        if self._changed("config", self.run.config):
            self.config, self.error = self._read_config()
            changed = True
        if self._changed("status", self.run.status):
            self.status = Status.read(self.run.status)
            changed = True
        state = effective_state(self.status)  # also moves when the trainer dies without a word
        if state != self.state:
            self.state, changed = state, True
        records, reset = self.tail.read()
        epochs = [r for r in records if r.get("kind") == "epoch"]
        if reset or epochs:
            self.history.apply(epochs, reset)
            changed = True
        if self._changed("evals", self.run.evals):
            self.evals = latest_eval_curves(self.run.root)
            self.robust = run_evaluation(RunRef(self.run.root))
            changed = True
        return changed

    def _read_config(self) -> tuple[dict[str, Any], str]:
        from ...config import read_yaml  # pydantic comes with it: only where runs are read, never at import
        from ...errors import WorkbenchError

        if not self.run.root.is_dir():
            return {}, f"{self.path}: no such folder"
        if not self.run.is_run():
            return {}, f"{self.path}: not a run folder (no config.yaml)"
        try:
            config = read_yaml(self.run.config) or {}
        except WorkbenchError as exc:
            return {}, str(exc)
        return (config if isinstance(config, dict) else {}), ""

    def view(self) -> RunView:
        """A snapshot for the UI thread (the follower goes on changing in its worker)."""
        if self.error:
            return RunView(self.path, self.path.name, {}, History(), "unknown", None, None, self.error)
        return RunView(self.run.root, self.run.root.name, dict(self.config), History(self.history.epochs.values()),
                       self.state, self.status, self.evals, robust=self.robust)


# -- the curves and the robust table -----------------------------------------------------------

def epoch_span(views: list[RunView]) -> tuple[float, float] | None:
    """The x range of the per-epoch charts: every run's whole schedule, so a run's first robust point sits
    where it belongs (None until some run is past its first epoch)."""
    last = max((max(v.history.epochs, default=0) for v in views), default=0)
    planned = max((e for e in (as_number(v.config.get("epochs")) for v in views) if e is not None), default=0)
    span = max(last, int(planned))
    return (1.0, float(span)) if span > 1 else None


def robust_table(views: list[RunView]) -> SuiteTable:
    """Robust accuracy per attack × eps of the readable runs, rows named by run folder (as the CLI's)."""
    refs = [RunRef(v.path) for v in views]
    return compare_table([(name, ref, v.robust) for name, ref, v in zip(row_names(refs), refs, views)])


def robust_caption(views: list[RunView], names: Mapping[str, str]) -> str:
    """The line over the robust table: what its numbers are, and which checkpoint each run's come from."""
    sources = "; ".join(f"{names.get(v.name, v.name)}: {source_text(v.robust)}" for v in views if v.robust)
    return f"robust accuracy % [95% interval] · {sources or 'no evaluations yet'} · x: export"


def robust_rows(table: SuiteTable) -> list[tuple[str, list[str]]]:
    """The table turned for a narrow screen: one row per metric, one column per run (value [interval])."""
    return [(m.name, [cell_text(table.cell(run, m.name)) for run in table.models]) for m in table.metrics]


EXPORT_FOLDER = "compare"  # under the runs folder: a folder without run files is no run to the listing


def export_stem(now: float) -> str:
    """The file name, less its suffix, of a table exported at `now`."""
    return "compare-" + time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
