"""The `slurm` executor: each cell one Slurm job, submitted through submitit.

`workbench suite run SUITE --executor slurm` marks every cell to run `queued` (with its job id), submits
one job per cell and returns; the jobs run the same worker as the local executor (`run_cell`), which
records the outcome in the cell's job.json, and `workbench suite status` asks Slurm (one `sacct` or
`squeue` call for all cells) about the jobs still queued or running, so a job that Slurm cancelled,
timed out or killed before the worker could record anything shows as failed.

`--executor submitit-local` is the Slurm executor's code path run by submitit's LocalExecutor on this
machine, for testing: same submission, same job function, but `run` waits for the jobs and reports
like the local executor (nothing else would follow them).

submitit is imported only here, and only when a Slurm executor runs: `pip install 'workbench[slurm]'`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import WorkbenchError
from ..threads import usable_cores
from .executors import EXECUTORS, RunContext, announce_held, next_ready, report_ended, sources_first, split_cores
from .layout import CellPaths
from .state import JobRecord, cell_state, mark_job

SUBMITIT_HINT = "--executor slurm needs submitit: pip install 'workbench[slurm]'"
QUERY_TIMEOUT_S = 20
# Slurm job states after which the job's processes are gone (sacct may append a reason: "CANCELLED by 0").
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED", "REVOKED", "SPECIAL_EXIT"}
STARTED = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise WorkbenchError(SUBMITIT_HINT) from None
    return submitit


# ---------------------------------------------------------------------------------------------------------
# The job: what runs on the compute node.


@contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """stdout and stderr (file descriptors too, for torch's own messages) appended to the cell's log."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def _current_job_id() -> str | None:
    try:
        import submitit

        return str(submitit.JobEnvironment().job_id)
    except Exception:  # not inside a submitit job (a direct call)
        return None


def _stop_on_preemption() -> None:
    """Slurm's warning signal before a time limit or preemption (submitit asks for USR2 90 s ahead) becomes
    the same stop request as SIGTERM: training checkpoints and stops (a rerun resumes it) instead of
    submitit's requeue, which would lose the epoch in progress."""
    try:
        from submitit.core.job_environment import JobEnvironment

        usr = JobEnvironment._usr_sig()
    except Exception:
        usr = signal.SIGUSR2

    def forward(signum, frame) -> None:
        handler = signal.getsignal(signal.SIGTERM)
        if callable(handler):
            handler(signal.SIGTERM, frame)

    try:
        signal.signal(usr, forward)
    except (ValueError, OSError):  # not the main thread
        pass


def run_cell_job(cell_dir: str, suite: str, device: str = "auto", data_root: str | None = None,
                 threads: int | None = None, budget: str | None = None,
                 evaluations: tuple[str, ...] | None = None) -> str:
    """The Slurm job of one cell: `run_cell` with its output in the cell's log; returns the cell's outcome."""
    from .cell import run_cell

    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
    os.environ["PYTHONUNBUFFERED"] = "1"
    cell = CellPaths(Path(cell_dir))
    job_id = _current_job_id()
    with _output_to(cell.log):
        print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} job {job_id} on {socket.gethostname()}, "
              f"{threads or 'default'} thread(s)", flush=True)
        if job_id and cell.job.exists():
            mark_job(cell, job_id=job_id)  # the submitter records it too; this one cannot race the worker
        _stop_on_preemption()
        try:
            return run_cell(cell.root, suite, device, data_root, threads, budget, evaluations)
        except BaseException:
            traceback.print_exc()
            raise


# ---------------------------------------------------------------------------------------------------------
# Submission.


def slurm_executor(folder: Path):
    """submitit's executor for a real cluster (needs `sbatch` and `srun`)."""
    if shutil.which("sbatch") is None:
        raise WorkbenchError("--executor slurm: sbatch is not on PATH (run it on a Slurm login node, or use "
                             "--executor local)")
    submitit = import_submitit()
    try:
        return submitit.AutoExecutor(folder=folder, cluster="slurm")
    except RuntimeError as exc:  # e.g. no srun
        raise WorkbenchError(f"--executor slurm: {str(exc).splitlines()[0]}") from None


