"""Fixtures for the TUI tests: fixed run folders, and one real quickstart run per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .fixed_runs import build_fixed_runs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fixed_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runs folder with fixed content, as the relative path `runs` (the test runs inside tmp_path)."""
    build_fixed_runs(tmp_path)
    monkeypatch.chdir(tmp_path)
    return Path("runs")


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real quickstart run (digits, bundled: no download), trained once for the session (~15 s)."""
    out = tmp_path_factory.mktemp("quickstart-runs")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "workbench", "train", "--profile", "quickstart", "--out", str(out),
                           "--set", "epochs=3"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1
    return runs[0]
