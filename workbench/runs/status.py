"""status.json: what state a run is in, written by the trainer, read by `runs`, `stop` and the TUI."""

from __future__ import annotations

import errno
import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import WorkbenchError
from .files import load_json, write_json_atomic

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
        """The status in `path`; None when there is none or it cannot be read (see read_checked)."""
        return cls.read_checked(path)[0]

    @classmethod
    def read_checked(cls, path: Path) -> "tuple[Status | None, str]":
        """The status and, when something in the file is unusable, why (one line naming the file).

        No file: (None, ""). A file that cannot be parsed: (None, reason). Written by another process
        (maybe another version): only well-typed, in-range fields are kept, so a reader that formats
        them never meets a string where a number belongs. A wrong-typed field is just dropped; a pid
        out of range is dropped and reported, since it leaves the run's liveness unknown."""
        path = Path(path)
        try:
            data = load_json(path)
        except WorkbenchError as exc:
            return None, str(exc)
        if data is None:
            return None, ""
        known = {k: _bounded(v) for k, v in data.items() if k in cls.__dataclass_fields__ and _well_typed(k, v)}
        pid = data.get("pid")
        problem = f"{path.name}: pid out of range" if _is_int(pid) and "pid" not in known else ""
        return cls(**known), problem


_INTS = {"pid", "epoch", "epochs", "step", "batch", "batches"}
_FLOATS = {"started", "updated", "best_clean", "best_robust", "last_clean", "last_robust"}
_OPTIONAL = {"pid", "best_clean", "best_robust", "last_clean", "last_robust"}
PID_MAX = 2**31 - 1  # pid_t is a C int: os.kill and waitpid overflow beyond it
_LIMIT = 2**63  # counts and times beyond int64 are nobody's real values
MAX_TEXT = 4096  # a status message is one line; a longer one is cut, not shown whole


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _well_typed(key: str, value: Any) -> bool:
    if value is None:
        return key in _OPTIONAL
    if isinstance(value, bool):
        return False
    if key == "pid":
        return isinstance(value, int) and 0 < value <= PID_MAX
    if key in _INTS:
        return isinstance(value, int) and 0 <= value < _LIMIT
    if key in _FLOATS:
        # An int is compared, never converted: float(10**400) would overflow.
        return (isinstance(value, int) and abs(value) < _LIMIT) or (
            isinstance(value, float) and math.isfinite(value) and abs(value) < _LIMIT)
    return isinstance(value, str)


def _bounded(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if len(value) > MAX_TEXT:
        value = value[:MAX_TEXT] + "…"
    # JSON may hold a lone surrogate ("\ud800"), which no terminal encoding can print: make it "?".
    return value.encode("utf-8", "replace").decode("utf-8")


def pid_alive(pid: int | None) -> bool:
    # Never 0 or negative (os.kill would probe a process group), never beyond pid_t (OverflowError).
    if not _is_int(pid) or not 0 < pid <= PID_MAX:
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
            if fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):  # zombie, or dead and being reaped
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