def local_executor(folder: Path):
    """submitit's LocalExecutor: the same submission path, jobs as processes on this machine."""
    submitit = import_submitit()
    return submitit.AutoExecutor(folder=folder, cluster="local")


def submitit_parameters(slurm: dict[str, Any], name: str, cpus: int, after: str | None = None) -> dict[str, Any]:
    """AutoExecutor parameters from the suite's resolved Slurm settings (generic keys + slurm_* ones); `after`:
    a job id whose end the job waits for (besides any dependency the settings give)."""
    params: dict[str, Any] = {"name": name, "timeout_min": int(slurm.get("time_min") or 240),
                              "cpus_per_task": cpus, "nodes": 1, "tasks_per_node": 1}
    if slurm.get("gpus"):  # none asked: no --gpus-per-node=0 (a cluster without GPUs may refuse the flag)
        params["gpus_per_node"] = int(slurm["gpus"])
    if slurm.get("mem_gb"):
        params["mem_gb"] = slurm["mem_gb"]
    if slurm.get("partition"):
        params["slurm_partition"] = slurm["partition"]
    for key, value in (slurm.get("extra") or {}).items():
        params[key if key.startswith("slurm_") else f"slurm_{key}"] = value
    if after:
        params["slurm_dependency"] = _with_dependency(params, f"afterany:{after}")
    return params


def _with_dependency(params: dict[str, Any], ours: str) -> str:
    """The job's dependency list with `ours` added (all must hold: ","). One given in `additional_parameters`
    would replace ours (submitit applies those last), so it is taken from there."""
    extra = params.get("slurm_additional_parameters")
    given = [params.get("slurm_dependency")]
    if isinstance(extra, dict) and "dependency" in extra:
        extra = dict(extra)
        given.append(extra.pop("dependency"))
        params["slurm_additional_parameters"] = extra
    given = [str(d) for d in given if d]
    if any("?" in d for d in given):  # sbatch takes one separator per list: "?" (any of) cannot take a ","
        raise WorkbenchError(f"slurm.extra.dependency {' '.join(given)!r} uses '?' (any of), so a fork's "
                             f"wait for its source ({ours}) cannot be added; set slurm.fork_wait: false")
    return ",".join(given + [ours])


def apply_parameters(executor, params: dict[str, Any]) -> None:
    """Give `params` (AutoExecutor style) to an AutoExecutor, or to a bare submitit executor (tests)."""
    submitit = import_submitit()
    if isinstance(executor, submitit.AutoExecutor):
        executor.update_parameters(**params)
        return
    generic = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    if isinstance(executor, submitit.SlurmExecutor):
        specific = executor._convert_parameters(generic)
        specific.update({k[len("slurm_"):]: v for k, v in params.items() if k.startswith("slurm_")})
        executor.update_parameters(**specific)
    else:  # LocalExecutor and the like read timeout_min, gpus_per_node, tasks_per_node and ignore the rest
        executor.update_parameters(**{k: v for k, v in generic.items()
                                      if k in ("timeout_min", "gpus_per_node", "tasks_per_node", "nodes")})


def _failure_message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else text)[:300]


def source_job(cell: CellPaths, submitted: dict[str, str]) -> tuple[str, str] | None:
    """(job id, source cell) whose end a fork's job waits for, so that it starts from the source's kept state:
    the source's job submitted now (`submitted`: cell -> job id) or earlier and still queued or running (its
    record refreshed from Slurm before the run: `suite run` asks about chosen forks' sources too). None when the
    cell need not wait (`CellPaths.awaited_source`) or the source has no live Slurm job (done, failed, or gone:
    the fork trains alone)."""
    source = cell.awaited_source()
    if source is None:
        return None
    name = source.root.name
    if name in submitted:
        return submitted[name], name
    record = JobRecord.read(source.job)
    if record is not None and record.executor == "slurm" and record.state in ("queued", "running") and record.job_id:
        return str(record.job_id), name
    return None


def suite_root(cells: list[CellPaths]) -> Path:
    return cells[0].root.resolve().parent.parent  # <runs>/suites/<suite>/cells/<key>


