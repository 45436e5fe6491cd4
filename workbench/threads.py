"""How many CPU threads a workbench process computes with.

torch gives a process one intra-op thread per core it may run on, whatever else runs there. A training run
beside an attack then puts twice as many spinning OpenMP threads as cores on the machine, and both crawl:
beside a 2-job suite on 2 cores, C&W took 332 s with torch's 2 threads, 123 s with 1 (2026-12-06).

So by default a workbench process takes its share: the cores it may run on, divided among itself and the
other workbench compute processes (training, attacks, audits, suite cells) of this user that may run on
any of them. Explicit choices win, in this order: `--threads`, `WORKBENCH_THREADS`, then `OMP_NUM_THREADS`
(a launcher that set it, as the suite runner and the DDP launcher do, has already split the cores).
Processes that start later do not shrink an earlier one: its thread count is fixed when it starts.

Torch-free except `apply_cpu_threads`, so the CLI can check a bad value before importing torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .errors import WorkbenchError

ENV_VAR = "WORKBENCH_THREADS"
# Subcommands that compute with torch for long; the TUI, `suite run` (it waits on its cells), `runs` and the
# others stay out of the count.
COMPUTE_COMMANDS = frozenset({"train", "attack", "audit"})
# Worker modules started by launchers: a suite cell, a DDP rank.
COMPUTE_MODULES = {"workbench.suites.cell": "cell", "workbench.training.worker": "rank"}
# /proc/PID/stat states of a process that is not competing for a core: stopped, traced, zombie, dead.
_IDLE_STATES = frozenset("TtZXx")


def parse_thread_count(text: str, source: str) -> int:
    """A positive thread count from `source` (a flag or a variable), or one clear error."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise WorkbenchError(f"{source} must be a whole number of threads >= 1, not {text!r}") from None
    if value < 1:
        raise WorkbenchError(f"{source} must be a whole number of threads >= 1, not {text!r}")
    return value


def compute_command(argv: Sequence[str]) -> str | None:
    """The workbench compute command a process's argv runs ("train", "attack", "audit", "cell", "rank"), or None.

    Recognises `python -m workbench CMD`, the `workbench` console script (also run as `python PATH`) and the
    launchers' workers (`python -m workbench.suites.cell`, `python -m workbench.training.worker`). A DDP
    launcher (`train --devices N`, N > 1) only waits on its ranks, so it is not one."""
    args = list(argv)
    for i, arg in enumerate(args):
        module = args[i + 1] if arg == "-m" and i + 1 < len(args) else None
        if module in COMPUTE_MODULES:
            return COMPUTE_MODULES[module]
        if module == "workbench" or (arg != "-m" and Path(arg).name == "workbench" and i < 2):
            rest = args[i + 2:] if module else args[i + 1:]
            command = next((a for a in rest if not a.startswith("-")), None)
            if command == "train" and _devices(rest) > 1:
                return None
            return command if command in COMPUTE_COMMANDS else None
    return None


def _devices(args: Sequence[str]) -> int:
    for i, arg in enumerate(args):
        text = args[i + 1] if arg == "--devices" and i + 1 < len(args) else arg.partition("--devices=")[2]
        if text.isdigit():
            return int(text)
    return 1


def usable_cores() -> frozenset[int]:
    """The cores this process may run on (its affinity: taskset, Slurm, cgroup cpusets)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity API (macOS)
        return frozenset(range(os.cpu_count() or 1))


def _ancestors(pid: int) -> set[int]:
    """This process and its parents: a launcher waiting on us does not compete with us."""
    seen = {pid}
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return seen
        if pid <= 1 or pid in seen:
            return seen
        seen.add(pid)


def other_compute_processes(cores: frozenset[int], pids: Iterable[int] | None = None) -> int:
    """Running workbench compute processes of this user, other than this one and its parents, that may run
    on one of `cores`, among `pids` (default: every process). 0 where /proc cannot be read (macOS)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return 0
    if pids is None:
        pids = [int(e.name) for e in proc.iterdir() if e.name.isdigit()]
    skip = _ancestors(os.getpid())
    uid = os.getuid()
    count = 0
    for pid in pids:
        if pid in skip:
            continue
        entry = proc / str(pid)
        try:
            if entry.stat().st_uid != uid:
                continue
            if compute_command((entry / "cmdline").read_bytes().decode(errors="replace").split("\0")) is None:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state in _IDLE_STATES:
                continue
            theirs = os.sched_getaffinity(pid) if hasattr(os, "sched_getaffinity") else cores
        except (OSError, ValueError, IndexError):
            continue  # it ended while we looked, or is not ours to inspect
        if cores & frozenset(theirs):
            count += 1
    return count


def share_of_cores(cores: int, others: int) -> int:
    """Threads for one of `others + 1` processes sharing `cores` cores: at least 1."""
    return max(1, cores // (others + 1))


@dataclass(frozen=True)
class ThreadChoice:
    threads: int | None  # None: leave torch's default (the launcher's OMP_NUM_THREADS, or every core)
    reason: str


def explicit_threads(flag: int | None, env: Mapping[str, str] | None = None) -> ThreadChoice | None:
    """The user's own choice, checked (`--threads`, then WORKBENCH_THREADS); None when they made none."""
    env = os.environ if env is None else env
    if flag is not None:
        return ThreadChoice(parse_thread_count(str(flag), "--threads"), "--threads")
    if env.get(ENV_VAR, "").strip():
        return ThreadChoice(parse_thread_count(env[ENV_VAR], ENV_VAR), ENV_VAR)
    return None


def choose_threads(flag: int | None, env: Mapping[str, str] | None = None,
                   cores: frozenset[int] | None = None) -> ThreadChoice:
    """The thread count of a CPU process: the flag, WORKBENCH_THREADS, OMP_NUM_THREADS, else its share."""
    env = os.environ if env is None else env
    chosen = explicit_threads(flag, env)
    if chosen is not None:
        return chosen
    if env.get("OMP_NUM_THREADS", "").strip():
        return ThreadChoice(None, "OMP_NUM_THREADS")
    cores = usable_cores() if cores is None else cores
    others = other_compute_processes(cores)
    if others == 0:
        return ThreadChoice(None, "no other workbench process on its cores")
    plural = "es" if others > 1 else ""
    return ThreadChoice(share_of_cores(len(cores), others),
                        f"{len(cores)} cores shared with {others} other workbench process{plural}")


def apply_cpu_threads(flag: int | None, device) -> str | None:
    """Set torch's intra-op threads for a process computing on `device`; returns a one-line note when the
    count is below torch's default (the user should know why it runs on fewer cores), else None.
    A GPU process keeps torch's default: its CPU threads mostly wait."""
    choice = choose_threads(flag)
    explicit = choice.reason in ("--threads", ENV_VAR)
    if choice.threads is None or (getattr(device, "type", str(device)) != "cpu" and not explicit):
        return None
    import torch

    default = torch.get_num_threads()
    torch.set_num_threads(choice.threads)
    if choice.threads < default and not explicit:
        return (f"note: {choice.threads} CPU thread{'s' if choice.threads > 1 else ''} ({choice.reason}; "
                f"--threads N or {ENV_VAR} to choose)")
    return None
