"""Executors run a suite's cells: `local` as bounded background processes here, `slurm` as cluster jobs.

Every executor runs the same worker (`workbench.suites.cell`) on a cell folder, and the worker writes
the outcome into the folder, so `suite status` and the TUI read every executor's cells the same way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..errors import WorkbenchError
from ..registry import Registry
from ..threads import usable_cores
from .layout import CellPaths
from .state import cell_state, mark_job


@dataclass
class RunContext:
    """What every executor needs to start a cell."""

    suite: str
    budget: str | None = None
    evaluations: tuple[str, ...] | None = None  # run only these of each cell's evaluations (None: all)
    device: str = "auto"
    data_root: str | None = None
    jobs: int = 1
    slurm: dict = field(default_factory=dict)  # resolved Slurm resources (partition, gpus, cpus, time_min, ...)
    echo: Callable[[str], None] = print
    poll_seconds: float = 0.5
    progress_seconds: float = 10.0  # how often the local runner prints what its running cells are doing


class Executor(Protocol):
    def run(self, cells: list[CellPaths], ctx: RunContext) -> int:
        """Run (or submit) the cells; an exit status for the command."""


EXECUTORS: Registry[Callable[[], Executor]] = Registry("executor")


def split_cores(jobs: int, cores: int | None = None) -> tuple[int, int]:
    """(parallel cells, torch threads per cell): never more threads in all than cores."""
    cores = cores or len(usable_cores())
    if jobs < 1:
        raise WorkbenchError(f"--jobs must be >= 1, got {jobs}")
    jobs = min(jobs, cores)
    return jobs, max(1, cores // jobs)


def worker_command(cell: CellPaths, ctx: RunContext, threads: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "workbench.suites.cell", str(cell.root), "--suite", ctx.suite,
           "--device", ctx.device]
    if ctx.data_root:
        cmd += ["--data-root", ctx.data_root]
    if threads:
        cmd += ["--threads", str(threads)]
    if ctx.budget:
        cmd += ["--budget", ctx.budget]
    if ctx.evaluations is not None:
        cmd += ["--evaluations", ",".join(ctx.evaluations)]
    return cmd


def thread_env(threads: int) -> dict[str, str]:
    # The worker sets torch's threads too; these keep OpenMP/MKL pools (and any subprocess) inside the share.
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "PYTHONUNBUFFERED": "1"}


def report_ended(cell: CellPaths, ctx: RunContext) -> str:
    """One line for a cell whose worker ended (its state, why, the log when it failed); returns the state."""
    st = cell_state(cell, ctx.budget)
    state = "done" if st and st.done_for(ctx.evaluations) else (st.state if st else "failed")
    ctx.echo(f"{state:6s} {cell.root.name}" + (f": {st.message}" if st and st.message else "")
             + (f" (log: {cell.log})" if state == "failed" else ""))
    return state


def waits_for_fork(cell: CellPaths, in_play: set[str]) -> str | None:
    """The source cell whose kept state `cell` waits for (`CellPaths.awaited_source`), when that source is still
    to run or running here. None: start it now."""
    source = cell.awaited_source()
    return source.root.name if source is not None and source.root.name in in_play else None


def sources_first(cells: list[CellPaths]) -> list[CellPaths]:
    """Cells others fork from first (their forks can start once their state is kept), else in the given order."""
    return sorted(cells, key=lambda c: not (c.read_plan() or {}).get("snapshot_epochs"))


def next_ready(pending: list[CellPaths], running: dict) -> CellPaths | None:
    """The first pending cell that need not wait for a fork's source; the first pending one when nothing runs
    (a source that cannot run here must not hold its forks forever)."""
    in_play = {c.root.name for c in pending} | set(running)
    for cell in pending:
        if waits_for_fork(cell, in_play) is None:
            return cell
    return None if running else pending[0]


def announce_held(pending: list[CellPaths], running: dict, held: set[str], ctx: RunContext) -> None:
    """One `wait` line for each fork held for its source's kept state (`held`: those already announced)."""
    in_play = {c.root.name for c in pending} | set(running)
    for cell in pending:
        source = waits_for_fork(cell, in_play)
        if source is not None and cell.root.name not in held:
            held.add(cell.root.name)
            ctx.echo(f"wait   {cell.root.name}: starts from {source}'s state after epoch "
                     f"{cell.fork_source()[1]}, once it is written")


