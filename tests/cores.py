"""The cores each pytest-xdist worker may use.

Two workers on two cores each starting processes with as many OpenMP threads as cores oversubscribe them
(spinning threads crawl: a suite test ran 4.5x slower beside another worker than alone). So each worker,
and every process it starts, gets its own share of the cores, as a Slurm or cgroup allocation would give.
A test that must see every core (cells run side by side) starts its process with `all_cores`.
Where the OS cannot pin (no sched_setaffinity: macOS), every worker keeps every core.
"""

from __future__ import annotations

import os

_CAN_PIN = hasattr(os, "sched_setaffinity")
ALL_CORES = sorted(os.sched_getaffinity(0)) if _CAN_PIN else list(range(os.cpu_count() or 1))


def take_worker_share(worker: str | None, workers: int) -> None:
    """Pin this xdist worker ("gw0", "gw1", ...) to its share of the cores; nothing outside xdist or when
    there are fewer cores than workers."""
    if not _CAN_PIN or not worker or workers < 2 or len(ALL_CORES) < workers:
        return
    share = len(ALL_CORES) // workers
    index = int(worker.removeprefix("gw")) % workers
    os.sched_setaffinity(0, ALL_CORES[index * share:(index + 1) * share])


def my_cores() -> int:
    """How many cores this process may use."""
    return len(os.sched_getaffinity(0)) if _CAN_PIN else len(ALL_CORES)


def all_cores() -> None:
    """preexec_fn for a process that must run on every core (undoes the worker's share)."""
    if _CAN_PIN:
        os.sched_setaffinity(0, ALL_CORES)
