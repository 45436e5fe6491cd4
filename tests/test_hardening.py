"""Bad input and bad luck (hostile profiles, a full disk, signals during set-up, stale files) give one
`error:` line or a clean recorded state, never a traceback or a lost checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from workbench.atomic import atomic_write_bytes
from workbench.checkpoint import read_checkpoint, save_checkpoint
from workbench.config import load_profile
from workbench.errors import WorkbenchError
from workbench.runs import Status, read_metrics
from workbench.stop_request import StopRequest
from workbench.training import prepare_run, run_training
from workbench.training.session import run_lock

FAST = ["epochs=1", "eval.robust_every=0"]


def cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def assert_one_error_line(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- profiles -------------------------------------------------------------------------------------------

def test_non_utf8_profile_is_one_line(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("description: caf\xe9\ndataset: digits\n".encode("latin-1"))
    assert_one_error_line(cli("train", "--profile", str(bad)), "not UTF-8", "latin1.yaml")


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 300))])
def test_deeply_nested_profile_is_one_line(tmp_path, text):
    bad = tmp_path / "deep.yaml"
    bad.write_text(text)
    assert_one_error_line(cli("train", "--profile", str(bad)), "nested")


def test_deeply_nested_set_is_one_line():
    assert_one_error_line(cli("train", "--profile", "quickstart", "--set", "epochs=" + "[" * 5000), "nested")


def test_alias_bomb_is_refused_quickly(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    bad = tmp_path / "laughs.yaml"
    bad.write_text("\n".join(lines) + "\n")
    t0 = time.monotonic()
    with pytest.raises(WorkbenchError, match="aliases"):
        load_profile(str(bad))
    assert time.monotonic() - t0 < 2.0


def test_profile_that_is_a_folder_says_so(tmp_path):
    assert_one_error_line(cli("train", "--profile", str(tmp_path)), "is a folder")


@pytest.mark.parametrize("override, key", [
    ("adv_train.eps=1.5", "adv_train.eps"),
    ("adv_train.eps=[0.1, 1.5]", "adv_train.eps"),
    ("eval.eps=2", "eval.eps"),
    ("batch_size=100000000000000000000000", "batch_size"),
    ("batch_size=1e23", "batch_size"),
    ("seed=100000000000000000000000", "seed"),
    ("seed=1e23", "seed"),
    ("epochs=10000000000000", "epochs"),
    ("log_every=10000000000000", "log_every"),
])
def test_out_of_range_values_fail_validation(override, key):
    with pytest.raises(WorkbenchError, match=key.replace(".", r"\.")):
        load_profile("quickstart", [override])


def test_largest_allowed_seed_and_eps_train(tmp_path):
    cfg, path = load_profile("quickstart", [*FAST, "seed=4294967295", "adv_train.eps=1.0", "data.train_subset=128"])
    run = prepare_run(cfg, tmp_path, path)
    assert run_training(run.root, device="cpu") == "finished"


# -- a full disk ------------------------------------------------------------------------------------------

def test_write_error_of_torch_save_is_named_not_an_enforce_failure():
    """torch.save turns the file's ENOSPC into 'enforce fail ... unexpected pos'; the writer keeps the cause."""
    from workbench.atomic import _RecordingWriter

    with open("/dev/full", "wb", buffering=0) as fh:  # unbuffered: closing has nothing left to flush
        recorder = _RecordingWriter(fh)
        with pytest.raises((RuntimeError, OSError)):
            torch.save({"w": torch.zeros(10_000)}, recorder)
    assert recorder.error is not None and recorder.error.errno == 28


@pytest.fixture
def tiny_disk(tmp_path):
    """A small tmpfs (root only; skipped where mounting is not allowed)."""
    mounted = []

    def mount(path: Path, size_kb: int) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here to fill a disk: {proc.stderr.strip()[:120]}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_full_disk_checkpoint_write_says_no_space_and_keeps_the_old_file(tiny_disk, tmp_path):
    disk = tiny_disk(tmp_path / "disk", 64)
    target = disk / "last.pt"
    save_checkpoint({"model": {}, "state_dict": {"w": torch.ones(1000)}}, target)
    with pytest.raises(WorkbenchError, match=r"no space left on device writing .*last\.pt"):
        save_checkpoint({"model": {}, "state_dict": {"w": torch.zeros(100_000)}}, target)
    assert torch.equal(read_checkpoint(target)["state_dict"]["w"], torch.ones(1000))
    assert [p.name for p in disk.iterdir()] == ["last.pt"]  # no temp file left


def test_full_disk_fails_the_run_with_a_clear_status(tiny_disk, tmp_path):
    cfg, path = load_profile("quickstart", [*FAST])
    run = prepare_run(cfg, tmp_path / "runs", path)
    size = len(_checkpoint_bytes(tmp_path))
    # Room for last.pt but not for best.pt beside it: the epoch-end save fails half-way.
    tiny_disk(run.checkpoints, int(1.5 * size / 1024) + 4)
    proc = cli("train", "--resume", str(run.root), "--device", "cpu")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "enforce fail" not in proc.stderr
    assert "error: no space left on device writing" in proc.stderr
    status = Status.read(run.status)
    assert status.state == "failed" and status.message.startswith("no space left on device writing")
    assert "best.pt" in status.message
    read_checkpoint(run.last)  # the checkpoint written before the disk filled is whole
    assert not [p for p in run.checkpoints.iterdir() if p.name.endswith(".tmp")]


