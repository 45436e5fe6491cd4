"""The trainer as a user relies on it: it learns, resumes exactly, survives kills, stops cleanly, fails loudly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from workbench import load_model
from workbench.checkpoint import read_checkpoint
from workbench.config import load_profile
from workbench.runs import Status, effective_state, read_metrics
from workbench.training import Trainer, prepare_run, run_training
from workbench.training.session import load_run_config

from stopping import train_stopped_at

FAST = ["eval.robust_every=0"]


def epoch_records(run):
    return [r for r in read_metrics(run.metrics) if r.get("kind") == "epoch"]


def test_quickstart_learns_and_pgd_is_below_clean(quickstart_run):
    records = epoch_records(quickstart_run)
    final = records[-1]
    assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))
    assert final["test_clean_acc"] >= 0.90
    assert final["test_robust_acc"] is not None
    assert final["test_robust_acc"] < final["test_clean_acc"]
    status = Status.read(quickstart_run.status)
    assert status.state == "finished" and status.epoch == len(records)
    assert status.best_clean == max(r["test_clean_acc"] for r in records)
    # the run records its resolved config and provenance
    meta = json.loads((quickstart_run.root / "run.json").read_text())
    assert "torch" in meta["provenance"]["packages"]
    assert load_run_config(quickstart_run).dataset == "digits"


def test_checkpoint_rebuilds_model(quickstart_run):
    model = load_model(quickstart_run.best)
    assert not model.training
    data = read_checkpoint(quickstart_run.best)
    assert data["dataset"] == "digits" and data["position"]["batch"] == 0
    x = torch.rand(4, 1, 8, 8)
    assert model(x).shape == (4, 10)


def _final_weights(run):
    return read_checkpoint(run.last)["state_dict"]


def test_same_seed_same_weights(tmp_path):
    weights = []
    for i in range(2):
        cfg, path = load_profile("quickstart", ["epochs=2", *FAST])
        run = prepare_run(cfg, tmp_path / str(i), path)
        run_training(run.root, device="cpu")
        weights.append(_final_weights(run))
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_resume_mid_epoch_is_exact(tmp_path):
    """Stopped mid-epoch then resumed == trained straight through, bit for bit (CPU)."""
    overrides = ["epochs=3", "checkpoint_every=0", *FAST]
    cfg, path = load_profile("quickstart", overrides)
    straight = prepare_run(cfg, tmp_path / "a", path)
    run_training(straight.root, device="cpu")

    cfg, path = load_profile("quickstart", overrides)
    split = prepare_run(cfg, tmp_path / "b", path)
    assert train_stopped_at(split, epoch=1, batch=7) == "stopped"
    ckpt = read_checkpoint(split.last)
    assert ckpt["position"]["epoch"] == 1 and ckpt["position"]["batch"] == 7
    assert Status.read(split.status).state == "stopped"

    assert run_training(split.root, device="cpu") == "finished"
    a, b = _final_weights(straight), _final_weights(split)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # no duplicated or missing steps in the metrics stream
    steps = [r["step"] for r in read_metrics(split.metrics) if r["kind"] == "step"]
    assert steps == sorted(set(steps))
    assert steps == [r["step"] for r in read_metrics(straight.metrics) if r["kind"] == "step"]
    # The log window the stop cut in two is carried in the checkpoint: the first record after the resume
    # averages the same steps as the uninterrupted run's.
    a_steps = [r for r in read_metrics(straight.metrics) if r["kind"] == "step"]
    b_steps = [r for r in read_metrics(split.metrics) if r["kind"] == "step"]
    for ra, rb in zip(a_steps, b_steps):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-5), ra["step"]
        assert rb["train_acc"] == pytest.approx(ra["train_acc"], abs=1e-9), ra["step"]
    assert [r["epoch"] for r in epoch_records(split)] == [1, 2, 3]


def test_finished_run_cannot_resume(quickstart_run):
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match="already finished"):
        run_training(quickstart_run.root, device="cpu")


def test_nan_loss_fails_and_keeps_last_good_checkpoint(tmp_path):
    cfg, path = load_profile("quickstart", ["epochs=3", "optimizer.lr=1e4", "optimizer.name=sgd",
                                            "adv_train.attack=none", *FAST])
    run = prepare_run(cfg, tmp_path, path)
    state = run_training(run.root, device="cpu")
    status = Status.read(run.status)
    assert state == "failed" and status.state == "failed"
    assert "non-finite" in status.message
    if run.last.exists():  # whatever was saved holds only finite weights
        for v in read_checkpoint(run.last)["state_dict"].values():
            assert torch.isfinite(v.float()).all()


def _wait_for(pred, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def _cli(*args, cwd):
    env = {**os.environ, "WORKBENCH_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "workbench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


def test_detached_run_killed_with_sigkill_resumes(tmp_path):
    # Without adversarial training: the kill and the resume are the point, and plain epochs are 4x cheaper.
    out = _cli("train", "--profile", "quickstart", "--set", "epochs=12", "--set", "eval.robust_every=0",
               "--set", "adv_train.attack=none", "--out", str(tmp_path), "--detach", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run_dir = out.stdout.splitlines()[0].removeprefix("run: ").strip()
    from workbench.runs import open_run

    run = open_run(tmp_path / run_dir if not os.path.isabs(run_dir) else run_dir)
    assert _wait_for(lambda: (s := Status.read(run.status)) is not None and s.epoch >= 2), "training never progressed"
    status = Status.read(run.status)
    os.kill(status.pid, signal.SIGKILL)
    assert _wait_for(lambda: effective_state(Status.read(run.status)) == "stopped", 10)
    killed_at = read_checkpoint(run.last)["position"]["epoch"]
    assert killed_at >= 2  # at most the epoch in progress is lost

    out = _cli("train", "--resume", str(run.root), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert Status.read(run.status).state == "finished"
    assert [r["epoch"] for r in epoch_records(run)] == list(range(1, 13))
    steps = [r["step"] for r in read_metrics(run.metrics) if r["kind"] == "step"]
    assert steps == sorted(set(steps))


def test_stop_command_stops_detached_run(tmp_path):
    out = _cli("train", "--profile", "quickstart", "--set", "epochs=200", "--set", "eval.robust_every=0",
               "--out", str(tmp_path), "--detach", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run_dir = tmp_path / out.stdout.splitlines()[0].removeprefix("run: ").strip()
    from workbench.runs import open_run

    run = open_run(run_dir)
    assert _wait_for(lambda: (s := Status.read(run.status)) is not None and s.state == "running" and s.step > 0)
    listed = _cli("runs", "--runs", str(tmp_path), "--json", cwd=tmp_path)
    assert json.loads(listed.stdout)[0]["state"] == "running"
    stopped = _cli("stop", str(run.root), cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    status = Status.read(run.status)
    assert status.state == "stopped" and "SIGTERM" in status.message
    assert read_checkpoint(run.last)["position"]["step"] == status.step


def test_nan_never_overwrites_last_good_checkpoint_mid_epoch(tmp_path):
    """Mid-epoch checkpoints (checkpoint_every) must not save a state a nan loss has already poisoned."""
    cfg, path = load_profile("quickstart", ["epochs=2", "optimizer.name=sgd", "optimizer.lr=1e8",
                                            "adv_train.attack=none", "log_every=1000", "checkpoint_every=3",
                                            *FAST])
    run = prepare_run(cfg, tmp_path, path)
    assert run_training(run.root, device="cpu") == "failed"
    if run.last.exists():
        for v in read_checkpoint(run.last)["state_dict"].values():
            assert torch.isfinite(v.float()).all()


def test_fresh_start_drops_lines_of_an_attempt_killed_before_any_checkpoint(tmp_path):
    cfg, path = load_profile("quickstart", ["epochs=1", *FAST])
    run = prepare_run(cfg, tmp_path, path)
    # What a trainer killed before its first checkpoint leaves: complete lines and a partial one.
    run.metrics.write_text('{"kind": "step", "step": 20, "epoch": 1}\n{"kind": "step", "st')
    assert run_training(run.root, device="cpu") == "finished"
    steps = [r["step"] for r in read_metrics(run.metrics) if r["kind"] == "step"]
    assert steps == sorted(set(steps)) and steps[0] == cfg.log_every
    assert all(line.endswith("}") for line in run.metrics.read_text().splitlines())


def test_prepared_run_reads_as_starting_until_launched(tmp_path):
    cfg, path = load_profile("quickstart")
    run = prepare_run(cfg, tmp_path, path)
    assert effective_state(Status.read(run.status)) == "starting"


def test_resume_on_another_device_reseeds_instead_of_crashing(tmp_path, capsys):
    """A CUDA run resumed on CPU (or back): generator states do not carry across devices."""
    from workbench.checkpoint import save_checkpoint

    cfg, path = load_profile("quickstart", ["epochs=2", *FAST])
    run = prepare_run(cfg, tmp_path, path)
    assert train_stopped_at(run, epoch=0, batch=5) == "stopped"
    data = read_checkpoint(run.last)
    data["rng"]["adversary"]["attack_device"] = "cuda"  # as written by a run on a GPU
    data["rng"]["adversary"]["attack_generator"] = torch.zeros(16, dtype=torch.uint8)
    save_checkpoint({k: v for k, v in data.items() if k not in ("format", "version")}, run.last)
    assert run_training(run.root, device="cpu") == "finished"
    assert "reseeded" in capsys.readouterr().out


@pytest.mark.parametrize("clip", [None, 0.05])
def test_grad_clip_bounds_the_global_gradient_norm_of_every_step(tmp_path, clip):
    """`grad_clip` (issue 19's ADR variant): every update sees a global gradient norm of at most the clip."""
    sets = [*FAST, "epochs=1", "data.train_subset=256", *([f"grad_clip={clip}"] if clip else [])]
    cfg, path = load_profile("quickstart", sets)
    run = prepare_run(cfg, tmp_path / "r", path)
    trainer = Trainer(load_run_config(run), run, torch.device("cpu"))
    norms, step = [], trainer.optimizer.step

    def recording_step(*args, **kwargs):
        grads = [p.grad for p in trainer.params if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    assert trainer.train() == "finished"
    assert len(norms) == 4  # 256 / 64
    if clip is None:
        assert min(norms) > 0.05  # so the clip below binds on every step
    else:
        assert max(norms) <= clip * (1 + 1e-4)
