"""The TUI's helper process (`python -m workbench.tui.backend`): everything that needs torch, off the UI process.

Importing torch in a thread of the TUI held the GIL for seconds (keys took ~350 ms to repaint) and grew
the UI process by ~600 MB. The TUI instead starts this process once (`model/backend_client.py`) and asks
it over its stdin/stdout, one JSON object per line:

    request  {"id": 7, "op": "run_catalog", "args": {}}
    reply    {"id": 7, "ok": <result>}   or   {"id": 7, "error": "one line"}

A handler's exception is an error reply; the server keeps serving. It exits when its stdin closes, so it
dies with the TUI however the TUI ends. No Textual here.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Any, Callable

from ..allocator import keep_freed_memory
from ..errors import WorkbenchError


def _run_catalog() -> dict:
    from .model.catalog import catalog_to_json, load_catalog

    return catalog_to_json(load_catalog())


def _form_catalog() -> dict:
    catalog = _run_catalog()
    warm_checks()  # the form's first check comes next; it waits for this warm-up instead of doing it
    return catalog


def _check_config(data: Any) -> list | None:
    from .model.run_form import check_config

    if not isinstance(data, dict):
        raise WorkbenchError(f"a config is a mapping, not {type(data).__name__}")
    problem = check_config(data)
    return None if problem is None else list(problem)


def _attack_catalog() -> list[dict]:
    from .model.attack_form import attack_info_to_json, load_catalog

    return [attack_info_to_json(info) for info in load_catalog()]


def _attack_presets() -> dict[str, str]:
    from .model.attack_form import load_presets

    return load_presets()


def _examples(path: str) -> list[dict]:
    from .model.examples_view import example_to_json, load_examples

    return [example_to_json(e) for e in load_examples(path)]


def _ping() -> dict:
    return {"pid": os.getpid()}


OPS: dict[str, Callable[..., Any]] = {
    "run_catalog": _form_catalog,
    "check_config": _check_config,
    "attack_catalog": _attack_catalog,
    "attack_presets": _attack_presets,
    "examples": _examples,
    "ping": _ping,
}


def one_line(exc: BaseException) -> str:
    """The UI shows one line: our own errors as they are, anything else with its type."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, (WorkbenchError, ValueError, OSError)) and first:
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


# One piece of work at a time: the preload and the requests share torch state (e.g. the meta-device mode).
_work = threading.Lock()


def handle(line: str) -> dict:
    """One request line -> its reply (never raises)."""
    rid = None
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        rid = request.get("id")
        op = OPS.get(request.get("op"))
        if op is None:
            raise ValueError(f"unknown op {request.get('op')!r}")
        args = request.get("args") or {}
        if not isinstance(args, dict):
            raise ValueError("args must be a JSON object")
        if op is _ping:
            result = op(**args)  # answers even while the preload holds the lock: the process is up
        else:
            with _work:
                result = op(**args)
        json.dumps(result)  # a result that cannot be sent is this request's error, not the server's
        return {"id": rid, "ok": result}
    except Exception as exc:  # noqa: BLE001 - every failure is a reply; the server keeps serving
        return {"id": rid, "error": one_line(exc)}


def _warm(*steps: Callable[[], Any]) -> None:
    for step in steps:
        try:
            with _work:
                step()
        except Exception:  # noqa: BLE001 - failures are left for the requests to report
            pass


def preload() -> None:
    """Import torch and the registries while the user is still on the home screen, so the first form opens
    fast. A request waits at most for the step under way."""
    _warm(_run_catalog, _attack_catalog, _attack_presets)


_checks_warm = threading.Event()


def warm_checks() -> None:
    """The first config check builds a meta model, which imports sympy (~1.4 s of CPU): start it when the
    new-run form asks for its catalog (its first check follows within a second), not on the chance that
    the form is ever opened."""
    if not _checks_warm.is_set():
        _checks_warm.set()
        threading.Thread(target=_warm, args=(lambda: _check_config({"dataset": "digits", "model": "tiny"}),),
                         name="warm-checks", daemon=True).start()


def serve(stdin, stdout) -> None:
    for line in stdin:
        if not line.strip():
            continue
        stdout.write(json.dumps(handle(line)) + "\n")
        stdout.flush()


def main() -> None:
    keep_freed_memory()
    # Ctrl+C belongs to the TUI; this process ends when the TUI closes its stdin (or is gone).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The protocol owns the real stdout; anything a library prints goes to stderr instead of corrupting it.
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # Requests are read while the preload runs: a request waits only for the imports it needs, and a
    # closed stdin ends the process at once (the TUI has gone).
    threading.Thread(target=preload, name="preload", daemon=True).start()
    try:
        serve(sys.stdin, channel)
    except BrokenPipeError:
        pass
    # A daemon thread may still be importing: skip the interpreter's shutdown.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
