"""The files of a run folder and how they are written.

<out>/<name>-<time>/
  config.yaml      fully resolved config (plus provenance)
  metrics.jsonl    one JSON object per line (kind: "step" | "epoch")
  status.json      state, pid, progress, heartbeat, best accuracies
  train.log        the trainer's log (stdout/stderr of a detached run)
  checkpoints/     last.pt, best.pt
  evals/           attack evaluations of the run's checkpoints
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

from ..atomic import atomic_write_text


class RunPaths:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    config = property(lambda self: self.root / "config.yaml")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    status = property(lambda self: self.root / "status.json")
    log = property(lambda self: self.root / "train.log")
    checkpoints = property(lambda self: self.root / "checkpoints")
    last = property(lambda self: self.root / "checkpoints" / "last.pt")
    best = property(lambda self: self.root / "checkpoints" / "best.pt")
    evals = property(lambda self: self.root / "evals")

    def is_run(self) -> bool:
        return self.config.is_file()


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf: write them as null so every reader can parse the line.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(_clean(data), indent=2) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class MetricsWriter:
    """Appends one JSON object per line and flushes it, so a tailing reader sees it at once."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(_clean(record)) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_metrics(path: Path) -> Iterator[dict[str, Any]]:
    """Complete, parseable lines only (a killed writer can leave a partial last line)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def truncate_metrics(path: Path, keep) -> None:
    """Rewrite the metrics file keeping only records for which `keep(record)` is true."""
    path = Path(path)
    if not path.exists():
        return
    kept = [json.dumps(r) + "\n" for r in read_metrics(path) if keep(r)]
    write_text_atomic(path, "".join(kept))
