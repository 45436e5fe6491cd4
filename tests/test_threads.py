"""A workbench process's CPU threads: the user's choice first, else its share of cores it shares with other
workbench training and attack processes (two full-width processes on the same cores crawl)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cores import ALL_CORES, all_cores
from workbench.errors import WorkbenchError
from workbench.threads import (ENV_VAR, choose_threads, compute_command, other_compute_processes,
                               share_of_cores)

HAS_PROC = Path("/proc/self/cmdline").exists() and hasattr(os, "sched_setaffinity")


@pytest.mark.parametrize("argv, command", [
    (["/venv/bin/python3", "/venv/bin/workbench", "attack", "ckpt.pt", "--pgd"], "attack"),
    (["python", "-m", "workbench", "train", "--resume", "runs/x"], "train"),
    (["python", "-u", "-m", "workbench", "audit", "ckpt.pt"], "audit"),
    (["python", "-m", "workbench.suites.cell", "cells/x", "--threads", "1"], "cell"),
    (["python", "-m", "workbench.training.worker", "runs/x"], "rank"),
    # Waiting, not computing: a DDP launcher, the suite runner, the TUI, listings.
    (["python", "-m", "workbench", "train", "--profile", "q", "--devices", "2"], None),
    (["python", "-m", "workbench", "train", "--devices=4", "--profile", "q"], None),
    (["/venv/bin/workbench", "suite", "run", "pcl_mnist"], None),
    (["/venv/bin/workbench", "tui"], None),
    (["python", "-m", "workbench", "runs"], None),
    (["python", "train.py", "workbench", "attack"], None),
    (["vim", "notes/workbench"], None),
])
def test_which_processes_count_as_workbench_compute(argv, command):
    assert compute_command(argv) == command


def test_the_users_choice_wins_then_the_launchers_then_the_share():
    cores = frozenset(range(4))
    assert choose_threads(3, env={ENV_VAR: "2", "OMP_NUM_THREADS": "1"}, cores=cores).threads == 3
    assert choose_threads(None, env={ENV_VAR: "2", "OMP_NUM_THREADS": "1"}, cores=cores).threads == 2
    omp = choose_threads(None, env={"OMP_NUM_THREADS": "1"}, cores=cores)
    assert omp.threads is None and omp.reason == "OMP_NUM_THREADS"  # torch reads it itself
    with pytest.raises(WorkbenchError, match=ENV_VAR):
        choose_threads(None, env={ENV_VAR: "many"}, cores=cores)
    with pytest.raises(WorkbenchError, match=ENV_VAR):
        choose_threads(None, env={ENV_VAR: "0"}, cores=cores)


def test_the_share_is_the_cores_over_the_processes_and_never_zero():
    assert [share_of_cores(8, others) for others in range(4)] == [8, 4, 2, 2]
    assert share_of_cores(2, 2) == 1 and share_of_cores(1, 5) == 1


def _fake(tmp_path: Path, *args: str, cores=None) -> subprocess.Popen:
    """A real process whose command line is the `workbench` console script's: it only sleeps."""
    script = tmp_path / "bin" / "workbench"
    script.parent.mkdir(exist_ok=True)
    script.write_text("import time\ntime.sleep(60)\n")

    def pin():
        if cores is not None:
            os.sched_setaffinity(0, cores)
    return subprocess.Popen([sys.executable, str(script), *args], preexec_fn=pin)


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc and CPU affinity (Linux)")
def test_running_workbench_processes_on_our_cores_are_counted(tmp_path):
    cores = frozenset(os.sched_getaffinity(0))
    attack = _fake(tmp_path, "attack", "ckpt.pt")
    runner = _fake(tmp_path, "suite", "run", "pcl_mnist")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    procs = [attack, runner, other]
    pids = [p.pid for p in procs] + [os.getpid(), os.getppid()]
    try:
        deadline = time.time() + 20  # the fakes' command lines appear once they have exec'd
        while other_compute_processes(cores, pids) != 1 and time.time() < deadline:
            time.sleep(0.05)
        assert other_compute_processes(cores, pids) == 1  # the attack: not the runner, nor us, nor python -c
        os.kill(attack.pid, signal.SIGSTOP)  # a stopped run does not compete
        deadline = time.time() + 10
        while other_compute_processes(cores, pids) != 0 and time.time() < deadline:
            time.sleep(0.05)
        assert other_compute_processes(cores, pids) == 0
        os.kill(attack.pid, signal.SIGCONT)
        if len(ALL_CORES) >= 2:  # on other cores it does not compete either
            mine = min(cores)
            elsewhere = [c for c in ALL_CORES if c != mine][:1]
            os.sched_setaffinity(attack.pid, elsewhere)
            assert other_compute_processes(frozenset({mine}), pids) == 0
            assert other_compute_processes(frozenset(ALL_CORES), pids) == 1
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.skipif(not HAS_PROC or len(ALL_CORES) < 2, reason="needs /proc, CPU affinity and 2 cores")
def test_an_attack_beside_a_running_workbench_process_takes_its_share(tmp_path, quickstart_run):
    """The real CLI on every core, beside a (sleeping) workbench training: fewer threads than cores, says
    so on stderr, and records them in the report; --threads overrides."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", ENV_VAR)}
    training = _fake(tmp_path, "train", "--resume", "runs/x", cores=ALL_CORES)
    try:
        def attack(*extra):
            proc = subprocess.run([sys.executable, "-m", "workbench", "attack", str(quickstart_run.best), "--fgsm",
                                   "--eps", "0.1", "--n", "20", "--json", "--quiet", *extra],
                                  capture_output=True, text=True, env=env, timeout=300, preexec_fn=all_cores)
            assert proc.returncode == 0, proc.stderr
            return json.loads(proc.stdout), proc.stderr

        report, stderr = attack()
        assert report["cpu_threads"] < len(ALL_CORES)
        assert f"note: {report['cpu_threads']} CPU thread" in stderr and "--threads" in stderr
        report, stderr = attack("--threads", str(len(ALL_CORES)))
        assert report["cpu_threads"] == len(ALL_CORES) and "note:" not in stderr
    finally:
        training.kill()
        training.wait()
