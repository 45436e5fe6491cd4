"""Starting a trainer detached from the terminal, and stopping one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    status.state, status.pid, status.message = "starting", None, "resuming"
    status.write(run.status)
    return launch_detached(run, extra_args)


def delete_run(path: str | Path) -> None:
    """Remove a run folder (not while its trainer is alive)."""
    run = open_run(path)
    state = effective_state(Status.read(run.status))
    if state in ("running", "starting"):
        status = Status.read(run.status)
        if status is not None and status.pid:
            raise WorkbenchError(f"run {run.root} is running; stop it before deleting it")
    shutil.rmtree(run.root)


def stop_run(path: str | Path, timeout: float = 120.0) -> str:
    """Ask a running trainer to stop (SIGTERM: it checkpoints and exits); returns the final state."""
    run = open_run(path)
    status = Status.read(run.status)
    state = effective_state(status)
    if status is None or state not in ("running", "starting"):
        raise WorkbenchError(f"run {run.root} is not running (state: {state})")
    try:
        os.kill(status.pid, signal.SIGTERM)
    except ProcessLookupError:
        return "stopped"
    except PermissionError:
        raise WorkbenchError(f"not allowed to stop process {status.pid} of run {run.root}") from None
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not pid_alive(status.pid):
            break
        time.sleep(0.1)
    else:
        raise WorkbenchError(f"run {run.root} (pid {status.pid}) has not stopped after {timeout:.0f} s; it stops at "
                             "its next batch (an evaluation in progress finishes first)")
    final = Status.read(run.status)
    return final.state if final else "stopped"
