"""The TUI's side of its backend process (`workbench.tui.backend`): one long-lived child that does the
torch work (catalogs, config checks, example files), so the UI process never imports torch.

No Textual, no torch. Thread-safe: a lock holds one request and its reply together; callers are thread
workers, so a blocked call blocks only its worker. The process is started lazily (or early by `start()`),
restarted once if it died, killed on a timeout (the next call starts a fresh one), and ended by `close()`.
The screens use the process-wide client `shared()`; the app closes it on exit.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from ...attack_meta import AttackMeta
from ...errors import WorkbenchError
from .attack_form import attack_info_from_json
from .catalog import Catalog, catalog_from_json
from .examples_view import Example, example_from_json

COMMAND = (sys.executable, "-m", "workbench.tui.backend")
ROOT = Path(__file__).resolve().parents[3]  # where this `workbench` package was imported from
# The first request may wait for the backend to import torch and the registries: seconds on a busy machine.
TIMEOUT = 60.0


class BackendError(WorkbenchError):
    """The backend refused a request or could not answer; the message is one line for the UI."""


def backend_env() -> dict[str, str]:
    """The backend must run this very code: `-m` would put the current directory first on sys.path, where
    another `workbench` checkout may lie (the `workbench` script does not look there). Python >= 3.11 then
    leaves it out (PYTHONSAFEPATH), unless this package was itself found there."""
    env = dict(os.environ)
    try:
        here = Path.cwd().resolve()
    except OSError:
        here = None
    if here != ROOT:
        env["PYTHONSAFEPATH"] = "1"
    return env


class _Process:
    """One backend process and the replies its reader thread has read (None: its stdout closed)."""

    def __init__(self, command: tuple[str, ...] | list[str]) -> None:
        # stderr to an anonymous file: a crash's last line goes into the error, and nothing is left behind.
        self.stderr: IO[bytes] = tempfile.TemporaryFile()
        try:
            self.popen = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=self.stderr, env=backend_env(), start_new_session=False)
        except BaseException:
            self.stderr.close()
            raise
        self.replies: queue.Queue[dict | None] = queue.Queue()
        threading.Thread(target=self._read, name=f"backend-{self.popen.pid}", daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.popen.stdout:
                try:
                    reply = json.loads(line)
                except ValueError:
                    continue  # not ours (the backend keeps its stdout for replies; be lenient anyway)
                if isinstance(reply, dict):
                    self.replies.put(reply)
        except (OSError, ValueError):
            pass
        self.replies.put(None)

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, message: dict) -> None:
        self.popen.stdin.write((json.dumps(message, default=str) + "\n").encode("utf-8"))
        self.popen.stdin.flush()

    def last_words(self) -> str:
        """The last line the process wrote to stderr (why it died), or its exit code."""
        try:
            self.stderr.seek(0, os.SEEK_END)
            self.stderr.seek(max(0, self.stderr.tell() - 4096))
            lines = [ln for ln in self.stderr.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        except (OSError, ValueError):
            lines = []
        code = self.popen.poll()
        where = f"exit code {code}" if code is not None else "no reply"
        return f"{where}: {lines[-1].strip()}" if lines else where

    def stop(self, grace: float = 1.0) -> None:
        """Close its stdin (it exits by itself), and make sure it is gone without waiting long."""
        try:
            self.popen.stdin.close()
        except OSError:
            pass
        try:
            self.popen.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            self.popen.terminate()  # busy (importing, or a long request): nothing of it is worth waiting for
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        for stream in (self.popen.stdout, self.stderr):
            try:
                stream.close()
            except OSError:
                pass


class BackendClient:
    def __init__(self, command: tuple[str, ...] | list[str] = COMMAND, timeout: float = TIMEOUT) -> None:
        self.command = tuple(command)
        self.timeout = timeout
        self._request = threading.Lock()  # one request/reply at a time
        self._state = threading.Lock()  # guards _proc and _closed; never held while waiting for a reply
        self._proc: _Process | None = None
        self._closed = False
        self._next_id = 0

    # -- the process ---------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.popen.pid if proc is not None and proc.alive else None

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        """Start the backend now if it is not running (it preloads torch meanwhile); returns at once."""
        self._process()

    def _process(self) -> _Process:
        with self._state:
            if self._closed:
                raise BackendError("the backend is closed")
            if self._proc is None or not self._proc.alive:
                if self._proc is not None:
                    self._proc.stop()
                try:
                    self._proc = _Process(self.command)
                except OSError as exc:
                    self._proc = None
                    raise BackendError(f"cannot start the backend: {exc.strerror or exc}") from None
            return self._proc

    def _discard(self, proc: _Process) -> None:
        with self._state:
            if self._proc is proc:
                self._proc = None
        proc.stop()

    def close(self) -> None:
        """End the backend process; later calls raise BackendError. Safe from any thread, at any time:
        a call waiting for a reply gets an error at once."""
        with self._state:
            self._closed = True
            proc, self._proc = self._proc, None
        if proc is not None:
            proc.stop()

    # -- requests ------------------------------------------------------------------------------
    def call(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        """The result of `op(**args)` in the backend; raises BackendError with one line."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if not self._request.acquire(timeout=max(0.0, timeout)):
            raise BackendError(f"the backend is busy ({op} waited {timeout:g} s)")
        try:
            for attempt in (1, 2):
                proc = self._process()
                self._next_id += 1
                rid = self._next_id
                try:
                    proc.send({"id": rid, "op": op, "args": args})
                except (OSError, ValueError):
                    reply = None  # it died since: like an answer that never came
                else:
                    reply = self._reply(proc, rid, deadline, op, timeout)
                if reply is not None:
                    if "error" in reply:
                        raise BackendError(str(reply["error"]))
                    return reply.get("ok")
                if self._closed:
                    raise BackendError("the backend is closed")
                why = proc.last_words()
                self._discard(proc)
                if attempt == 2:  # it died again on the retry: this request kills it, say why
                    raise BackendError(f"the backend died ({why})")
            raise AssertionError("unreachable")
        finally:
            self._request.release()

    def _reply(self, proc: _Process, rid: int, deadline: float, op: str, timeout: float) -> dict | None:
        while True:
            try:
                reply = proc.replies.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                # Stuck (or hopelessly slow): a fresh process serves the next call.
                self._discard(proc)
                raise BackendError(f"the backend did not answer {op} within {timeout:g} s") from None
            if reply is None or reply.get("id") == rid:
                return reply
            # A reply to an earlier request whose caller gave up: skip it.

    # -- typed requests (the dataclasses the screens use) ------------------------------------------
    def run_catalog(self) -> Catalog:
        return catalog_from_json(self.call("run_catalog"))

    def check_config(self, data: dict) -> tuple[str, str] | None:
        problem = self.call("check_config", data=data)
        return None if problem is None else (str(problem[0]), str(problem[1]))

    def attack_catalog(self) -> tuple[AttackMeta, ...]:
        return tuple(attack_info_from_json(a) for a in self.call("attack_catalog"))

    def attack_presets(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.call("attack_presets").items()}

    def examples(self, path: str | Path) -> list[Example]:
        # Absolute: the backend's working directory is the one it started in, not necessarily ours now.
        return [example_from_json(e) for e in self.call("examples", path=str(Path(path).absolute()))]


_shared: BackendClient | None = None
_shared_lock = threading.Lock()


def shared() -> BackendClient:
    """The process-wide client (a new one after `close_shared`, e.g. the next app in a test run)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.closed:
            _shared = BackendClient()
        return _shared


def close_shared() -> None:
    """End the shared backend, if one was started (the app calls this on exit)."""
    with _shared_lock:
        client = _shared
    if client is not None:
        client.close()
