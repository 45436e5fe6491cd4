"""The evals/ folder of a checkpoint: saved evaluation reports and background evaluation jobs.

An evaluation started from the TUI is a detached `workbench attack ... --job-file JOB` process.
It reports through `evals/jobs/<name>.json` (state, progress, the saved report, or why it
failed) and logs to `<name>.log` beside it; the UI polls those files and never holds a pipe to
the process, so closing the UI leaves the evaluation running and reopening it re-attaches.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import WorkbenchError
from ..progress.event import EvalProgress
from ..progress.timing import ProgressClock
from .files import read_json, write_json_atomic
from .status import pid_alive


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (its best.pt, else last.pt)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / "checkpoints" / name).is_file():
                return p / "checkpoints" / name
        raise WorkbenchError(f"{p} is a folder without checkpoints/best.pt or checkpoints/last.pt")
    return p


def evals_dir_for(ckpt: Path) -> Path:
    """A run checkpoint's evaluations go to the run's evals/; any other checkpoint's beside it."""
    ckpt = Path(ckpt)
    return ckpt.parent.parent / "evals" if ckpt.parent.name == "checkpoints" else ckpt.parent / "evals"


def reserve_name(folder: Path, stem: str, suffix: str) -> Path:
    """A new file name, claimed with O_EXCL so concurrent evaluations never write the same file."""
    for i in range(10_000):
        path = folder / (f"{stem}{suffix}" if i == 0 else f"{stem}-{i}{suffix}")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return path
        except FileExistsError:
            continue
    raise WorkbenchError(f"{folder}: no free file name for {stem}{suffix}")


# -- saved reports ---------------------------------------------------------------------------

@dataclass
class ReportSummary:
    path: Path
    checkpoint: str
    created: float
    n: int
    clean_accuracy: float | None
    protocols: list[str]
    attacks: list[str]
    eps: list[float]
    worst: dict[str, float]  # "<protocol> <eps>" -> worst-case robust accuracy
    examples: str | None


def as_number(value: Any) -> float | None:
    """A finite int/float from a report or job file, else None (bools, strings, null, NaN are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int) and abs(value) >= 2**63:
        return None  # math.isfinite(10**400) would overflow converting it
    return float(value) if math.isfinite(value) else None


def report_entries(report: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The dict entries of a list field of a report ("results", "worst_case"); [] when it is missing,
    null or not a list. Every reader of a saved report goes through this: older or hand-edited
    reports must never break a listing."""
    value = report.get(key)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _created(value: Any) -> float:
    # A timestamp; older reports may hold an ISO date string.
    number = as_number(value)
    if number is not None:
        return number
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return 0.0
    return 0.0


def summarize_report(path: Path, report: dict[str, Any]) -> ReportSummary:
    """What a listing shows of a report, each field read on its own: a bad value becomes a blank, not an error."""
    results = report_entries(report, "results")
    labels = list(dict.fromkeys(str(r.get("label") or r.get("attack") or "?") for r in results))
    eps = sorted({e for e in (as_number(r.get("eps")) for r in results) if e is not None})
    worst = {f"{w.get('protocol')} {w.get('eps')}": as_number(w.get("robust_accuracy"))
             for w in report_entries(report, "worst_case")}
    protocols = report.get("protocols")
    n = as_number(report.get("n"))
    checkpoint, examples = report.get("checkpoint"), report.get("examples")
    return ReportSummary(
        path=path, checkpoint=checkpoint if isinstance(checkpoint, str) else "", created=_created(report.get("created")),
        n=int(n) if n is not None else 0, clean_accuracy=as_number(report.get("clean_accuracy")),
        protocols=[str(p.get("name", p)) if isinstance(p, dict) else str(p)
                   for p in (protocols if isinstance(protocols, list) else [])],
        attacks=labels, eps=eps, worst=worst, examples=examples if isinstance(examples, str) and examples else None)


