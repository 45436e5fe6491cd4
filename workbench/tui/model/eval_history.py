"""Past and running evaluations of a checkpoint's evals/ folder -> rows of the panel's history list.

Running jobs come first (they are what a reopened panel re-attaches to), then jobs that failed,
crashed or were cancelled (their reports never appeared), then the saved reports, newest first
(an audit report has no `created`: the time in its file name stands for it).
A finished job is not listed twice: its report stands for it, and lends it the argument list it
was launched with (what a rerun repeats exactly).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from ...attack_meta import DEFAULT_ATTACK
from ...runs.evals import ACTIVE_STATES, EvalJob, ReportSummary
from .format import age, pct, state_markup

COLUMNS = ("when", "state", "attacks", "eps", "clean", "worst", "ckpt")
ACTIVE = ACTIVE_STATES


@dataclass
class HistoryItem:
    key: str  # "job:<path>" or "report:<path>"
    kind: str  # "job" | "report"
    path: Path
    state: str
    cells: tuple[str, ...]
    checkpoint: str = ""  # a report's checkpoint file name ("" for a job or when the report does not say)
    when: float = 0.0  # a report's time (0: unknown)
    recorded_checkpoint: str = ""  # the checkpoint path as the job or report records it
    args: list[str] | None = None  # the `workbench attack` arguments it ran with; None: not recorded (a CLI report)


_STAMP = re.compile(r"-(\d{8}-\d{6})(?:-\d+)?$")  # "<stem>-YYYYmmdd-HHMMSS[-N]", as reserve_name makes it


def report_time(r: ReportSummary) -> float:
    """When a report was saved: its `created` field; else (an audit has none) the local time stamped in its
    file name by `reserve_name`; else the file's modification time; 0 when none is readable."""
    if r.created:
        return r.created
    match = _STAMP.search(Path(r.path).stem)
    if match:
        try:
            return time.mktime(time.strptime(match.group(1), "%Y%m%d-%H%M%S"))
        except (ValueError, OverflowError):
            pass
    try:
        return Path(r.path).stat().st_mtime
    except OSError:
        return 0.0


def _eps_text(eps: list[float]) -> str:
    text = ",".join(f"{e:g}" for e in eps)
    return text if len(text) <= 18 else text[:17] + "…"


def _attacks_from_args(args: list[str], flags: dict[str, str]) -> str:
    names = []
    for i, arg in enumerate(args):
        if arg == "--attack" and i + 1 < len(args):
            names.append(args[i + 1].split(":", 1)[0])
        elif arg in flags:
            names.append(flags[arg])
    if "--preset" in args and args.index("--preset") + 1 < len(args):
        names.append("preset " + args[args.index("--preset") + 1])
    return ",".join(names) or DEFAULT_ATTACK


def history_items(reports: list[ReportSummary], jobs: list[tuple[EvalJob, str]], now: float,
                  flags: dict[str, str] | None = None) -> list[HistoryItem]:
    """`jobs` pairs each job with its effective state (computed off the UI thread: it probes the pid);
    `flags` maps the attacks' shorthand flags to their names (from the catalog), to name a job's attacks."""
    items = []
    order = {"running": 0, "starting": 0, "failed": 1, "crashed": 1, "cancelled": 1}
    for job, state in sorted((js for js in jobs if js[1] != "finished"),
                             key=lambda js: (order.get(js[1], 2), -js[0].started)):
        eps = job.args[job.args.index("--eps") + 1] if "--eps" in job.args[:-1] else "default"
        progress = f"{job.label} {job.done}/{job.total}" if state in ACTIVE and job.total else ""
        attacks = progress or _attacks_from_args(job.args, flags or {})
        items.append(HistoryItem(f"job:{job.path}", "job", Path(job.path), state, (
            age(job.started, now), state_markup(state), attacks, eps, "-", "-", Path(job.checkpoint).name),
            recorded_checkpoint=job.checkpoint, args=list(job.args)))
    # A report and the job that saved it share the evals/ folder: its file name is enough to match them.
    launched = {Path(job.report).name: list(job.args) for job, state in jobs
                if state == "finished" and job.report and job.args}
    timed = sorted(((report_time(r), r) for r in reports), key=lambda tr: (tr[0], tr[1].path.name), reverse=True)
    for when, r in timed:
        worst = min((v for v in r.worst.values() if isinstance(v, (int, float))), default=None)
        items.append(HistoryItem(f"report:{r.path}", "report", r.path, "finished", (
            age(when, now), state_markup("finished"), ",".join(r.attacks) or "-", _eps_text(r.eps) or "-",
            pct(r.clean_accuracy), pct(worst), Path(r.checkpoint).name or "-"), Path(r.checkpoint).name, when,
            r.checkpoint, launched.get(r.path.name)))
    return items