def _checkpoint_bytes(tmp_path) -> bytes:
    """The size of one quickstart checkpoint, measured by writing one."""
    cfg, path = load_profile("quickstart", [*FAST, "data.train_subset=64"])
    run = prepare_run(cfg, tmp_path / "probe", path)
    run_training(run.root, device="cpu")
    return run.last.read_bytes()


def test_atomic_write_into_a_missing_readonly_place_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WorkbenchError, match="cannot write"):
        atomic_write_bytes(blocker / "sub" / "x.json", lambda fh: fh.write(b"{}"))


# -- signals, locks, stale files --------------------------------------------------------------------------

def test_stop_during_setup_is_recorded_as_stopped(tmp_path):
    cfg, path = load_profile("quickstart", FAST)
    run = prepare_run(cfg, tmp_path, path)
    stop = StopRequest()
    stop.signum = signal.SIGTERM  # as if it arrived while the data loaded
    assert run_training(run.root, device="cpu", stop=stop) == "stopped"
    status = Status.read(run.status)
    assert status.state == "stopped" and "before training started" in status.message
    assert run_training(run.root, device="cpu") == "finished"  # and it resumes


def test_sigterm_during_setup_exits_cleanly(tmp_path):
    """A SIGTERM while torch imports and the data loads: exit 0 and a 'stopped' status, never rc -15."""
    cfg, path = load_profile("quickstart", FAST)
    run = prepare_run(cfg, tmp_path, path)
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "train", "--resume", str(run.root), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The CLI prints the run folder once torch is imported, before the trainer loads data and builds the model.
    assert proc.stdout.readline().startswith("run: ")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, (proc.returncode, stderr[-2000:])
    status = Status.read(run.status)
    assert status.state == "stopped", status
    assert "stopped by SIGTERM" in status.message and "resume" in stdout


def test_lock_refusal_names_the_holder_not_a_stale_pid(tmp_path):
    cfg, path = load_profile("quickstart", FAST)
    run = prepare_run(cfg, tmp_path, path)
    stale = Status(state="running", pid=999_999)
    stale.write(run.status)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from workbench.runs import RunPaths\n"
        "from workbench.training.session import run_lock\n"
        f"with run_lock(RunPaths({str(run.root)!r})):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkbenchError, match=rf"already being trained by another process \(pid {holder.pid}\)"):
            with run_lock(run):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(run):  # free again once the holder is gone
        pass


def test_resume_removes_temp_files_of_a_killed_checkpoint_write(tmp_path):
    cfg, path = load_profile("quickstart", FAST)
    run = prepare_run(cfg, tmp_path, path)
    dead = run.checkpoints / ".last.pt.k1ll3d.tmp"
    dead.write_bytes(b"")
    unrelated = run.checkpoints / "notes.txt"
    unrelated.write_text("mine")
    assert run_training(run.root, device="cpu") == "finished"
    assert not dead.exists()
    assert unrelated.read_text() == "mine"  # only the atomic writer's own temp files go


def test_step_records_after_a_resume_cover_the_whole_window(tmp_path):
    """A stop mid-window: the first step record after the resume averages the window's steps from before
    the stop as well (the checkpoint carries the window), so it equals the uninterrupted run's record."""
    overrides = ["epochs=1", "eval.robust_every=0", "log_every=10", "checkpoint_every=0"]
    cfg, path = load_profile("quickstart", overrides)
    straight = prepare_run(cfg, tmp_path / "a", path)
    run_training(straight.root, device="cpu")

    cfg, path = load_profile("quickstart", overrides)
    split = prepare_run(cfg, tmp_path / "b", path)
    from workbench.training import Trainer
    from workbench.training.reporting import SilentReporter
    from workbench.training.session import load_run_config

    class StopAtStep(SilentReporter):
        def batch(self, epoch, batch):
            if batch == 14:  # 4 steps into the window that ends at step 20
                trainer.stop.signum = signal.SIGTERM

    trainer = Trainer(load_run_config(split), split, torch.device("cpu"), reporter=StopAtStep())
    assert trainer.train() == "stopped"
    assert read_checkpoint(split.last)["log_mark"]["seen"] > 0
    assert run_training(split.root, device="cpu") == "finished"
    a = {r["step"]: r for r in read_metrics(straight.metrics) if r["kind"] == "step"}
    b = {r["step"]: r for r in read_metrics(split.metrics) if r["kind"] == "step"}
    assert a.keys() == b.keys() and 20 in b
    assert b[20]["train_loss"] == pytest.approx(a[20]["train_loss"], rel=1e-6)
    assert b[20]["train_acc"] == pytest.approx(a[20]["train_acc"], abs=1e-9)
