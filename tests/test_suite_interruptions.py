"""A suite interrupted: killed mid-training, or stopped mid-evaluation, continues where it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from tiny_suite import wait_for, wb, write_suite
from workbench.runs import pid_alive
from workbench.suites.layout import SuitePaths
from workbench.suites.state import cell_state


def test_a_killed_suite_continues_without_redoing_finished_cells(tmp_path):
    # One model trains long enough to be caught mid-run; checkpoints every few steps so a kill loses little.
    path = write_suite(tmp_path, seeds=[0], models=[
        {"name": "fast", "profile": "quickstart", "set": {"adv_train.attack": "none"}},
        {"name": "slow", "profile": "quickstart", "set": {"adv_train.attack": "none", "checkpoint_every": 5}},
    ], budgets={"tiny": {"n": 60, "set": {"eval.robust_every": 0},
                         "models": {"fast": {"epochs": 1}, "slow": {"epochs": 15}}}}, paper={}, checks=[])
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "suite", "run", str(path), "--runs", str(runs),
                             "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    paths = SuitePaths.under(runs, "tiny")
    try:
        fast, slow = wait_for(lambda: paths.cells_of("tiny") or None, 60, "the plan")
        wait_for(lambda: (s := cell_state(slow)) and s.state == "training" and s.epoch >= 2, 180,
                  "the slow cell to train 2 epochs")
        assert cell_state(fast).state == "done"
        # The worker dies abruptly (as on a lost node), then the runner is killed too.
        worker = json.loads(slow.job.read_text())["pid"]
        os.kill(worker, signal.SIGKILL)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    # SIGKILL is asynchronous: a process with torch's threads and memory takes some milliseconds to exit, and
    # until it has, the cell rightly still shows it as training.
    wait_for(lambda: not pid_alive(worker), 30, "the killed worker to exit")
    killed = cell_state(slow)
    assert killed.state == "stopped" and 0 < killed.epoch < 15
    fast_files = {p: p.stat().st_mtime_ns for p in fast.root.rglob("*") if p.is_file() and p.name != "cell.json"}
    slow_run = slow.run().root

    wb("suite", "run", str(path), "--runs", str(runs), "--device", "cpu")
    assert [cell_state(c).state for c in (fast, slow)] == ["done", "done"]
    assert {p: p.stat().st_mtime_ns for p in fast_files} == fast_files  # the finished cell was not redone
    assert slow.run().root == slow_run  # the same run continued, not a new one
    epochs = [json.loads(line)["epoch"] for line in (slow_run / "metrics.jsonl").read_text().splitlines()
              if json.loads(line).get("kind") == "epoch"]
    assert epochs == list(range(1, 16))  # each epoch once: resumed from the checkpoint, none repeated


def test_a_suite_stopped_during_an_evaluation_resumes_it(tmp_path):
    path = write_suite(tmp_path, seeds=[0], paper={}, checks=[], models=[
        {"name": "m", "profile": "quickstart", "set": {"adv_train.attack": "none"}}],
        budgets={"tiny": {"epochs": 2, "n": 100, "set": {"eval.robust_every": 0}}},
        evaluations=[{"name": "slow", "attacks": ["pgd:steps=50,restarts=2"], "eps": [0.02, 0.04, 0.06, 0.08, 0.1]}])
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "suite", "run", str(path), "--runs", str(runs),
                             "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    paths = SuitePaths.under(runs, "tiny")
    try:
        (cell,) = wait_for(lambda: paths.cells_of("tiny") or None, 60, "the plan")
        journal = wait_for(lambda: next(cell.root.glob("evaluation-*.journal.pt"), None), 180,
                            "the evaluation's first finished pass")
        proc.send_signal(signal.SIGTERM)  # the runner asks its worker to stop
        assert proc.wait(timeout=120) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    st = cell_state(cell)
    assert st.state == "stopped" and "during evaluation" in st.message and journal.exists()
    wb("suite", "run", str(path), "--runs", str(runs), "--device", "cpu")
    assert cell_state(cell).state == "done" and not journal.exists()
    assert "(resuming)" in cell.log.read_text()
