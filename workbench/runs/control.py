"""Starting a trainer detached from the terminal, and stopping one."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from ..errors import WorkbenchError
from .files import RunPaths
from .layout import open_run
from .status import Status, effective_state, pid_alive


def launch_detached(run: RunPaths, extra_args: list[str] | None = None) -> int:
    """Start `workbench train --resume RUN` in its own session, logging to the run's train.log.

    A new session keeps it alive when the terminal or the TUI closes; no pipe connects it
    to the caller, so it never dies of a broken pipe.
    """
    cmd = [sys.executable, "-m", "workbench", "train", "--resume", str(run.root), *(extra_args or [])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(run.log, "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(cmd, stdin=devnull, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, close_fds=True)
    # Record the child at once, so `runs`/`stop` see it while it is still loading data.
    status = Status.read(run.status) or Status()
    if status.state == "starting":
        status.pid = proc.pid
        status.write(run.status)
    return proc.pid


def resume_detached(path: str | Path, extra_args: list[str] | None = None) -> int:
    """Continue a stopped or failed run in the background (`workbench train --resume RUN --detach`)."""
    run = open_run(path)
    status = Status.read(run.status)
    state = effective_state(status)
    if state in ("running", "starting") and status is not None and status.pid:
        raise WorkbenchError(f"run {run.root} is already running (pid {status.pid})")
    if state == "finished":
        raise WorkbenchError(f"run {run.root} already finished its epochs")
    status = status or Status()
    # 'starting' without a pid yet: launch_detached records the child, so a second UI sees it at once.
    status.state, status.pid, status.message = "starting", None, ""
    status.write(run.status)
    return launch_detached(run, extra_args)


def train_command(profile: Path, runs_dir: Path, device: str) -> list[str]:
    return [sys.executable, "-m", "workbench", "train", "--profile", str(profile), "--out", str(runs_dir),
            "--device", device, "--detach"]


def launch_profile(profile: Path, runs_dir: Path, device: str = "auto", *, timeout: float = 120.0,
                   cancelled: Callable[[], bool] = lambda: False) -> Path:
    """`workbench train --profile P --out RUNS --detach`, exactly as a user would type it; the new run folder.

    Waits for the CLI's validation and set-up (seconds, mostly importing torch), polling `cancelled`
    so a closing UI does not wait for it. Raises WorkbenchError with the CLI's own error line.
    """
    proc = subprocess.Popen(train_command(profile, runs_dir, device), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            stdout, stderr = proc.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            if cancelled() or time.monotonic() > deadline:
                proc.kill()
                proc.communicate()
                raise WorkbenchError("launch cancelled" if cancelled() else
                                     f"workbench train did not answer within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise WorkbenchError(_error_line(stderr) or f"workbench train failed (exit {proc.returncode})")
    for line in stdout.splitlines():
        if line.startswith("run: "):
            return Path(line.removeprefix("run: ").strip())
    raise WorkbenchError("workbench train printed no run folder")


def _error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in lines:
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return lines[-1] if lines else ""


def delete_run(path: str | Path) -> None:
    """Remove a run folder: not while its trainer or an evaluation of it is alive."""
    from .evals import list_jobs

    run = _run_to_delete(path)
    status = Status.read(run.status)
    if effective_state(status) in ("running", "starting") and status is not None and status.pid:
        raise WorkbenchError(f"run {run.root} is running; stop it before deleting it")
    live = [j for j in list_jobs(run.evals) if j.effective_state in ("starting", "running")]
    if live:
        raise WorkbenchError(f"an evaluation of {run.root.name} is running (pid {live[0].pid}); cancel it first")
    # The trainer holds this lock while it runs (even one another host started): never delete under it.
    with open(run.root / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkbenchError(f"run {run.root} is being trained by another process; stop it first") from None
        shutil.rmtree(run.root)


def _run_to_delete(path: str | Path) -> RunPaths:
    # Unlike open_run, a broken run (no config.yaml, but its other files) can be deleted too.
    run = RunPaths(Path(path))
    if not run.root.is_dir():
        raise WorkbenchError(f"run folder {run.root} does not exist")
    if not run.has_run_files():
        raise WorkbenchError(f"{run.root} is not a run folder (no config.yaml, status.json, metrics.jsonl "
                             "or checkpoints/)")
    return run


def request_stop(path: str | Path) -> int:
    """Send the trainer SIGTERM (it checkpoints, then exits) without waiting; returns its pid."""
    run = open_run(path)
    status = Status.read(run.status)
    state = effective_state(status)
    if status is None or state not in ("running", "starting"):
        raise WorkbenchError(f"run {run.root.name} is not running (state: {state})")
    if not status.pid:
        raise WorkbenchError(f"run {run.root.name} has not started its trainer yet; try again in a moment")
    if status.host != socket.gethostname():
        # A pid means nothing on another machine: never signal a local process that happens to have it.
        raise WorkbenchError(f"run {run.root.name} trains on host {status.host}; stop it there")
    try:
        os.kill(status.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise WorkbenchError(f"not allowed to stop process {status.pid} of run {run.root}") from None
    return status.pid


def stop_run(path: str | Path, timeout: float = 120.0) -> str:
    """Ask a running trainer to stop (SIGTERM: it checkpoints and exits); returns the final state."""
    run = open_run(path)
    pid = request_stop(run.root)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not pid_alive(pid):
            break
        time.sleep(0.1)
    else:
        raise WorkbenchError(f"run {run.root} (pid {pid}) has not stopped after {timeout:.0f} s; it stops at "
                             "its next batch (an evaluation in progress finishes first)")
    final = Status.read(run.status)
    return final.state if final else "stopped"
