"""The evals/ folder of a checkpoint: saved evaluation reports and background evaluation jobs.

An evaluation started from the TUI is a detached `workbench attack ... --job-file JOB` process.
It reports through `evals/jobs/<name>.json` (state, progress, the saved report, or why it
failed) and logs to `<name>.log` beside it; the UI polls those files and never holds a pipe to
the process, so closing the UI leaves the evaluation running and reopening it re-attaches.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import WorkbenchError
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


def summarize_report(path: Path, report: dict[str, Any]) -> ReportSummary:
    results = [r for r in report.get("results", []) if isinstance(r, dict)]
    labels = list(dict.fromkeys(str(r.get("label", r.get("attack", "?"))) for r in results))
    eps = sorted({float(r["eps"]) for r in results if isinstance(r.get("eps"), (int, float))})
    worst = {f"{w.get('protocol')} {w.get('eps')}": w.get("robust_accuracy")
             for w in report.get("worst_case", []) if isinstance(w, dict)}
    return ReportSummary(
        path=path, checkpoint=str(report.get("checkpoint", "")), created=float(report.get("created") or 0.0),
        n=int(report.get("n") or 0), clean_accuracy=report.get("clean_accuracy"),
        protocols=[str(p.get("name", p)) if isinstance(p, dict) else str(p) for p in report.get("protocols", [])],
        attacks=labels, eps=eps, worst=worst, examples=report.get("examples"))


def list_reports(folder: Path, checkpoint: str | Path | None = None) -> list[ReportSummary]:
    """Evaluation reports in an evals/ folder, newest first (optionally only those of one checkpoint)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for path in folder.glob("*.json"):
        report = read_json(path)
        if not report or "results" not in report:
            continue  # audits, and files still being written (reserved names are empty)
        if checkpoint is not None and Path(report.get("checkpoint", "")).name != Path(checkpoint).name:
            continue
        out.append(summarize_report(path, report))
    return sorted(out, key=lambda r: (r.created, r.path.name), reverse=True)


# -- background evaluation jobs --------------------------------------------------------------

JOB_STATES = ("starting", "running", "finished", "failed", "crashed")
_PROGRESS_INTERVAL = 0.25  # seconds between progress writes: a UI polls, it need not see every batch


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
    finished_tasks: int = 0  # attack x eps tasks completed
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
        data = read_json(path)
        if data is None:
            return None
        job = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "path"})
        job.path = Path(path)
        return job

    @property
    def effective_state(self) -> str:
        """A job whose process is gone without saying so crashed (killed, or a traceback: see its log)."""
        if self.state in ("starting", "running") and self.host == socket.gethostname() and self.pid:
            return self.state if pid_alive(self.pid) else "crashed"
        return self.state


def jobs_dir(evals: Path) -> Path:
    return Path(evals) / "jobs"


def list_jobs(evals: Path) -> list[EvalJob]:
    folder = jobs_dir(evals)
    if not folder.is_dir():
        return []
    jobs = [EvalJob.read(p) for p in folder.glob("*.json")]
    return sorted((j for j in jobs if j is not None), key=lambda j: j.started, reverse=True)


def launch_evaluation(checkpoint: str | Path, args: list[str]) -> EvalJob:
    """Start `workbench attack CKPT ARGS` in its own session, reporting to a new job file; returns the job."""
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
    with open(job.log, "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(cmd, stdin=devnull, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env, close_fds=True)
    current = EvalJob.read(path) or job
    if current.state == "starting":  # the child may already have reported
        current.pid = proc.pid
        current.write(path)
    return EvalJob.read(path) or current


def cancel_evaluation(job: EvalJob) -> None:
    if job.pid and job.effective_state in ("starting", "running"):
        try:
            os.kill(job.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


class JobReporter:
    """The evaluating process's side: progress, then the saved report or the reason it failed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.job = EvalJob.read(self.path) or EvalJob()
        self.job.path = self.path
        self.job.state, self.job.pid = "running", os.getpid()
        self._last = 0.0
        self._tasks: set[str] = set()
        self.job.write(self.path)

    def progress(self, label: str, done: int, total: int) -> None:
        if label != self.job.label and self.job.label:
            self._tasks.add(self.job.label)
        self.job.label, self.job.done, self.job.total = label, done, total
        self.job.finished_tasks = len(self._tasks)
        now = time.monotonic()
        if now - self._last >= _PROGRESS_INTERVAL or done >= total:
            self._last = now
            self.job.write(self.path)

    def finish(self, report: Path) -> None:
        self.job.state, self.job.report, self.job.message = "finished", str(report), ""
        self.job.write(self.path)

    def fail(self, message: str) -> None:
        self.job.state, self.job.message = "failed", message
        self.job.write(self.path)
