"""Creating run folders and finding them again."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import WorkbenchError
from .files import RunPaths, read_metrics
from .status import Status, effective_state

DEFAULT_RUNS_DIR = Path("runs")


def new_run_dir(out: Path, name: str) -> RunPaths:
    """A fresh `<out>/<name>-<YYYYmmdd-HHMMSS>` folder (suffixed if that exists)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkbenchError(f"cannot create runs folder {out}: {exc.strerror or exc}") from None
    for i in range(1000):
        root = out / (f"{safe}-{stamp}" if i == 0 else f"{safe}-{stamp}-{i}")
        try:
            root.mkdir()
        except FileExistsError:
            continue
        (root / "checkpoints").mkdir()
        (root / "evals").mkdir()
        return RunPaths(root)
    raise WorkbenchError(f"cannot create a new run folder in {out}")


def open_run(path: str | Path) -> RunPaths:
    run = RunPaths(Path(path))
    if not run.root.is_dir():
        raise WorkbenchError(f"run folder {run.root} does not exist")
    if not run.is_run():
        raise WorkbenchError(f"{run.root} is not a run folder (no config.yaml)")
    return run


@dataclass
class RunSummary:
    path: Path
    name: str
    state: str
    epoch: int
    epochs: int
    best_clean: float | None
    best_robust: float | None
    dataset: str
    model: str
    defense: str
    started: float
    message: str
    batch: int = 0
    batches: int = 0
    device: str = ""
    updated: float = 0.0


# config.yaml never changes after a run is created: parse it once per (path, mtime, size). The runs
# screen lists every run each second; re-parsing hundreds of YAML files would cost most of that second.
_CONFIG_CACHE: dict[Path, tuple[tuple[int, int], dict]] = {}


def _read_config(path: Path) -> dict:
    from ..config import read_yaml

    try:
        st = path.stat()
    except OSError:
        return {}
    key = (st.st_mtime_ns, st.st_size)
    cached = _CONFIG_CACHE.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        cfg = read_yaml(path)
    except WorkbenchError:
        cfg = None
    cfg = cfg if isinstance(cfg, dict) else {}
    _CONFIG_CACHE[path] = (key, cfg)
    return cfg


def summarize(run: RunPaths) -> RunSummary:
    status = Status.read(run.status)
    cfg = _read_config(run.config)
    model = cfg.get("model", {})
    defense = cfg.get("defense", {})
    best_clean = status.best_clean if status else None
    best_robust = status.best_robust if status else None
    if status is None:
        # No status yet: fall back to the metrics stream.
        for rec in read_metrics(run.metrics):
            if rec.get("kind") == "epoch":
                best_clean = max(filter(None, [best_clean, rec.get("test_clean_acc")]), default=None)
                best_robust = max(filter(None, [best_robust, rec.get("test_robust_acc")]), default=None)
    return RunSummary(
        path=run.root,
        name=run.root.name,
        state=effective_state(status),
        epoch=status.epoch if status else 0,
        epochs=status.epochs if status else int(cfg.get("epochs", 0) or 0),
        best_clean=best_clean,
        best_robust=best_robust,
        dataset=str(cfg.get("dataset", "?")),
        model=str(model.get("name", "?") if isinstance(model, dict) else model),
        defense=str(defense.get("name", "?") if isinstance(defense, dict) else defense),
        started=status.started if status else run.root.stat().st_mtime,
        message=status.message if status else "",
        batch=status.batch if status else 0,
        batches=status.batches if status else 0,
        device=status.device if status else "",
        updated=status.updated if status else 0.0,
    )


def list_runs(out: Path) -> list[RunSummary]:
    """Every run folder under `out`, newest first. A folder deleted or half-written meanwhile (another
    process, another TUI) is skipped, never an error."""
    out = Path(out)
    try:
        folders = [RunPaths(p) for p in out.iterdir() if p.is_dir()]
    except OSError:
        return []
    summaries = []
    for run in folders:
        try:
            if run.is_run():
                summaries.append(summarize(run))
        except (OSError, TypeError, ValueError, AttributeError):
            continue
    return sorted(summaries, key=lambda s: (s.started if isinstance(s.started, (int, float)) else 0.0),
                  reverse=True)
