"""Creating run folders and finding them again."""

from __future__ import annotations

import math
import re
import stat
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


UNREADABLE = "unreadable"  # the state of a run folder whose files cannot be used; its message says why
# A run folder gets config.yaml a moment after the folder itself: without one, a folder this young is
# being created, not broken.
CREATING_SECONDS = 5.0
MAX_REASON = 300

# config.yaml never changes after a run is created: parse it once per (path, mtime, size). The runs
# screen lists every run each second; re-parsing hundreds of YAML files would cost most of that second.
_CONFIG_CACHE: dict[Path, tuple[tuple[int, int], dict, str]] = {}


def read_config(path: Path) -> tuple[dict, str]:
    """The run's config and, when it cannot be used, why ("" when it can)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}, f"no {path.name}"
    except OSError as exc:
        return {}, f"{path.name}: cannot read: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader; a folder is no config
        return {}, f"{path.name}: {'a folder' if stat.S_ISDIR(st.st_mode) else 'not a regular file'}"
    key = (st.st_mtime_ns, st.st_size)
    cached = _CONFIG_CACHE.get(path)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    cfg, problem = _parse_config(path)
    _CONFIG_CACHE[path] = (key, cfg, problem)
    return cfg, problem


def _parse_config(path: Path) -> tuple[dict, str]:
    from ..config import read_yaml

    try:
        cfg = read_yaml(path)
    except WorkbenchError as exc:
        # Its messages name the full path; the row already says which run.
        return {}, str(exc).replace(str(path), path.name)
    if not isinstance(cfg, dict):
        return {}, f"{path.name}: {'empty' if cfg is None else 'not a mapping'}"
    return cfg, ""


def _number(value) -> float | None:
    """A finite number from a metrics record (bools, strings, null are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _best_from_metrics(run: RunPaths) -> tuple[float | None, float | None]:
    """Best clean and robust test accuracy of the epoch records (when there is no status yet)."""
    epochs = [rec for rec in read_metrics(run.metrics) if rec.get("kind") == "epoch"]
    return _highest(epochs, "test_clean_acc"), _highest(epochs, "test_robust_acc")


def _highest(records: list[dict], key: str) -> float | None:
    return max((v for v in (_number(r.get(key)) for r in records) if v is not None), default=None)


def _text(value, default: str = "?") -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return default
    return _one_line(str(value)) if isinstance(value, str) else str(value)


def _name_of(section, default: str = "?") -> str:
    """`model: {name: x}` or `model: x`."""
    return _text(section.get("name"), default) if isinstance(section, dict) else _text(section, default)


def _one_line(text: str) -> str:
    """Text from a file, fit for one table line: no line breaks, no terminal control characters, short."""
    line = " ".join(text[:4 * MAX_REASON].split())
    return _printable(line if len(line) <= MAX_REASON else line[:MAX_REASON - 1] + "…")


def _printable(text: str) -> str:
    # Control characters would drive the terminal; surrogates (a non-UTF-8 file name) cannot be encoded.
    return "".join(c if c.isprintable() else "?" for c in text)


def summarize(run: RunPaths) -> RunSummary:
    """What a listing shows of a run folder. A folder whose config or status cannot be used is still a
    row: state UNREADABLE, its message the reason; whatever else is readable fills the other fields."""
    status, status_problem = Status.read_checked(run.status)
    cfg, config_problem = read_config(run.config)
    reason = "; ".join(p for p in (config_problem, status_problem) if p)
    best_clean, best_robust = (status.best_clean, status.best_robust) if status else _best_from_metrics(run)
    epochs = cfg.get("epochs")
    return RunSummary(
        path=run.root,
        name=_printable(run.root.name),  # for display: `path` is the folder itself
        state=UNREADABLE if reason else effective_state(status),
        epoch=status.epoch if status else 0,
        epochs=status.epochs if status else (epochs if type(epochs) is int and 0 <= epochs < 2**63 else 0),
        best_clean=best_clean,
        best_robust=best_robust,
        dataset=_text(cfg.get("dataset")),
        model=_name_of(cfg.get("model", {})),
        defense=_name_of(cfg.get("defense", {})),
        started=status.started if status else run.root.stat().st_mtime,
        message=_one_line(reason) if reason else (status.message if status else ""),
        batch=status.batch if status else 0,
        batches=status.batches if status else 0,
        device=status.device if status else "",
        updated=status.updated if status else 0.0,
    )


def _unreadable(run: RunPaths, exc: Exception) -> RunSummary:
    """The row of a folder that summarize itself failed on: still listed, with the reason."""
    try:
        started = run.root.stat().st_mtime
    except OSError:
        started = 0.0
    return RunSummary(path=run.root, name=_printable(run.root.name), state=UNREADABLE, epoch=0, epochs=0,
                      best_clean=None, best_robust=None, dataset="?", model="?", defense="?", started=started,
                      message=_one_line(f"{type(exc).__name__}: {exc}"))


def _being_created(run: RunPaths, now: float) -> bool:
    try:
        return not run.config.exists() and now - run.root.stat().st_mtime < CREATING_SECONDS
    except OSError:
        return True  # gone meanwhile


def _summary_of(path: Path, now: float) -> RunSummary | None:
    """The row of one folder under the runs folder; None when it is no run (or is gone, or is being made)."""
    run = RunPaths(path)
    try:
        if not path.is_dir() or not run.has_run_files() or _being_created(run, now):
            return None
        return summarize(run)
    except FileNotFoundError:
        return None  # deleted meanwhile (another process, another TUI)
    except Exception as exc:  # noqa: BLE001 - one folder must never take the listing down
        return _unreadable(run, exc)


def list_runs(out: Path) -> list[RunSummary]:
    """Every run folder under `out`, newest first, never an error. A folder deleted or being created
    meanwhile (another process, another TUI) is skipped; one whose files cannot be used is listed as
    UNREADABLE with the reason; a folder without any run file is no run."""
    out = Path(out)
    try:
        paths = list(out.iterdir())
    except OSError:
        return []
    now = time.time()
    summaries = [s for s in (_summary_of(p, now) for p in paths) if s is not None]
    return sorted(summaries, key=lambda s: (s.started if isinstance(s.started, (int, float)) else 0.0),
                  reverse=True)
