"""Crash consistency: a training SIGKILLed again and again (also inside checkpoint writes) and resumed each
time ends with exactly the weights and metrics of a run never interrupted."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from workbench.checkpoint import read_checkpoint
from workbench.config import load_profile
from workbench.runs import Status, read_metrics
from workbench.training import prepare_run

# Checkpoint every step, so a good share of the run is spent inside checkpoint writes.
OVERRIDES = ["eval.robust_every=0", "checkpoint_every=1", "log_every=5"]


def _prepare(root, epochs):
    cfg, path = load_profile("quickstart", [f"epochs={epochs}", *OVERRIDES])
    return prepare_run(cfg, root, path)


def _resume(run) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "workbench", "train", "--resume", str(run.root), "--device", "cpu"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _wait_running(run, proc, timeout=120.0) -> bool:
    """Until the child trains (its pid in status.json, state running); False if it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        status = Status.read(run.status)
        if status is not None and status.pid == proc.pid and status.state == "running":
            return True
        time.sleep(0.01)
    raise AssertionError("trainer did not start")


def _temp_files(run):
    return [p for p in run.checkpoints.iterdir() if p.name.endswith(".tmp")]


def _kill_inside_a_write(run, proc, timeout=60.0) -> bool:
    """SIGKILL as soon as a checkpoint temp file exists (the write is under way); False if the run ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _temp_files(run):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.0005)
    return False


def _kill_at_random(proc, rng) -> bool:
    time.sleep(rng.uniform(0.02, 0.5))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def _train_to_end(run) -> None:
    proc = _resume(run)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]


def _crash_and_resume(tmp_path, kills: int, seed: int, epochs: int) -> None:
    baseline = _prepare(tmp_path / "straight", epochs)
    _train_to_end(baseline)

    run = _prepare(tmp_path / "killed", epochs)
    rng = random.Random(seed)
    inside_writes = done = 0
    while done < kills:
        proc = _resume(run)
        if not _wait_running(run, proc):
            break  # finished before the kill
        in_write = done % 2 == 0
        killed = _kill_inside_a_write(run, proc) if in_write else _kill_at_random(proc, rng)
        if not killed:
            break
        done += 1
        leftovers = _temp_files(run)
        inside_writes += bool(leftovers)
        if run.last.exists():  # whatever the kill hit, the last checkpoint is whole
            read_checkpoint(run.last)
    assert done == kills, f"the run finished after {done} of {kills} kills; lengthen it"
    assert inside_writes >= 1, "no kill landed inside a checkpoint write"

    _train_to_end(run)
    assert Status.read(run.status).state == "finished"
    assert not _temp_files(run), "the resume left a dead temp file of a killed write"
    want, got = read_checkpoint(baseline.last)["state_dict"], read_checkpoint(run.last)["state_dict"]
    for key in want:
        assert torch.equal(want[key], got[key]), key
    straight = [r for r in read_metrics(baseline.metrics) if r["kind"] == "step"]
    killed = [r for r in read_metrics(run.metrics) if r["kind"] == "step"]
    assert [r["step"] for r in killed] == [r["step"] for r in straight]  # none lost, none twice
    for a, b in zip(straight, killed):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6), a["step"]
        assert b["train_acc"] == pytest.approx(a["train_acc"], abs=1e-9), a["step"]


def test_killed_three_times_ends_bit_identical(tmp_path):
    _crash_and_resume(tmp_path, kills=3, seed=0, epochs=4)


@pytest.mark.slow
def test_killed_ten_times_ends_bit_identical(tmp_path):
    _crash_and_resume(tmp_path, kills=10, seed=1, epochs=12)
