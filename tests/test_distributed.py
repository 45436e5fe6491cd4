"""Data-parallel training (DDP, gloo on this CPU): N ranks must train what one process trains on the same
global batch. Runs are deterministic (no random attack starts), so "the same" is checked on the weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from workbench.checkpoint import read_checkpoint
from workbench.config import load_profile
from workbench.runs import Status, read_metrics
from workbench.training import prepare_run, run_training

REPO = Path(__file__).resolve().parents[1]
# Deterministic quickstart: PGD-AT without random start, so two runs differ only by float summation order. SGD,
# not the profile's Adam: Adam's first steps are ~lr * sign(g), so a gradient entry at rounding level flips a
# weight by a whole lr and the comparison would measure that, not the distributed training.
BASE = ["adv_train.random_start=false", "eval.robust_every=0", "data.train_subset=640", "log_every=5",
        "optimizer={name: sgd, lr: 0.05, momentum: 0.9}"]


def env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def state_of(path: Path) -> dict[str, torch.Tensor]:
    """Model and defense state (parameters and buffers) of a checkpoint, by name."""
    data = read_checkpoint(path)
    out = {f"model.{k}": v for k, v in data["state_dict"].items()}
    out.update({f"auxiliary.{k}": v for k, v in (data.get("auxiliary") or {}).items()})
    return out


def assert_same_weights(a: Path, b: Path, rtol: float = 1e-3) -> None:
    sa, sb = state_of(a), state_of(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        x, y = sa[k].double(), sb[k].double()
        scale = max(float(x.abs().max()), 1e-3)
        assert float((x - y).abs().max()) <= rtol * scale, f"{k}: max diff {float((x - y).abs().max()):.3g}, scale {scale:.3g}"


def one_process(tmp: Path, name: str, overrides: list[str]) -> Path:
    cfg, path = load_profile("quickstart", [*BASE, *overrides])
    run = prepare_run(cfg, tmp / name, path)
    assert run_training(run.root, device="cpu") == "finished"
    return run.root


def torchrun(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *args]
    return subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)


def workbench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", *args], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=timeout)


# Each defense whose loss or state couples the samples of a batch, plus plain softmax PGD-AT.
DEFENSES = {
    "softmax": [],
    # prototypes on their own optimizer, initialised from the class means of the first batch; CE warm-up first
    # (auxiliary parameters unused for an epoch), then a fresh optimizer
    "pcl": ["defense=pcl", "defense.heads=[fc1]", "defense.warmup_epochs=1"],
    "ds_center": ["defense=ds_center", "defense.heads=[fc1]", "defense.warmup_epochs=0"],  # center update rule
    "ds_contrastive": ["defense=ds_contrastive", "defense.heads=[fc1]", "defense.warmup_epochs=0"],  # all pairs
    "ds_triplet": ["defense=ds_triplet", "defense.heads=[fc1]", "defense.warmup_epochs=0"],  # batch-hard mining
    # global compactness over all pairs of the batch; crafts its own examples
    "adr": ["adv_train.attack=none", "defense=adr", "defense.steps=2", "defense.eps=0.1", "defense.step_size=0.05",
            "defense.random_start=false", "defense.lam_gb=1.0"],
    "pc_loss": ["defense=pc_loss"],  # PC loss + logit constraints (per sample)
    "ccn": ["defense=ccn"],  # compact layers with learned scales
}


def test_every_defense_trains_the_same_weights_on_two_ranks_as_on_one(tmp_path):
    one, two = {}, []
    for name, overrides in DEFENSES.items():
        overrides = ["epochs=2", *overrides]
        one[name] = one_process(tmp_path, f"one-{name}", overrides)
        cfg, path = load_profile("quickstart", [*BASE, *overrides])
        two.append(prepare_run(cfg, tmp_path / f"two-{name}", path, devices=2).root)
    out = torchrun([str(REPO / "tests" / "distributed_runs.py"), *map(str, two)])
    assert out.returncode == 0, out.stdout[-1500:] + "\n" + out.stderr[-3000:]
    for (name, ref), run in zip(one.items(), two):
        assert f"{run}: finished" in out.stdout, (name, out.stdout[-2000:])
        assert_same_weights(ref / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
        epochs = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "epoch"]
        ref_epochs = [r for r in read_metrics(ref / "metrics.jsonl") if r["kind"] == "epoch"]
        assert [r["epoch"] for r in epochs] == [1, 2], name  # rank 0 alone writes, once per epoch
        assert all(r["ranks_in_sync"] for r in epochs), name
        for r, q in zip(epochs, ref_epochs):
            # Metrics are aggregated over the ranks: the global batch's loss, not rank 0's half.
            assert r["train_loss"] == pytest.approx(q["train_loss"], rel=1e-3), name
            assert r["test_clean_acc"] == pytest.approx(q["test_clean_acc"], abs=0.01), name


def wait_for(predicate, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_stopped_ddp_run_resumes_on_another_number_of_devices(tmp_path):
    """`workbench train --devices 2` (torchrun, gloo) trains; a stop request reaches rank 0 as SIGTERM and every rank stops at the same step with one checkpoint; resuming on 1 device continues the same global batches and ends with the weights of an
    uninterrupted run."""
    overrides = ["epochs=4", "adv_train.steps=20"]
    ref = one_process(tmp_path, "ref", overrides)
    sets = [f"--set={s}" for s in [*BASE, *overrides]]
    out_dir = tmp_path / "ddp"
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "train", "--profile", "quickstart", *sets,
                             "--devices", "2", "--device", "cpu", "--out", str(out_dir)],
                            cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: out_dir.exists() and any(out_dir.iterdir()), what="the run folder")
    (run,) = out_dir.iterdir()
    wait_for(lambda: any(r["kind"] == "step" for r in read_metrics(run / "metrics.jsonl")), what="a step")
    # Ctrl-C: the launcher passes it to rank 0 as SIGTERM (what `workbench stop` and the TUI send to status.pid).
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    assert "stopping: every rank checkpoints" in stderr and "Traceback" not in stderr
    status = Status.read(run / "status.json")
    assert status.state == "stopped", status.message
    assert "stopped by SIGTERM" in status.message and status.step < 4 * 10
    assert f"workbench train --resume {run}" in stdout

    out = workbench("train", "--resume", str(run), "--devices", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed on 1 device(s), saved on 2" in out.stdout
    assert Status.read(run / "status.json").state == "finished"
    a, b = state_of(ref / "checkpoints" / "last.pt"), state_of(run / "checkpoints" / "last.pt")
    for k in a:
        # Relative to the tensor's norm: 40 steps amplify summation-order noise to ~1e-4 (a unit near its ReLU
        # threshold may differ more); a batch replayed or skipped at the resume point moves weights ~1e-2.
        rel = float((a[k].double() - b[k].double()).norm() / a[k].double().norm().clamp_min(1e-6))
        assert rel < 3e-3, (k, rel)
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "step"]
    assert steps == sorted(set(steps))  # the resumed stream continues without repeating a step


def test_bad_devices_are_one_line_errors(tmp_path):
    out = workbench("train", "--profile", "quickstart", "--devices", "0", "--out", str(tmp_path))
    assert out.returncode != 0 and "--devices must be >= 1" in out.stderr and "Traceback" not in out.stderr
    if not torch.cuda.is_available():
        out = workbench("train", "--profile", "quickstart", "--devices", "2", "--device", "cuda", "--out", str(tmp_path))
        assert out.returncode != 0 and "CUDA" in out.stderr and "Traceback" not in out.stderr
    assert not any(tmp_path.iterdir())  # nothing created for a bad request