class LocalExecutor:
    """At most `jobs` cell workers at once, each in its own session with its share of the cores.

    Ctrl-C or SIGTERM stops launching and asks every running worker to stop (training checkpoints first);
    a rerun continues where they stopped."""

    def __init__(self) -> None:
        self.stopping = False
        self.forced = False

    def _on_signal(self, signum, frame) -> None:
        # The first signal stops in order (workers checkpoint); a second one kills them now.
        self.forced = self.stopping
        self.stopping = True

    def run(self, cells: list[CellPaths], ctx: RunContext) -> int:
        jobs, threads = split_cores(ctx.jobs)
        if jobs < ctx.jobs:
            ctx.echo(f"note: --jobs {ctx.jobs} > {len(usable_cores())} cores; running {jobs} at a time")
        ctx.echo(f"{len(cells)} cells to run, {jobs} at a time, {threads} thread(s) each")
        pending = sources_first(cells)
        running: dict[str, tuple[CellPaths, subprocess.Popen]] = {}
        held: set[str] = set()
        failed = stopped = 0
        # SIGHUP too: a closed terminal must not leave workers training with nobody to stop them.
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            while pending or running:
                while pending and len(running) < jobs and not self.stopping:
                    cell = next_ready(pending, running)
                    if cell is None:
                        break
                    pending.remove(cell)
                    running[cell.root.name] = (cell, self._start(cell, ctx, threads))
                    ctx.echo(f"start  {cell.root.name}")
                announce_held(pending, running, held, ctx)
                if self.stopping and running:
                    self._stop_all(running, ctx)
                for key, (cell, proc) in list(running.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    del running[key]
                    state = report_ended(cell, ctx)
                    failed += state == "failed"
                    stopped += state not in ("done", "failed")
                if self.stopping and not running:
                    break
                self._report_progress(running, ctx)
                time.sleep(ctx.poll_seconds)
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
        if self.stopping:
            ctx.echo(f"stopped; {len(pending)} cells not started. Rerun the same command to continue.")
            return 130
        return 1 if failed or stopped else 0

    def _report_progress(self, running: dict, ctx: RunContext) -> None:
        """Every `progress_seconds`, one line per running cell whose state moved (epoch or evaluation stage)."""
        now = time.monotonic()
        if now - getattr(self, "_last_report", now - ctx.progress_seconds) < ctx.progress_seconds:
            return
        self._last_report = now
        seen = getattr(self, "_seen", {})
        for key, (cell, _) in running.items():
            st = cell_state(cell, ctx.budget)
            line = f"{st.state} {st.epoch}/{st.epochs}" + (f" · {st.message}" if st.message else "") if st else ""
            if line and seen.get(key) != line:
                ctx.echo(f"  ...  {key}: {line}")
                seen[key] = line
        self._seen = seen

    def _start(self, cell: CellPaths, ctx: RunContext, threads: int) -> subprocess.Popen:
        mark_job(cell, executor="local", state="queued", submitted=time.time(), pid=os.getpid(),
                 host=socket.gethostname(), job_id=None, message="")
        log = open(cell.log, "ab")
        try:
            # Own session: a Ctrl-C at the terminal reaches this runner, which stops the workers in order.
            return subprocess.Popen(worker_command(cell, ctx, threads), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=thread_env(threads), start_new_session=True)
        finally:
            log.close()

    def _stop_all(self, running: dict, ctx: RunContext) -> None:
        if self.forced and not getattr(self, "_killed", False):
            self._killed = True
            ctx.echo(f"killing {len(running)} running cell(s); their runs resume from the last checkpoint")
            for cell, proc in running.values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
            return
        if getattr(self, "_asked", False):
            return
        self._asked = True
        ctx.echo(f"stopping {len(running)} running cell(s); they checkpoint first")
        for cell, proc in running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)


EXECUTORS.register("local", LocalExecutor)