def list_reports(folder: Path, checkpoint: str | Path | None = None,
                 skipped: list[Path] | None = None) -> list[ReportSummary]:
    """Evaluation reports in an evals/ folder, newest first (optionally only those of one checkpoint).

    A file that cannot be read as a report is left out, never the whole listing; when `skipped` is
    given, such files are appended to it (empty files are being written, not bad: not listed there)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for path in folder.glob("*.json"):
        report = read_json(path)
        if report is None:
            if skipped is not None and _non_empty(path):
                skipped.append(path)
            continue
        if "results" not in report:
            continue  # audits
        try:
            summary = summarize_report(path, report)
        except Exception:  # noqa: BLE001 - one bad file must not hide the others
            if skipped is not None:
                skipped.append(path)
            continue
        if checkpoint is not None and Path(summary.checkpoint).name != Path(checkpoint).name:
            continue
        out.append(summary)
    return sorted(out, key=lambda r: (r.created, r.path.name), reverse=True)


def _non_empty(path: Path) -> bool:
    # Reports and job files are written atomically; only a freshly reserved name is empty.
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


# -- background evaluation jobs --------------------------------------------------------------

# The states a job file may hold. "crashed" is never written: effective_state derives it.
JOB_STATES = ("starting", "running", "finished", "failed", "cancelled")
ACTIVE_STATES = ("starting", "running")
_PROGRESS_INTERVAL = 0.25  # seconds between progress writes: a UI polls, it need not see every batch
# A job still without a pid this long after launch never started (the launcher died between
# writing the job file and recording the process; the child always writes its pid).
_START_TIMEOUT = 30.0
_TEXT_FIELDS = ("checkpoint", "host", "label", "message")
_COUNT_FIELDS = ("done", "total", "finished_tasks")


@dataclass
class EvalJob:
    state: str = "starting"
    checkpoint: str = ""
    args: list[str] = field(default_factory=list)
    pid: int | None = None
    host: str = field(default_factory=socket.gethostname)
    started: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    label: str = ""  # the attack in progress
    done: int = 0
    total: int = 0
    finished_tasks: int = 0  # attacks finished (an attack in two protocols counts twice)
    # The latest progress event (EvalProgress.to_dict()), and the run's elapsed seconds and the attack's
    # ETA when it was written: a reader adds the time since `updated`.
    event: dict[str, Any] | None = None
    elapsed: float = 0.0
    eta: float | None = None
    message: str = ""
    report: str | None = None  # the saved report (JSON) when finished
    path: Path | None = None  # this job's status file (not stored)

    @property
    def log(self) -> Path | None:
        return self.path.with_suffix(".log") if self.path else None

    def write(self, path: Path) -> None:
        self.updated = time.time()
        data = asdict(self)
        data.pop("path")
        write_json_atomic(path, data)

    @classmethod
    def read(cls, path: Path) -> "EvalJob | None":
        """The job in a job file; None when it is unreadable or its state is not one of JOB_STATES.
        Any other field with a wrong type reads as its default, so one bad value never breaks a listing."""
        data = read_json(path)
        if data is None or data.get("state", "starting") not in JOB_STATES:
            return None
        job = cls(state=data.get("state", "starting"), path=Path(path))
        for name in _TEXT_FIELDS:
            if isinstance(data.get(name), str):
                setattr(job, name, data[name])
        for name in _COUNT_FIELDS:
            value = as_number(data.get(name))
            setattr(job, name, int(value) if value is not None and value >= 0 else 0)
        job.started = as_number(data.get("started")) or 0.0
        job.updated = as_number(data.get("updated")) or 0.0
        event = EvalProgress.from_dict(data.get("event"))
        job.event = event.to_dict() if event is not None else None
        job.elapsed = max(0.0, as_number(data.get("elapsed")) or 0.0)
        eta = as_number(data.get("eta"))
        job.eta = eta if eta is not None and eta >= 0 else None
        pid = data.get("pid")
        job.pid = pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None
        args = data.get("args")
        job.args = [str(a) for a in args] if isinstance(args, list) else []
        report = data.get("report")
        job.report = report if isinstance(report, str) and report else None
        return job

    @property
    def effective_state(self) -> str:
        """A job whose process is gone without saying so crashed (killed, or a traceback: see its log);
        so did one still without a pid long after launch (its process never started)."""
        if self.state not in ACTIVE_STATES:
            return self.state
        if self.pid:
            if self.host == socket.gethostname() and not pid_alive(self.pid):
                return "crashed"
        elif time.time() - max(self.started, self.updated) > _START_TIMEOUT:
            return "crashed"
        return self.state


def jobs_dir(evals: Path) -> Path:
    return Path(evals) / "jobs"


def list_jobs(evals: Path, skipped: list[Path] | None = None) -> list[EvalJob]:
    """The jobs of an evals/ folder, newest first; unreadable job files are left out (and appended to
    `skipped` when given, except empty ones: a name just reserved)."""
    folder = jobs_dir(evals)
    if not folder.is_dir():
        return []
    jobs = []
    for path in folder.glob("*.json"):
        job = EvalJob.read(path)
        if job is not None:
            jobs.append(job)
        elif skipped is not None and _non_empty(path):
            skipped.append(path)
    return sorted(jobs, key=lambda j: (j.started, j.path.name), reverse=True)


def launch_evaluation(checkpoint: str | Path, args: list[str]) -> EvalJob:
    """Start `workbench attack CKPT ARGS` in its own session, reporting to a new job file; returns the job.
    If the process cannot be started, the job file says "failed" with the reason and WorkbenchError is raised."""
    ckpt = resolve_checkpoint(checkpoint)
    if not ckpt.is_file():
        raise WorkbenchError(f"checkpoint {ckpt} does not exist")
    folder = jobs_dir(evals_dir_for(ckpt))
    folder.mkdir(parents=True, exist_ok=True)
    path = reserve_name(folder, f"{ckpt.stem}-{time.strftime('%Y%m%d-%H%M%S')}", ".json")
    job = EvalJob(checkpoint=str(ckpt), args=list(args), path=path)
    job.write(path)
    cmd = [sys.executable, "-m", "workbench", "attack", str(ckpt), *args, "--job-file", str(path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        with open(job.log, "ab") as log, open(os.devnull, "rb") as devnull:
            proc = subprocess.Popen(cmd, stdin=devnull, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env, close_fds=True)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        job.state, job.message = "failed", f"could not start the evaluation process: {exc}"
        try:
            job.write(path)
        except OSError:
            pass  # the file stays "starting" without a pid: effective_state calls it crashed after a while
        raise WorkbenchError(job.message) from exc
    # Record the pid, unless the child already reported (it writes "running" with its own pid first).
    # Re-read right before the write, so the window is the microseconds between this read and the atomic
    # replace. Safe enough: the child's first write comes after interpreter start-up and imports, and it
    # always writes "running" before any outcome; so at worst this replaces that first "running" with
    # "starting" and the same pid, which the child's next write restores. An outcome is never lost.
    current = EvalJob.read(path)
    if current is not None and current.state == "starting" and current.pid is None:
        current.pid = proc.pid
        current.write(path)
    return EvalJob.read(path) or current or job


def cancel_evaluation(job: EvalJob) -> None:
    """Send the job's process SIGTERM (it records "cancelled" and exits); returns at once.
    Raises WorkbenchError saying why when no signal was sent."""
    current = (EvalJob.read(job.path) if job.path else None) or job  # the file may be newer than `job`
    state = current.effective_state
    if state not in ACTIVE_STATES:
        raise WorkbenchError(f"no evaluation running (it is {state})")
    if not current.pid:
        raise WorkbenchError("the evaluation process has not started yet: try again in a moment")
    if current.host != socket.gethostname():
        raise WorkbenchError(f"the evaluation runs on {current.host}: cancel it there")
    try:
        os.kill(current.pid, signal.SIGTERM)
    except ProcessLookupError:
        raise WorkbenchError("no evaluation running (its process has exited)") from None
    except PermissionError as exc:
        raise WorkbenchError(f"cannot signal the evaluation process {current.pid}: {exc}") from None


class JobReporter:
    """The evaluating process's side: progress, then the saved report, the reason it failed, or that it
    was cancelled."""

    def __init__(self, path: str | Path, clock=time.monotonic):
        self.path = Path(path)
        self.job = EvalJob.read(self.path) or EvalJob()
        self.job.path = self.path
        self.job.state, self.job.pid = "running", os.getpid()
        self.job.finished_tasks = 0
        self.timer = ProgressClock(clock)
        self._last = float("-inf")
        self.job.write(self.path)

    def progress(self, event: EvalProgress) -> None:
        """The engine's progress hook. Written at most every _PROGRESS_INTERVAL, and whenever a pass or
        an attack ends (so the UI never misses a finished attack)."""
        now = self.timer.observe(event)
        if event.kind == "spec_end":
            self.job.finished_tasks += 1
        if now - self._last >= _PROGRESS_INTERVAL or event.kind in ("pass_end", "spec_end"):
            self._last = now
            self.job.label, self.job.done, self.job.total = event.label, event.done, event.total
            self.job.event = event.to_dict()  # only when written: events come every step
            self.job.elapsed, self.job.eta = self.timer.elapsed(now), self.timer.eta(event, now)
            self.job.write(self.path)

    def finish(self, report: Path) -> None:
        self.job.state, self.job.report, self.job.message = "finished", str(report), ""
        self.job.write(self.path)

    def fail(self, message: str) -> None:
        self.job.state, self.job.message = "failed", message
        self.job.write(self.path)

    def cancel(self) -> None:
        self.job.state, self.job.message = "cancelled", "cancelled"
        self.job.write(self.path)