class SlurmExecutor:
    """One submitit job per cell. `make_executor(folder)` builds the submitit executor (default: a Slurm
    AutoExecutor; tests pass `lambda folder: submitit.LocalExecutor(folder)`), `wait` makes `run` follow
    the jobs to their end instead of returning once they are submitted."""

    name = "slurm"

    def __init__(self, make_executor: Callable[[Path], Any] | None = None, wait: bool = False,
                 name: str | None = None) -> None:
        self.make_executor = make_executor or slurm_executor
        self.wait = wait
        self.name = name or self.name
        self.stopping = False

    # The parts a test (or another executor) may want on their own.

    def threads(self, ctx: RunContext) -> int:
        return int(ctx.slurm.get("cpus") or 1)

    def prepare(self, cells: list[CellPaths], ctx: RunContext, threads: int, after: str | None = None):
        """The submitit executor for the cells' jobs; `after`: a job id whose end they wait for."""
        folder = suite_root(cells) / "slurm"
        folder.mkdir(parents=True, exist_ok=True)
        executor = self.make_executor(folder)
        apply_parameters(executor, submitit_parameters(ctx.slurm, f"wb-{ctx.suite}", threads, after))
        return executor

    def submit(self, executor, cell: CellPaths, ctx: RunContext, threads: int):
        """Submit one cell: job.json says queued before the job can start, then records its id."""
        root = cell.root.resolve()
        data_root = str(Path(ctx.data_root).resolve()) if ctx.data_root else None
        mark_job(cell, executor=self.name, state="queued", submitted=time.time(), job_id=None, pid=None, host="",
                 started=None, ended=None, threads=threads, message="")
        self._set_job_name(executor, f"wb-{ctx.suite}-{cell.root.name}")
        try:
            job = executor.submit(run_cell_job, str(root), ctx.suite, ctx.device, data_root, threads, ctx.budget,
                                  ctx.evaluations)
        except Exception as exc:
            message = _failure_message(exc)
            mark_job(cell, state="failed", ended=time.time(), message=f"submission failed: {message}")
            raise WorkbenchError(f"{self.name}: submitting {cell.root.name} failed: {message}") from None
        record = JobRecord.read(cell.job)
        if record is not None and not record.job_id:  # the job itself may have recorded it already
            mark_job(cell, job_id=str(job.job_id))
        return job

    @staticmethod
    def _set_job_name(executor, name: str) -> None:
        try:
            import submitit

            if isinstance(executor, submitit.AutoExecutor):
                executor.update_parameters(name=name)
            elif isinstance(executor, submitit.SlurmExecutor):
                executor.update_parameters(job_name=name)
        except Exception:
            pass  # a name is cosmetic

    def run(self, cells: list[CellPaths], ctx: RunContext) -> int:
        if self.wait:
            return self._run_and_wait(cells, ctx)
        threads = self.threads(ctx)
        executor = self.prepare(cells, ctx, threads)
        if ctx.slurm.get("fork_wait", True) and any(c.fork_source() for c in cells):
            submitit_parameters(ctx.slurm, "", threads, after="0")  # a dependency we cannot add: before any job
        if ctx.jobs > 1:
            ctx.echo("note: --jobs does not apply to Slurm (the scheduler decides how many cells run at once)")
        jobs = []
        submitted: dict[str, str] = {}
        try:
            for cell in sources_first(cells):
                after = source_job(cell, submitted) if ctx.slurm.get("fork_wait", True) else None
                # A fork waits for its source's job: a dependency is per job, so its own executor.
                job = self.submit(executor if after is None else self.prepare(cells, ctx, threads, after[0]),
                                  cell, ctx, threads)
                jobs.append(job)
                submitted[cell.root.name] = str(job.job_id)
                ctx.echo(f"queued {cell.root.name}: job {job.job_id}" + (
                    "" if after is None else f", after job {after[0]} ({after[1]}) ends: it starts from that "
                                             f"cell's state after epoch {cell.fork_source()[1]}"))
        finally:
            if jobs:
                runs = cells[0].root.resolve().parents[3]
                ctx.echo(f"{len(jobs)} of {len(cells)} cells submitted ({threads} CPU(s) each; submitit files in "
                         f"{suite_root(cells) / 'slurm'}). Follow them with: "
                         f"workbench suite status {ctx.suite} --runs {runs}")
        return 0

    # submitit-local: run the jobs here, at most --jobs at once, and report like the local executor.

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def _run_and_wait(self, cells: list[CellPaths], ctx: RunContext) -> int:
        jobs_at_once, threads = split_cores(ctx.jobs)
        if jobs_at_once < ctx.jobs:
            ctx.echo(f"note: --jobs {ctx.jobs} > {len(usable_cores())} cores; running {jobs_at_once} at a time")
        ctx = RunContext(**{**ctx.__dict__, "slurm": {**ctx.slurm, "cpus": threads}})
        executor = self.prepare(cells, ctx, threads)
        ctx.echo(f"{len(cells)} cells to run through submitit ({self.name}), {jobs_at_once} at a time, "
                 f"{threads} thread(s) each")
        pending = sources_first(cells)
        running: dict[str, tuple[CellPaths, Any]] = {}
        held: set[str] = set()
        failed = stopped = 0
        asked = False
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while pending or running:
                # Jobs here start at once: a fork is held (as by the local executor) until its source's
                # state is kept, instead of a Slurm dependency.
                while pending and len(running) < jobs_at_once and not self.stopping:
                    cell = next_ready(pending, running)
                    if cell is None:
                        break
                    pending.remove(cell)
                    job = self.submit(executor, cell, ctx, threads)
                    running[cell.root.name] = (cell, job)
                    ctx.echo(f"start  {cell.root.name} (job {job.job_id})")
                announce_held(pending, running, held, ctx)
                if self.stopping and running and not asked:
                    asked = True
                    ctx.echo(f"stopping {len(running)} running cell(s); they checkpoint first")
                    for _, job in running.values():
                        _terminate(job)
                for key, (cell, job) in list(running.items()):
                    if not job.done():
                        continue
                    del running[key]
                    _settle(cell, job, self.name)
                    state = report_ended(cell, ctx)
                    failed += state == "failed"
                    stopped += state not in ("done", "failed")
                if self.stopping and not running:
                    break
                time.sleep(ctx.poll_seconds)
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
        if self.stopping:
            ctx.echo(f"stopped; {len(pending)} cells not started. Rerun the same command to continue.")
            return 130
        return 1 if failed or stopped else 0


