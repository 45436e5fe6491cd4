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
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from ..atomic import atomic_write_text
from ..errors import WorkbenchError


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

    def snapshot(self, epoch: int) -> Path:
        """The run's state kept after `epoch` (last.pt, best.pt, metrics.jsonl) for forks (training/fork.py)."""
        return self.root / "snapshots" / f"epoch-{epoch}"

    def is_run(self) -> bool:
        return self.config.is_file()

    def has_run_files(self) -> bool:
        """Whether the folder holds any file a run has: a run, maybe a broken one (is_run: a usable one)."""
        return any(p.exists() for p in (self.config, self.status, self.metrics, self.checkpoints))


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


# Every file in a run folder is written by another process, maybe another version, maybe not at all by
# us: readers refuse what is too large or too deep instead of taking memory or the stack with it.
MAX_JSON_BYTES = 16 << 20  # status.json, run.json, reports: a few KB each
MAX_LINE_BYTES = 1 << 20  # one metrics record: a few hundred bytes
MAX_JSON_DEPTH = 64  # deeper than anything the framework writes
_INT_LIMIT = 2**63  # metrics numbers beyond int64 read as null, like NaN (no reader can chart them)


def _finite_or_none(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _int64_or_none(text: str) -> int | None:
    value = int(text)
    return value if -_INT_LIMIT < value < _INT_LIMIT else None


def _too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    # Iterative: a value nested close to the recursion limit must not overflow the stack here either.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def parse_json(text: str | bytes, source: str = "<string>", bounded_ints: bool = False) -> Any:
    """A JSON value, NaN/Infinity as None (the writers' convention); WorkbenchError saying why not.

    `bounded_ints` reads integers outside int64 as None too (metrics records)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WorkbenchError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=lambda _: None, parse_float=_finite_or_none,
                          parse_int=_int64_or_none if bounded_ints else int)
    except RecursionError:  # the C scanner recurses once per nesting level
        raise WorkbenchError(f"{source}: invalid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
        raise WorkbenchError(f"{source}: invalid JSON: {str(exc).splitlines()[0][:120]}") from None
    # Brackets bound the depth: most values need no walk at all.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _too_deep(data):
        raise WorkbenchError(f"{source}: invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    return data


def open_regular(path: str | Path) -> BinaryIO:
    """A regular file opened for reading. A FIFO or a device is refused (WorkbenchError): opening or
    reading one could block forever or never end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once instead of waiting for a writer
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
            raise WorkbenchError(f"{Path(path).name}: {kind}")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_bytes(path: Path, limit: int) -> bytes:
    try:
        with open_regular(path) as fh:
            raw = fh.read(limit + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise WorkbenchError(f"{path.name}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise WorkbenchError(f"{path.name}: larger than {limit >> 20} MiB")
    return raw


def load_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file; None when there is no such file, WorkbenchError (naming the file) when it
    cannot be read, is too large, is not JSON or not an object."""
    path = Path(path)
    try:
        raw = _read_bytes(path, MAX_JSON_BYTES)
    except FileNotFoundError:
        return None
    data = parse_json(raw, path.name)
    if not isinstance(data, dict):
        raise WorkbenchError(f"{path.name}: not a JSON object")
    return data


def read_json(path: Path) -> dict[str, Any] | None:
    """load_json, with None for every file that cannot be used (missing, unreadable, not an object)."""
    try:
        return load_json(path)
    except WorkbenchError:
        return None


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


def parse_record(line: bytes) -> dict[str, Any] | None:
    """One metrics line as a record; None for anything else (garbage, too long, too deep, not an object)."""
    if len(line) > MAX_LINE_BYTES + 1:  # + its newline
        return None
    try:
        record = parse_json(line, bounded_ints=True)
    except WorkbenchError:
        return None
    return record if isinstance(record, dict) else None


def _skip_rest_of_line(fh) -> None:
    while (chunk := fh.readline(MAX_LINE_BYTES)) and not chunk.endswith(b"\n"):
        pass


def read_metrics(path: Path) -> Iterator[dict[str, Any]]:
    """Complete, parseable lines only (a killed writer can leave a partial last line).

    Streams the file a line at a time: a stream of any size costs one line of memory here."""
    try:
        fh = open_regular(path)
    except (OSError, WorkbenchError):
        return
    with fh:
        while True:
            try:
                line = fh.readline(MAX_LINE_BYTES + 1)
                if not line.endswith(b"\n"):
                    if len(line) <= MAX_LINE_BYTES:
                        return  # the end, maybe after a partial line
                    _skip_rest_of_line(fh)  # an oversized line is no record
                    continue
            except OSError:
                return
            record = parse_record(line)
            if record is not None:
                yield record


def truncate_metrics(path: Path, keep) -> None:
    """Rewrite the metrics file keeping only records for which `keep(record)` is true."""
    path = Path(path)
    if not path.exists():
        return
    kept = [json.dumps(r) + "\n" for r in read_metrics(path) if keep(r)]
    write_text_atomic(path, "".join(kept))
