"""Fixtures for the TUI tests: fixed run folders, and one real quickstart run per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from .fixed_runs import build_fixed_runs


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
