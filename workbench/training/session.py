"""Starting and resuming runs: the glue between a run folder and the trainer."""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..config import dump_yaml, read_yaml, validate_config
from ..config.schema import RunConfig
from ..data import resolve_data_root
from ..errors import WorkbenchError
from ..provenance import provenance
from ..runs import RunPaths, Status, new_run_dir, open_run, read_json, write_json_atomic, write_text_atomic
from .distributed import SINGLE, Ranks
from .reporting import Reporter
from .trainer import Trainer, resolve_device


def prepare_run(cfg: RunConfig, out: Path, profile: Path | None = None, data_root: str | None = None,
                device: str = "auto", devices: int = 1) -> RunPaths:
    """Create the run folder with its resolved config, provenance and a 'starting' status."""
    run = new_run_dir(Path(out), cfg.name or "run")
    write_text_atomic(run.config, dump_yaml(cfg.model_dump(mode="json")))
    write_json_atomic(run.root / "run.json", {
        "profile": str(profile) if profile else None,
        "data_root": str(resolve_data_root(data_root)),
        "device": device,
        "devices": devices,
        "created": time.time(),
        "provenance": provenance(),
    })
    Status(state="starting", epochs=cfg.epochs).write(run.status)
    return run


def load_run_config(run: RunPaths) -> RunConfig:
    return validate_config(read_yaml(run.config), str(run.config))


@contextmanager
def run_lock(run: RunPaths) -> Iterator[None]:
    """One trainer per run folder: a second one fails at once instead of corrupting it."""
    fh = open(run.root / ".lock", "w")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            status = Status.read(run.status)
            pid = f" (pid {status.pid})" if status and status.pid else ""
            raise WorkbenchError(f"run {run.root} is already being trained by another process{pid}") from None
        yield
    finally:
        fh.close()


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


def run_training(path: str | Path, device: str | None = None, data_root: str | None = None,
                 reporter: Reporter | None = None, ranks: Ranks = SINGLE, locked: bool = True) -> str:
    """Train the run in `path` from its last checkpoint (or from scratch); returns the final state.

    Under DDP every rank calls this with its `ranks` and its device; the launcher holds the run lock
    (`locked=False` here) and rank 0 alone writes the run's files.
    """
    run = open_run(path)
    meta = read_json(run.root / "run.json") or {}
    with run_lock(run) if locked else _no_lock():
        status = Status.read(run.status)
        try:
            cfg = load_run_config(run)
            if status is not None and status.state == "finished" and run.last.exists():
                raise WorkbenchError(f"run {run.root} already finished its {cfg.epochs} epochs")
            dev = resolve_device(device or meta.get("device") or "auto")
            trainer = Trainer(cfg, run, dev, reporter=reporter, data_root=data_root or meta.get("data_root"),
                              ranks=ranks)
            if status is not None:
                trainer.status.started = status.started
            if run.last.exists():
                trainer.restore(run.last)
            else:
                trainer.start_fresh()
        except Exception as exc:
            if (status is not None and status.state == "finished") or not ranks.main:
                raise  # nothing went wrong with the run itself (or rank 0 records it)
            # Record why the run could not start (missing data, bad config, bad device...) for `runs` and the TUI.
            failed = status or Status()
            failed.state = "failed"
            failed.pid = os.getpid()
            failed.message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            failed.write(run.status)
            raise
        return trainer.train()
