"""Where each cell of a suite stands, read from its files alone (torch-free: the TUI reads it too).

A cell is `pending` (nothing done), `queued` (submitted, not started), `training`, `evaluating`, `done`
(every planned evaluation saved), `stopped` (a run or job that ended early: a rerun continues it) or
`failed` (with the message why).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..runs import RunPaths, Status, effective_state, pid_alive, read_json, write_json_atomic
from ..runs.files import load_json
from .layout import CellPaths

JOB_STATES = ("queued", "running", "done", "failed", "stopped")


@dataclass
class JobRecord:
    """Who runs a cell and how it went: written by the executor and by the cell worker."""

    executor: str = "local"
    state: str = "queued"
    pid: int | None = None
    host: str = ""
    job_id: str | None = None  # a Slurm (submitit) job id
    threads: int | None = None
    submitted: float | None = None
    started: float | None = None
    ended: float | None = None
    message: str = ""

    def write(self, path: Path) -> None:
        write_json_atomic(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> "JobRecord | None":
        data = read_json(path)
        if not data:
            return None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            record = cls(**known)
        except TypeError:
            return None
        return record if record.state in JOB_STATES else None

    def live(self) -> bool:
        """Whether the job may still be working (a local pid on this host that is gone is not)."""
        if self.state not in ("queued", "running"):
            return False
        if self.executor == "local":  # queued: the runner's pid; running: the worker's
            return self.host in ("", socket.gethostname()) and pid_alive(self.pid)
        return True

    def effective_state(self) -> str:
        if self.state in ("queued", "running") and not self.live():
            return "stopped"
        return self.state


def mark_job(cell: CellPaths, **changes: Any) -> JobRecord:
    """Update the cell's job record (created when missing) and return it."""
    record = JobRecord.read(cell.job) or JobRecord()
    for key, value in changes.items():
        setattr(record, key, value)
    record.write(cell.job)
    return record


def worker_started(cell: CellPaths, threads: int | None) -> JobRecord:
    return mark_job(cell, state="running", pid=os.getpid(), host=socket.gethostname(), threads=threads,
                    started=time.time(), ended=None, message="")


def last_log_line(path: Path, limit: int = 4096) -> str:
    """The last non-empty line of a cell's log (its training epoch or evaluation stage), for status views."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def suite_tag(report: dict[str, Any]) -> dict[str, Any]:
    tag = report.get("suite")
    return tag if isinstance(tag, dict) else {}


def find_evaluation(run: RunPaths, key: str) -> Path | None:
    """The newest saved report of the planned evaluation `key` on the run's final checkpoint."""
    try:
        paths = sorted(run.evals.glob("*.json"), reverse=True)
    except OSError:
        return None
    for path in paths:
        report = load_json(path)
        if report and suite_tag(report).get("key") == key and Path(str(report.get("checkpoint", ""))).name == "last.pt":
            return path
    return None


@dataclass
class CellState:
    model: str
    seed: int
    key: str
    state: str
    epoch: int = 0
    epochs: int = 0
    clean: float | None = None  # the run's last tested clean accuracy
    robust: float | None = None  # the run's best robust accuracy while training, if it measured one
    evaluations_done: int = 0
    evaluations: int = 0
    message: str = ""
    num_classes: int = 10
    run: str | None = None
    reports: dict[str, str] = field(default_factory=dict)  # evaluation name -> report path
    job: JobRecord | None = None
    planned: list[str] = field(default_factory=list)  # the evaluations' names
    trained: bool = False

    def done_for(self, only: tuple[str, ...] | None) -> bool:
        """Nothing left to do for a run of the `only` evaluations (None: every evaluation)."""
        if self.state == "done":
            return True
        return only is not None and self.trained and all(n in self.reports for n in self.planned if n in only)


def planned_evaluations(plan: dict[str, Any], budget: str | None) -> list[dict[str, Any]]:
    """The evaluations `budget` planned for a cell (default: the budget planned last)."""
    by_budget = plan.get("evaluations_by_budget") or {}
    chosen = by_budget.get(budget) if budget else None
    return list(chosen if chosen is not None else plan.get("evaluations") or [])


def cell_state(cell: CellPaths, budget: str | None = None) -> CellState | None:
    """The cell's state under `budget` (its evaluations) from its files; None when it was never planned."""
    plan = cell.read_plan()
    if not plan:
        return None
    planned = planned_evaluations(plan, budget)
    st = CellState(str(plan.get("model")), int(plan.get("seed", 0)), cell.root.name, "pending",
                   epochs=int((plan.get("config") or {}).get("epochs") or 0), evaluations=len(planned),
                   num_classes=int(plan.get("num_classes") or 10),
                   planned=[str(ev.get("name")) for ev in planned])
    job = JobRecord.read(cell.job)
    st.job = job
    run = cell.run()
    status = Status.read(run.status) if run else None
    if run is not None:
        st.run = str(run.root)
        for ev in planned:
            found = find_evaluation(run, str(ev.get("key")))
            if found is not None:
                st.reports[str(ev.get("name"))] = str(found)
        st.evaluations_done = len(st.reports)
    if status is not None:
        st.epoch, st.epochs = status.epoch, status.epochs or st.epochs
        st.clean = status.last_clean if status.last_clean is not None else status.best_clean
        st.robust = status.last_robust if status.last_robust is not None else status.best_robust
    st.trained = status is not None and effective_state(status) == "finished"
    st.state, st.message = _state(st, job, status)
    if st.state in ("training", "evaluating") and not st.message:
        st.message = last_log_line(cell.log)
    return st


def _state(st: CellState, job: JobRecord | None, status: Status | None) -> tuple[str, str]:
    job_state = job.effective_state() if job else None
    run_state = effective_state(status) if status is not None else None
    if st.evaluations and st.evaluations_done == st.evaluations:
        return "done", ""
    if job_state == "failed" or run_state == "failed":
        return "failed", (job.message if job and job.message else (status.message if status else ""))
    if job_state == "queued":
        return "queued", ""
    if job_state == "running":
        return ("evaluating" if run_state == "finished" else "training"), ""
    if run_state == "finished":
        why = job.message if job and job.message else "trained"
        return "stopped", f"{why}; {st.evaluations_done}/{st.evaluations} evaluations saved"
    if run_state in ("stopped", "stale", "running", "starting") or job_state == "stopped":
        return "stopped", (job.message if job and job.message else "")
    return "pending", ""
