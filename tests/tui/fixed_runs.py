"""Fixed run folders for TUI tests and snapshots: the same files, times and numbers on every run.

Built from a real quickstart run (tests/tui/data/quickstart), plus a failed and a stopped
variant. Paths are relative (`runs/...`), so a test that chdirs into its tmp folder renders the
same text every time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

DATA = Path(__file__).parent / "data" / "quickstart"
FIXED_NOW = 1795410600.0  # 'now' for the app's clock in snapshots
FINISHED = "quickstart-20261123-065839"
FAILED = "pcl-20261123-071500"
STOPPED = "ccn-20261123-072000"


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _copy_finished(runs: Path) -> Path:
    root = runs / FINISHED
    (root / "checkpoints").mkdir(parents=True)
    (root / "evals").mkdir()
    for name in ("config.yaml", "metrics.jsonl", "status.json"):
        shutil.copy(DATA / name, root / name)
    stem = "best-20261123-065854"
    shutil.copy(DATA / "report.json", root / "evals" / f"{stem}.json")
    shutil.copy(DATA / "report.csv", root / "evals" / f"{stem}.csv")
    shutil.copy(DATA / "examples.pt", root / "evals" / f"{stem}-examples.pt")
    # Placeholders: listed by the attack panel, never loaded by a snapshot.
    (root / "checkpoints" / "best.pt").write_bytes(b"")
    (root / "checkpoints" / "last.pt").write_bytes(b"")
    return root


def _variant(runs: Path, name: str, config_edits: dict, status: dict, epochs_kept: int) -> Path:
    root = runs / name
    (root / "checkpoints").mkdir(parents=True)
    (root / "evals").mkdir()
    config = (DATA / "config.yaml").read_text()
    for old, new in config_edits.items():
        config = config.replace(old, new)
    (root / "config.yaml").write_text(config)
    lines = [json.loads(line) for line in (DATA / "metrics.jsonl").read_text().splitlines()]
    kept = [r for r in lines if r.get("epoch", 0) <= epochs_kept]
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    base = json.loads((DATA / "status.json").read_text())
    _write_json(root / "status.json", {**base, **status})
    return root


def build_fixed_runs(base: Path) -> Path:
    """`base/runs` with a finished, a failed and a stopped run; returns the runs folder."""
    runs = base / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    _copy_finished(runs)
    _variant(runs, FAILED, {"name: quickstart": "name: pcl", "name: softmax": "name: pcl"},
             {"state": "failed", "epoch": 3, "started": 1795409900.0, "updated": 1795409960.0,
              "message": "non-finite loss at epoch 4 step 80 (loss nan); the last good checkpoint is kept",
              "best_clean": 0.61, "best_robust": None, "last_clean": 0.61, "last_robust": None}, 3)
    _variant(runs, STOPPED, {"name: quickstart": "name: ccn", "name: softmax": "name: ccn"},
             {"state": "stopped", "epoch": 6, "batch": 11, "started": 1795410200.0, "updated": 1795410300.0,
              "message": "stopped by SIGTERM", "best_clean": 0.93, "best_robust": 0.71, "last_clean": 0.93,
              "last_robust": 0.71}, 6)
    return runs
