"""The tiny suite the suite tests run (2 models x 2 seeds of quickstart on digits), and how they call the CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import yaml

from cli_here import run_here
from cores import all_cores

TINY = {
    "name": "tiny",
    "description": "2 models x 2 seeds on digits, seconds per cell",
    "seeds": [0, 1],
    "models": [
        {"name": "plain", "profile": "quickstart", "set": {"adv_train.attack": "none"}},
        {"name": "AT", "profile": "quickstart"},
    ],
    "budgets": {
        "tiny": {"epochs": 2, "n": 60, "set": {"eval.robust_every": 0}},
        "longer": {"epochs": 4, "n": 60, "set": {"eval.robust_every": 0}},
    },
    "evaluations": [{"name": "weak", "attacks": ["fgsm", "pgd:steps=5"], "eps": [0.1, 0.2]}],
    "paper": {"AT": {"FGSM@0.1": 80.0}},
    "checks": [{"claim": "AT beats plain", "beats": ["AT", "plain"], "metric": "worst weak@*"},
               {"order": ["AT", "plain"], "metric": "PGD@0.1"},
               {"at_least": 0.0, "metric": "clean"},
               {"at_least": 100.0, "metric": "clean"},
               {"order": ["AT", "plain"], "metric": "never measured"},
               {"paper_within": 100.0}],
}


def write_suite(folder: Path, **changes) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}, sort_keys=False))
    return path


def wb(*args: str, check: bool = True, timeout: float = 300, every_core: bool = False
       ) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=all_cores if every_core else None)
    if check and proc.returncode != 0:
        raise AssertionError(f"workbench {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def wb_here(*args: str) -> subprocess.CompletedProcess:
    """`workbench ARGS` for an error case, run in this process (see cli_here): no training starts."""
    return run_here(list(args))


def wb_in(*args: str) -> subprocess.CompletedProcess:
    """`workbench ARGS` in this process, which must succeed: reading commands (table, status, chart) and suite runs,
    whose cells still train and evaluate in worker processes. Saves the ~3 s a new Python with torch costs."""
    proc = run_here(list(args))
    if proc.returncode != 0:
        raise AssertionError(f"workbench {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for(predicate, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
