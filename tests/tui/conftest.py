"""Fixtures for the TUI tests: fixed run folders, and one real quickstart run per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from .fixed_runs import build_fixed_runs


@pytest.fixture(scope="session", autouse=True)
def one_backend_per_worker():
    """The apps of one test worker share one backend process instead of each starting its own: each start
    imports torch, seconds of CPU, and nearly every app test starts one. The backend's answers do not depend
    on the test (bundled profiles, the registries, absolute paths), and a test that needs a fresh one (another
    environment) still gets it with `close_shared()`. Yields the app's own `on_unmount`, for the test that
    checks that quitting ends the backend."""
    from workbench.tui.app import WorkbenchApp
    from workbench.tui.model.backend_client import close_shared

    mp = pytest.MonkeyPatch()
    real = WorkbenchApp.on_unmount
    mp.setattr(WorkbenchApp, "on_unmount", lambda self: None)  # the app's only unmount work: closing it
    yield real
    mp.undo()
    close_shared()


@pytest.fixture
def fixed_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runs folder with fixed content, as the relative path `runs` (the test runs inside tmp_path)."""
    build_fixed_runs(tmp_path)
    monkeypatch.chdir(tmp_path)
    return Path("runs")


@pytest.fixture(scope="session")
def quickstart_dir(quickstart_run) -> Path:
    """The session's real quickstart run folder (trained once by tests/conftest.py, real checkpoints)."""
    return Path(quickstart_run.root)
