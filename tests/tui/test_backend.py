"""The TUI's backend process: every op answers what the in-process function returns, a failing request is an
error reply and the server goes on, and the client restarts a killed server and ends it on close."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from workbench.config import read_yaml
from workbench.tui.model import attack_form, run_form
from workbench.tui.model.backend_client import COMMAND, BackendClient, BackendError, backend_env
from workbench.tui.model.catalog import load_catalog
from workbench.tui.model.examples_view import load_examples

from .fixed_runs import DATA

QUICKSTART = read_yaml(Path(__file__).resolve().parents[2] / "profiles" / "quickstart.yaml")


@pytest.fixture(scope="module")
def client():
    backend = BackendClient()
    yield backend
    backend.close()


def gone(pid: int, within: float = 10.0) -> bool:
    """The process no longer exists (for a child the client has reaped)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_run_catalog_is_the_in_process_catalog(client):
    catalog = client.run_catalog()
    assert catalog == load_catalog()  # same dataclasses: profiles as Paths, param specs with their bounds
    assert "quickstart" in catalog.profiles and "tiny" in catalog.models_for("digits")
    assert catalog.defenses["softmax"].defaults() == load_catalog().defenses["softmax"].defaults()


def test_check_config_accepts_quickstart_and_names_the_bad_key(client):
    assert client.check_config(QUICKSTART) is None
    bad = {**QUICKSTART, "model": {"name": "tiny", "width": 0}}
    problem = client.check_config(bad)
    assert problem is not None and problem == run_form.check_config(bad)
    assert problem[0].startswith("model")
    assert client.check_config({**QUICKSTART, "dataset": "nope"})[0] == "dataset"


def test_attack_catalog_and_presets_are_the_engines(client):
    assert client.attack_catalog() == attack_form.load_catalog()
    presets = client.attack_presets()
    assert presets == attack_form.load_presets() and set(attack_form.PRESETS) <= set(presets)


def test_examples_are_exactly_the_in_process_load(client):
    examples = client.examples(DATA / "examples.pt")
    assert len(examples) == 16
    assert examples == load_examples(DATA / "examples.pt")  # every pixel, bit for bit
    assert isinstance(examples[0].clean[0][0], float) and len(examples[0].clean) == 8


def test_a_relative_examples_path_is_ours_not_the_backends(client, monkeypatch):
    client.call("ping")  # the backend runs, started from another folder
    monkeypatch.chdir(DATA.parent)
    assert client.examples(Path(DATA.name) / "examples.pt") == load_examples(DATA / "examples.pt")


def test_a_failing_request_is_an_error_reply_and_the_server_goes_on(client, tmp_path):
    pid = client.call("ping")["pid"]
    not_examples = tmp_path / "report.json"
    not_examples.write_text("{}")
    with pytest.raises(BackendError) as err:
        client.examples(not_examples)
    assert "\n" not in str(err.value) and str(err.value)
    with pytest.raises(BackendError, match="does-not-exist.pt"):
        client.examples(tmp_path / "does-not-exist.pt")
    with pytest.raises(BackendError, match="a config is a mapping"):
        client.call("check_config", data=[1, 2])
    with pytest.raises(BackendError, match="unknown op 'format_disk'"):
        client.call("format_disk")
    assert client.call("ping")["pid"] == pid  # the same process answers
    assert client.check_config(QUICKSTART) is None


def test_the_server_answers_bad_lines_and_exits_when_its_stdin_closes():
    proc = subprocess.Popen(list(COMMAND), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=backend_env())
    try:
        proc.stdin.write('not json\n{"id": 5, "op": "ping"}\n')
        proc.stdin.flush()
        first, second = json.loads(proc.stdout.readline()), json.loads(proc.stdout.readline())
        assert first["id"] is None and "error" in first
        assert second == {"id": 5, "ok": {"pid": proc.pid}}
        proc.stdin.close()  # the TUI went away, even while the backend still preloads torch
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_client_restarts_a_killed_server():
    backend = BackendClient()
    try:
        first = backend.call("ping")["pid"]
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while backend.pid is not None:  # polls (and reaps) it: an unreaped child would still pass os.kill(pid, 0)
            assert time.monotonic() < deadline, "the killed backend never exited"
            time.sleep(0.02)
        second = backend.call("ping")["pid"]
        assert second != first and backend.pid == second
    finally:
        backend.close()


def test_a_request_whose_server_dies_is_sent_again_to_a_new_one():
    backend = BackendClient()
    try:
        first = backend.call("ping")["pid"]
        result: dict = {}
        caller = threading.Thread(target=lambda: result.update(catalog=backend.attack_catalog()))
        caller.start()  # the server is still importing torch: the request is in flight
        time.sleep(0.2)
        os.kill(first, signal.SIGKILL)
        caller.join(timeout=60)
        assert result["catalog"] == attack_form.load_catalog()
        assert backend.pid not in (None, first)
    finally:
        backend.close()


def test_a_timed_out_request_leaves_a_fresh_server_for_the_next_call():
    backend = BackendClient()
    try:
        with pytest.raises(BackendError, match="did not answer run_catalog within"):
            backend.call("run_catalog", timeout=0.01)
        assert backend.call("ping")["pid"] == backend.pid
    finally:
        backend.close()


def test_the_backend_runs_this_code_even_from_a_folder_with_another_workbench(tmp_path, monkeypatch):
    (tmp_path / "workbench").mkdir()  # e.g. started inside another checkout: `-m` would look here first
    (tmp_path / "workbench" / "__init__.py").write_text("raise ImportError('the wrong workbench')\n")
    monkeypatch.chdir(tmp_path)
    backend = BackendClient()
    try:
        assert backend.call("ping")["pid"] == backend.pid
    finally:
        backend.close()


def test_closing_the_client_ends_the_process():
    backend = BackendClient()
    backend.start()
    pid = backend.pid
    assert pid is not None and backend.call("ping")["pid"] == pid
    backend.close()
    assert gone(pid, within=1.0)
    with pytest.raises(BackendError, match="closed"):
        backend.call("ping")


async def test_quitting_the_app_ends_its_backend(tmp_path, one_backend_per_worker, monkeypatch):
    from workbench.tui.app import WorkbenchApp
    from workbench.tui.model.backend_client import close_shared, shared

    from .waiting import wait_until

    monkeypatch.setattr(WorkbenchApp, "on_unmount", one_backend_per_worker)  # the app's own, not the tests'
    close_shared()
    app = WorkbenchApp(tmp_path)
    async with app.run_test() as pilot:
        backend = shared()
        await wait_until(pilot, lambda: backend.pid is not None, timeout=30, what="the backend the app starts")
        pid = backend.pid
    assert backend.closed and gone(pid)
