"""status.json: what state a run is in, written by the trainer, read by `runs`, `stop` and the TUI."""

from __future__ import annotations

import errno
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .files import read_json, write_json_atomic

STATES = ("starting", "running", "finished", "failed", "stopped")
# A live trainer refreshes its heartbeat at least this often (seconds).
HEARTBEAT_SECONDS = 5.0


@dataclass
class Status:
    state: str = "starting"
    pid: int | None = None
    host: str = field(default_factory=socket.gethostname)
    started: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    epoch: int = 0  # epochs completed
    epochs: int = 0
    step: int = 0  # global step
    batch: int = 0  # batches done in the current epoch
    batches: int = 0  # batches per epoch
    message: str = ""
    best_clean: float | None = None
    best_robust: float | None = None
    last_clean: float | None = None
    last_robust: float | None = None
    device: str = ""

    def write(self, path: Path) -> None:
        self.updated = time.time()
        write_json_atomic(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> "Status | None":
        data = read_json(path)
        if data is None:
            return None
        # Written by another process (maybe another version): keep only well-typed fields, so a reader
        # that formats them never meets a string where a number belongs.
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and _well_typed(k, v)}
        return cls(**known)


_INTS = {"pid", "epoch", "epochs", "step", "batch", "batches"}
_FLOATS = {"started", "updated", "best_clean", "best_robust", "last_clean", "last_robust"}
_OPTIONAL = {"pid", "best_clean", "best_robust", "last_clean", "last_robust"}


def _well_typed(key: str, value: Any) -> bool:
    if value is None:
        return key in _OPTIONAL
    if isinstance(value, bool):
        return False
    if key in _INTS:
        return isinstance(value, int)
    if key in _FLOATS:
        return isinstance(value, (int, float))
    return isinstance(value, str)


def pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        # Reap it if it is our own exited child, so a zombie does not look alive.
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        pass
    return True


def effective_state(status: Status | None) -> str:
    """The state to show: a 'running' run whose process is gone (killed) shows as 'stopped'."""
    if status is None:
        return "unknown"
    if status.state == "starting" and status.pid is None:
        return "starting"  # prepared; the trainer has not been launched yet
    if status.state in ("running", "starting"):
        if status.host == socket.gethostname():
            return status.state if pid_alive(status.pid) else "stopped"
        if time.time() - status.updated > 10 * HEARTBEAT_SECONDS:
            return "stale"
    return status.state


def status_summary(status: Status) -> dict[str, Any]:
    return {**asdict(status), "state": effective_state(status)}