def _terminate(job) -> None:
    """Ask a submitit-local job to stop the way Slurm would (SIGTERM, which its controller forwards)."""
    process = getattr(job, "_process", None)
    try:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
        elif process is None:
            job.cancel(check=False)
    except Exception:
        pass


def _settle(cell: CellPaths, job, executor: str) -> None:
    """A finished job whose worker recorded no outcome (killed, or died importing): record why."""
    record = JobRecord.read(cell.job)
    if record is None or record.state not in ("queued", "running"):
        return
    try:
        job.result()
        why = "the job ended without recording an outcome"
    except Exception as exc:
        why = _failure_message(exc)
    mark_job(cell, state="failed", ended=time.time(), message=f"{executor} job {job.job_id}: {why}")


class SubmititLocalExecutor(SlurmExecutor):
    """The Slurm executor's code path run by submitit's LocalExecutor on this machine, for testing."""

    def __init__(self, make_executor: Callable[[Path], Any] | None = None) -> None:
        super().__init__(make_executor or local_executor, wait=True, name="submitit-local")


EXECUTORS.register("slurm", SlurmExecutor)
EXECUTORS.register("submitit-local", SubmititLocalExecutor)


# ---------------------------------------------------------------------------------------------------------
# `suite status`: ask the scheduler about the jobs still queued or running.


