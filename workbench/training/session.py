"""Starting and resuming runs: the glue between a run folder and the trainer."""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from ..config import dump_yaml, read_yaml, validate_config
from ..config.schema import RunConfig
from ..data import resolve_data_root
from ..errors import WorkbenchError
from ..provenance import provenance
from ..stop_request import StopRequest
from ..atomic import stale_temp_files
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
    # "a+", not "w": opening must not truncate the pid the current holder wrote into the file.
    fh = open(run.root / ".lock", "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fh)
            pid = f" (pid {holder})" if holder else ""
            raise WorkbenchError(f"run {run.root} is already being trained by another process{pid}") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()


def _lock_holder(fh) -> int | None:
    """The pid the lock's holder wrote (status.json's pid may be a stale, earlier trainer's)."""
    fh.seek(0)
    text = fh.read(32).strip()
    return int(text) if text.isdigit() and 0 < int(text) < 2**31 else None


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


def run_training(path: str | Path, device: str | None = None, data_root: str | None = None,
                 reporter: Reporter | None = None, ranks: Ranks = SINGLE, locked: bool = True,
                 stop: StopRequest | None = None, fork_from: Sequence[Path] = (),
                 snapshot_epochs: Sequence[int] = ()) -> str:
    """Train the run in `path` from its last checkpoint (or from scratch); returns the final state.

    Under DDP every rank calls this with its `ranks` and its device; the launcher holds the run lock
    (`locked=False` here) and rank 0 alone writes the run's files. SIGTERM/SIGINT from here on (the
    caller's `stop` may have caught one earlier) stop the run cleanly, also during set-up. A run without a
    checkpoint starts from the first snapshot of `fork_from` whose epochs it would have trained alike (fork.py);
    `snapshot_epochs`: after these epochs, keep the run's state for such forks.
    """
    stop = stop or StopRequest()
    with stop:
        run = open_run(path)
        meta = read_json(run.root / "run.json") or {}
        with run_lock(run) if locked else _no_lock():
            if ranks.main:
                remove_stale_temp_files(run)
            trainer = _prepare_trainer(run, meta, device, data_root, reporter, ranks, stop, fork_from,
                                       snapshot_epochs)
            if trainer._stop_requested():  # a collective under DDP: every rank agrees
                return trainer.stopped_before_start()
            return trainer.train()


def remove_stale_temp_files(run: RunPaths) -> None:
    """Temp files of checkpoint writes a SIGKILL interrupted. Only the lock holder writes checkpoints, so
    under the lock every such file is dead."""
    for tmp in stale_temp_files(run.checkpoints):
        try:
            tmp.unlink()
        except OSError:
            pass


def _prepare_trainer(run: RunPaths, meta: dict, device: str | None, data_root: str | None,
                     reporter: Reporter | None, ranks: Ranks, stop: StopRequest, fork_from: Sequence[Path] = (),
                     snapshot_epochs: Sequence[int] = ()) -> Trainer:
    """The trainer at the run's last checkpoint (or fresh). A failure to get there is recorded in status.json."""
    status = Status.read(run.status)
    try:
        cfg = load_run_config(run)
        if status is not None and status.state == "finished" and run.last.exists():
            raise WorkbenchError(f"run {run.root} already finished its {cfg.epochs} epochs")
        dev = resolve_device(device or meta.get("device") or "auto")
        trainer = Trainer(cfg, run, dev, reporter=reporter, data_root=data_root or meta.get("data_root"),
                          ranks=ranks, stop=stop, snapshot_epochs=snapshot_epochs)
        if status is not None:
            trainer.status.started = status.started
        if run.last.exists():
            trainer.restore(run.last)
        elif not any(_forked(trainer, run, meta, Path(snapshot)) for snapshot in fork_from):
            if fork_from:
                print("note: training from the first epoch", flush=True)
            trainer.start_fresh()
    except Exception as exc:
        if (status is not None and status.state == "finished") or not ranks.main:
            raise  # nothing went wrong with the run itself (or rank 0 records it)
        # Record why the run could not start (missing data, bad config, bad device...) for `runs` and the TUI.
        failed = status or Status()
        failed.state = "failed"
        failed.pid = os.getpid()
        failed.message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        try:
            failed.write(run.status)
        except (WorkbenchError, OSError):
            pass  # a full disk: the error itself says so
        raise
    return trainer


def _forked(trainer: Trainer, run: RunPaths, meta: dict, snapshot: Path) -> bool:
    """Start from the snapshot if the run would have trained its epochs alike; say why not otherwise."""
    why = trainer.fork(snapshot) if snapshot.is_dir() else "it does not exist"
    if why is not None:
        print(f"note: not starting from {snapshot}: {why}", flush=True)
        return False
    epoch = trainer.position.epoch
    write_json_atomic(run.root / "run.json", {**meta, "forked_from": {"snapshot": str(snapshot), "epochs": epoch}})
    print(f"started from {snapshot}: its first {epoch} epoch(s) are this run's (bit-identical)", flush=True)
    return True
