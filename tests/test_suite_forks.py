"""A suite's forks: models that share their first epochs with another model start from its cell's kept state
(training/fork.py, test_fork.py), planned from the configs, held until the state is written, bit-identical."""

from __future__ import annotations

import json
import re

import pytest
import torch

from cores import all_cores  # noqa: F401  (tiny_suite's wb runs on every core)
from tiny_suite import wb, write_suite
from workbench.checkpoint import read_checkpoint
from workbench.config import validate_config
from workbench.errors import WorkbenchError
from workbench.runs import RunPaths, Status, write_json_atomic
from workbench.suites.executors import waits_for_fork
from workbench.suites.layout import CellPaths, SuitePaths
from workbench.suites.plan import plan_cells
from workbench.suites.spec import load_suite
from workbench.training import prepare_run, run_training

PCL = {"defense": "pcl", "defense.heads": [{"tap": "features", "fc": [32]}, "fc1"], "defense.warmup_epochs": 1,
       "adv_train.phases": "last_phase", "adv_train.pairing": "concat", "adv_train.train_subset": 192,
       "schedule": {"name": "multistep", "milestones": [2], "gamma": 0.5}}
MODELS = [
    {"name": "PGD", "profile": "quickstart", "set": {**PCL, "adv_train.steps": 3}},
    {"name": "FGSM", "profile": "quickstart", "fork_from": "PGD", "set": {**PCL, "adv_train.attack": "fgsm"}},
    # Another optimizer: nothing shared, so it trains alone.
    {"name": "FGSM-lr", "profile": "quickstart", "fork_from": "PGD",
     "set": {**PCL, "adv_train.attack": "fgsm", "optimizer.lr": 0.002}},
]
FORKS = {"models": MODELS, "seeds": [0], "paper": {}, "checks": [],
         "budgets": {"tiny": {"epochs": 2, "n": 60, "set": {"eval.robust_every": 0}}},
         "evaluations": [{"name": "weak", "attacks": ["fgsm"], "eps": [0.1]}]}


def test_forks_are_planned_from_the_configs(tmp_path):
    suite, _ = load_suite(write_suite(tmp_path, **FORKS))
    _, cells = plan_cells(suite)
    by_model = {c.model: c for c in cells}
    assert by_model["FGSM"].fork == {"cell": by_model["PGD"].key, "epochs": 1}  # the CE warm-up
    assert by_model["PGD"].snapshot_epochs == [1] and by_model["PGD"].fork is None
    assert by_model["FGSM-lr"].fork is None


@pytest.mark.parametrize("fork_from, message", [
    ("nobody", "model FGSM: fork_from 'nobody' is not another model of the suite"),
    ("FGSM", "model FGSM: fork_from 'FGSM' is not another model of the suite"),
    ("FGSM-lr", "model FGSM: fork_from 'FGSM-lr', which forks itself"),
])
def test_a_bad_fork_is_one_clear_line(tmp_path, fork_from, message):
    models = [dict(m) for m in MODELS]
    models[1]["fork_from"] = fork_from
    with pytest.raises(WorkbenchError, match=re.escape(message)):
        load_suite(write_suite(tmp_path, **{**FORKS, "models": models}))


@pytest.mark.parametrize("executor", ["local", "submitit-local"])
def test_a_forked_cell_waits_for_its_source_and_ends_as_if_trained_alone(tmp_path, executor):
    if executor == "submitit-local":
        pytest.importorskip("submitit", reason="submitit is not installed: pip install 'workbench[slurm]'")
    path, runs = write_suite(tmp_path, **{**FORKS, "models": MODELS[:2]}), tmp_path / "runs"
    proc = wb("suite", "run", str(path), "--runs", str(runs), "--jobs", "2", "--device", "cpu", "--executor", executor,
              every_core=True)
    cells = {c.read_plan()["model"]: c for c in SuitePaths.under(runs, "tiny").cells_of("tiny")}
    forked = cells["FGSM"]
    # The source starts first and its fork waits for its state after epoch 1.
    assert proc.stderr.index(f"start  {cells['PGD'].root.name}") < proc.stderr.index(f"wait   {forked.root.name}")
    meta = json.loads((forked.run().root / "run.json").read_text())
    assert meta["forked_from"] == {"snapshot": str(cells["PGD"].run().snapshot(1)), "epochs": 1}
    assert (forked.run().evals).is_dir() and any(forked.run().evals.iterdir())  # evaluated as any cell

    plan = forked.read_plan()
    cold = prepare_run(validate_config(plan["config"], "cell.json"), tmp_path / "cold")
    assert run_training(cold.root, device="cpu") == "finished"
    a, b = read_checkpoint(cold.last), read_checkpoint(forked.run().last)
    for part in ("state_dict", "auxiliary"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"


def test_a_fork_waits_only_while_its_source_can_still_keep_the_state(tmp_path):
    source, fork = CellPaths(tmp_path / "cells" / "src"), CellPaths(tmp_path / "cells" / "fork")
    for cell in (source, fork):
        cell.root.mkdir(parents=True)
    write_json_atomic(fork.plan, {"model": "fork", "fork": {"cell": "src", "epochs": 1}})
    in_play = {"src", "fork"}
    assert fork.awaited_source() == source and waits_for_fork(fork, in_play) == "src"  # not started
    run = RunPaths(source.root / "run")
    run.root.mkdir()
    run.config.write_text("epochs: 3\n")
    Status(state="running", epoch=0, epochs=3).write(run.status)
    assert fork.awaited_source() == source  # in its first epoch
    assert waits_for_fork(fork, {"fork"}) is None  # a source not run here holds nothing
    # Past epoch 1 and nothing kept (planned before the fork): waiting for it, evaluations and all, gains nothing.
    Status(state="running", epoch=1, epochs=3).write(run.status)
    assert fork.awaited_source() is None and waits_for_fork(fork, in_play) is None
    run.snapshot(1).mkdir(parents=True)
    assert fork.awaited_source() is None and fork.fork_snapshot() == run.snapshot(1)