def _run(command: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None


def _sacct(job_ids: list[str]) -> dict[str, str]:
    """Job id -> state from one `sacct` call (empty where sacct is missing or accounting is off)."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    command = ["sacct", "-o", "JobID,State,NodeList", "--parsable2"]
    for jid in job_ids:
        command += ["-j", jid]
    done = _run(command)
    if done is None or done.returncode != 0:
        return {}
    try:
        from submitit.slurm.slurm import SlurmInfoWatcher

        info = SlurmInfoWatcher().read_info(done.stdout)
    except Exception:
        return {}
    return {jid: str(info[jid].get("State") or "") for jid in job_ids if info.get(jid, {}).get("State")}


def _squeue(job_ids: list[str]) -> dict[str, str] | None:
    """Job id -> state from one `squeue` call; a job the controller no longer knows is absent. None: no answer."""
    if not job_ids or shutil.which("squeue") is None:
        return None
    done = _run(["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T"])
    if done is None:
        return None
    if done.returncode != 0:
        # One unknown id makes squeue fail ("Invalid job id specified"): it answered "not known".
        return {} if "invalid job id" in (done.stderr or "").lower() else None
    states = {}
    for line in done.stdout.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid:
            states[jid] = state.strip()
    return states


def query_slurm(job_ids: list[str]) -> dict[str, str | None]:
    """Each job id's Slurm state (sacct first, else squeue); None for a job Slurm no longer knows.
    Job ids Slurm could not be asked about are left out."""
    states: dict[str, str | None] = dict(_sacct(job_ids))
    rest = [j for j in job_ids if j not in states]
    if rest:
        queued = _squeue(rest)
        if queued is not None:
            for jid in rest:
                states[jid] = queued.get(jid)
    return states


def _slurm_verdict(job_id: str, slurm_state: str | None, record: JobRecord) -> dict[str, Any] | None:
    """The job.json changes for a Slurm answer (None: nothing to change)."""
    if slurm_state is None:
        return {"state": "failed", "ended": time.time(),
                "message": f"Slurm job {job_id} is gone and the cell recorded no outcome"}
    word = slurm_state.split()[0].upper().rstrip("+") if slurm_state.strip() else ""
    if word in STARTED:
        return {"state": "running"} if record.state == "queued" else None
    if word in ENDED:
        what = "completed without recording an outcome" if word == "COMPLETED" else f"ended {slurm_state}"
        return {"state": "failed", "ended": time.time(), "message": f"Slurm job {job_id} {what}"}
    return None  # PENDING, REQUEUED, SUSPENDED, ...: as recorded


def _local_verdict(record: JobRecord) -> dict[str, Any] | None:
    """A submitit-local job on this host whose process is gone without an outcome."""
    from ..runs import pid_alive

    if record.host not in ("", socket.gethostname()):
        return None
    pid = record.pid if record.state == "running" else None
    if pid is None and record.job_id and str(record.job_id).isdigit():
        pid = int(record.job_id)  # queued: the job's controller process
    if pid is None or pid_alive(pid):
        return None
    return {"state": "stopped", "ended": time.time(), "message": "the submitit-local job ended without an outcome"}


def refresh_states(states, paths) -> None:
    """Bring the job states of Slurm cells up to date: one scheduler query for all of them.

    A job Slurm reports running is marked running; one that ended (failed, cancelled, timed out, out of
    memory, node failure, or completed) while job.json still says queued/running is marked failed with
    Slurm's reason. Without `sacct`/`squeue` (not a login node), the files' states are kept."""
    slurm_cells: dict[str, list] = {}
    for st in states:
        job = st.job
        if job is None or job.state not in ("queued", "running"):
            continue
        cell = paths.cell(st.key)
        if job.executor == "submitit-local":
            _apply(st, cell, _local_verdict)
        elif job.executor == "slurm" and job.job_id:
            slurm_cells.setdefault(str(job.job_id), []).append((st, cell))
    if not slurm_cells:
        return
    answers = query_slurm(sorted(slurm_cells))
    for job_id, entries in slurm_cells.items():
        if job_id not in answers:
            continue
        for st, cell in entries:
            _apply(st, cell, lambda record, jid=job_id: _slurm_verdict(jid, answers[jid], record))


def _apply(st, cell: CellPaths, verdict: Callable[[JobRecord], dict[str, Any] | None]) -> None:
    # Read job.json again: the worker may have recorded its outcome since the states were read.
    record = JobRecord.read(cell.job)
    if record is None or record.state not in ("queued", "running"):
        changes = None
    else:
        changes = verdict(record)
        if changes:
            mark_job(cell, **changes)
    fresh = cell_state(cell)
    if fresh is not None:
        st.__dict__.update(fresh.__dict__)
