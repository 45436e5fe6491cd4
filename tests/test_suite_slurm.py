"""The Slurm executor of experiment suites: submitit's code path end to end.

- `--executor submitit-local`: the Slurm executor's submission and job function run by submitit's
  LocalExecutor here (real jobs, real training), then `suite status --json`.
- A fake `sbatch`/`srun`/`squeue` on PATH: the Slurm options given on the CLI reach the sbatch script
  submitit writes, job.json records the job ids, and `suite status` turns Slurm's answers into states.
- A real one-node Slurm (`.ci/slurm_up.sh` brings one up): `--executor slurm` through real sbatch.
  Skipped without `sbatch` or when `sinfo` fails, unless WORKBENCH_REQUIRE_SLURM=1 (CI), then it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

if os.environ.get("WORKBENCH_REQUIRE_SLURM") == "1":
    import submitit  # required: an ImportError here fails the run instead of skipping it
else:
    submitit = pytest.importorskip("submitit", reason="submitit is not installed: pip install 'workbench[slurm]'")

from workbench.errors import WorkbenchError  # noqa: E402
from workbench.suites.executors import EXECUTORS  # noqa: E402
from workbench.suites.layout import CellPaths, SuitePaths  # noqa: E402
from workbench.suites.state import JobRecord, cell_state, mark_job  # noqa: E402

TINY = """\
name: tiny-slurm
seeds: [0, 1]
models:
  - name: plain
    profile: quickstart
    set: {epochs: 2, eval.robust_every: 0}
evaluations:
  - name: fgsm
    attacks: [fgsm]
    eps: [0.1]
    n: 50
"""


def suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def wb_env(extra_path: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUBMITIT_")}
    if os.environ.get("WORKBENCH_DATA"):
        env["WORKBENCH_DATA"] = os.environ["WORKBENCH_DATA"]
    if extra_path is not None:
        env["PATH"] = f"{extra_path}{os.pathsep}{env.get('PATH', '')}"
    return env


def wb(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True,
                          env=env or wb_env(), timeout=timeout)


def cells_of(runs: Path) -> list[CellPaths]:
    cells = sorted((runs / "suites" / "tiny-slurm" / "cells").iterdir())
    assert len(cells) == 2
    return [CellPaths(c) for c in cells]


def status_json(suite: Path, runs: Path, env: dict[str, str] | None = None) -> list[dict]:
    proc = wb("suite", "status", str(suite), "--runs", str(runs), "--json", env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# ---------------------------------------------------------------------------------------------------------
# submitit's LocalExecutor: real jobs on this machine


def test_submitit_local_runs_the_suite(tmp_path):
    suite, runs = suite_file(tmp_path), tmp_path / "runs"
    proc = wb("suite", "run", str(suite), "--runs", str(runs), "--executor", "submitit-local", "--jobs", "2",
              "--device", "cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for cell in cells_of(runs):
        record = JobRecord.read(cell.job)
        assert record is not None
        assert (record.executor, record.state, record.message) == ("submitit-local", "done", "")
        assert record.job_id and record.started and record.ended and record.threads == 1
        log = cell.log.read_text()
        assert f"job {record.job_id}" in log and "evaluation fgsm saved" in log  # the job's output is the cell's log
    assert list((runs / "suites" / "tiny-slurm" / "slurm").glob("*_result.pkl"))  # submitit's own files
    states = status_json(suite, runs)
    assert [s["state"] for s in states] == ["done", "done"]
    assert all(s["job"]["executor"] == "submitit-local" and s["evaluations_done"] == 1 for s in states)


# ---------------------------------------------------------------------------------------------------------
# A fake Slurm on PATH: what reaches sbatch, and how `suite status` reads the scheduler


FAKE_SBATCH = """#!/bin/sh
# Count submissions; keep each script; answer like sbatch.
n=$(cat "{dir}/count" 2>/dev/null || echo 4240); n=$((n + 1)); echo $n > "{dir}/count"
cp "$1" "{dir}/script-$n.sh"
echo "Submitted batch job $n"
"""
FAKE_SQUEUE = """#!/bin/sh
echo "$@" >> "{dir}/squeue-calls"
cat "{dir}/squeue-answer"
"""


def fake_slurm(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    scripts = {"sbatch": FAKE_SBATCH, "squeue": FAKE_SQUEUE, "srun": "#!/bin/sh\nexit 0\n",
               "sacct": "#!/bin/sh\necho 'Slurm accounting storage is disabled' >&2\nexit 1\n"}
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text.format(dir=bin_dir))
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


def test_cli_slurm_options_reach_sbatch_and_status_asks_slurm(tmp_path):
    suite, runs, bin_dir = suite_file(tmp_path), tmp_path / "runs", fake_slurm(tmp_path)
    env = wb_env(bin_dir)
    proc = wb("suite", "run", str(suite), "--runs", str(runs), "--executor", "slurm", "--partition", "p",
              "--gpus", "1", "--cpus", "3", "--time", "30", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4241" in proc.stderr and "4242" in proc.stderr and "workbench suite status tiny-slurm" in proc.stderr
    for n in (4241, 4242):
        script = (bin_dir / f"script-{n}.sh").read_text()
        for flag in ("--partition=p", "--gpus-per-node=1", "--cpus-per-task=3", "--time=30", "--nodes=1",
                     "--job-name=wb-tiny-slurm-plain-s"):
            assert flag in script, (flag, script)
        assert "submitit.core._submit" in script
    records = {JobRecord.read(c.job).job_id: (c, JobRecord.read(c.job)) for c in cells_of(runs)}
    assert set(records) == {"4241", "4242"}
    for cell, record in records.values():
        assert (record.executor, record.state, record.threads) == ("slurm", "queued", 3)
        assert record.submitted is not None
    # Nothing ran: status asks squeue once for both jobs. One runs; the other was cancelled before starting.
    (bin_dir / "squeue-answer").write_text("4241|RUNNING\n4242|CANCELLED\n")
    states = {s["job"]["job_id"]: s for s in status_json(suite, runs, env)}
    assert len((bin_dir / "squeue-calls").read_text().splitlines()) == 1
    assert states["4241"]["job"]["state"] == "running" and states["4241"]["state"] == "training"
    assert states["4242"]["state"] == "failed" and "CANCELLED" in states["4242"]["message"]
    assert JobRecord.read(records["4242"][0].job).state == "failed"  # written back to job.json
    # The controller forgot job 4241 (squeue answers "Invalid job id") and the worker recorded nothing.
    (bin_dir / "squeue").write_text("#!/bin/sh\necho 'slurm_load_jobs error: Invalid job id specified' >&2\nexit 1\n")
    states = {s["job"]["job_id"]: s for s in status_json(suite, runs, env)}
    assert states["4241"]["state"] == "failed" and "gone" in states["4241"]["message"]
    # A rerun submits both again (failed cells run again).
    proc = wb("suite", "run", str(suite), "--runs", str(runs), "--executor", "slurm", env=env)
    assert proc.returncode == 0, proc.stderr
    assert {JobRecord.read(c.job).job_id for c in cells_of(runs)} == {"4243", "4244"}
    script = (bin_dir / "script-4243.sh").read_text()
    assert "--partition" not in script and "--gpus-per-node" not in script  # the suite's defaults: none given
    assert "--cpus-per-task=4" in script and "--time=240" in script


FORK_SUITE = """\
name: tiny-forks
seeds: [0]
models:
  - name: fork
    profile: quickstart
    fork_from: source
    set: {epochs: 2, defense: pcl, defense.warmup_epochs: 1, defense.heads: [fc1], adv_train.phases: last_phase,
          adv_train.attack: fgsm}
  - name: source
    profile: quickstart
    set: {epochs: 2, defense: pcl, defense.warmup_epochs: 1, defense.heads: [fc1], adv_train.phases: last_phase}
evaluations:
  - name: fgsm
    attacks: [fgsm]
    eps: [0.1]
    n: 50
"""


def dependency_of(bin_dir: Path, job: int) -> str | None:
    # submitit shell-quotes a value with "?" in it
    found = [ln.split("=", 1)[1].strip("'") for ln in (bin_dir / f"script-{job}.sh").read_text().splitlines()
             if ln.startswith("#SBATCH --dependency=")]
    return found[0] if found else None


@pytest.mark.parametrize("slurm_block, given", [
    ("", None),
    ("slurm: {extra: {dependency: 'afterok:17'}}\n", "afterok:17"),
    ("slurm: {extra: {additional_parameters: {dependency: 'afterok:17'}}}\n", "afterok:17"),  # would replace ours
    ("slurm: {fork_wait: false}\n", None),
])
def test_a_fork_job_waits_for_its_source_job(tmp_path, slurm_block, given):
    suite, runs, bin_dir = tmp_path / "forks.yaml", tmp_path / "runs", fake_slurm(tmp_path)
    suite.write_text(FORK_SUITE + slurm_block)
    env = wb_env(bin_dir)
    waits = "fork_wait: false" not in slurm_block
    expected = ",".join(filter(None, [given, "afterany:{source}" if waits else None])) or None
    proc = wb("suite", "run", str(suite), "--runs", str(runs), "--executor", "slurm", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = {json.loads(c.plan.read_text())["model"]: c
             for c in map(CellPaths, (runs / "suites" / "tiny-forks" / "cells").iterdir())}
    assert json.loads(cells["fork"].plan.read_text())["fork"]["epochs"] == 1  # the shared CE warm-up
    jobs = {m: int(JobRecord.read(c.job).job_id) for m, c in cells.items()}
    assert jobs == {"source": 4241, "fork": 4242}  # the source first, though the suite lists the fork first
    assert dependency_of(bin_dir, 4241) == given
    assert dependency_of(bin_dir, 4242) == (expected and expected.format(source=4241))
    if not waits:
        return
    assert "after job 4241" in proc.stderr
    # The fork's job was cancelled, its source is still pending: the rerun's fork waits for that job again.
    (bin_dir / "squeue-answer").write_text("4241|PENDING\n4242|CANCELLED\n")
    proc = wb("suite", "run", str(suite), "--runs", str(runs), "--executor", "slurm", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"skip {cells['source'].root.name}: already running" in proc.stderr
    assert int(JobRecord.read(cells["fork"].job).job_id) == 4243
    assert dependency_of(bin_dir, 4243) == expected.format(source=4241)
    # Only the fork is chosen: the source's record is checked with Slurm before the fork depends on it.
    (bin_dir / "squeue-answer").write_text("4241|PENDING\n4243|CANCELLED\n")
    proc = wb("suite", "run", str(suite), "--runs", str(runs), "--executor", "slurm", "--models", "fork", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dependency_of(bin_dir, 4244) == expected.format(source=4241)
    # Slurm has forgotten the source's job (a dependency on it would be refused): the fork no longer waits.
    (bin_dir / "squeue-answer").write_text("4244|CANCELLED\n")
    proc = wb("suite", "run", str(suite), "--runs", str(runs), "--executor", "slurm", "--models", "fork", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert int(JobRecord.read(cells["fork"].job).job_id) == 4245
    assert dependency_of(bin_dir, 4245) == given


def test_a_dependency_a_fork_wait_cannot_join_is_refused_before_any_job(tmp_path):
    suite, runs, bin_dir = tmp_path / "forks.yaml", tmp_path / "runs", fake_slurm(tmp_path)
    suite.write_text(FORK_SUITE + "slurm: {extra: {dependency: 'afterok:17?afterok:18'}}\n")
    proc = wb("suite", "run", str(suite), "--runs", str(runs), "--executor", "slurm", env=wb_env(bin_dir))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "fork_wait: false" in proc.stderr and "'?'" in proc.stderr
    assert not list(bin_dir.glob("script-*.sh"))  # nothing submitted
    suite.write_text(FORK_SUITE + "slurm: {fork_wait: false, extra: {dependency: 'afterok:17?afterok:18'}}\n")
    proc = wb("suite", "run", str(suite), "--runs", str(runs), "--executor", "slurm", env=wb_env(bin_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dependency_of(bin_dir, 4241) == dependency_of(bin_dir, 4242) == "afterok:17?afterok:18"


def test_suite_slurm_settings_and_extra_reach_the_sbatch_script(tmp_path, monkeypatch):
    from workbench.suites.slurm import apply_parameters, submitit_parameters

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # no srun needed
    params = submitit_parameters({"partition": "gpu", "gpus": 2, "cpus": 8, "time_min": 90, "mem_gb": 16,
                                  "extra": {"account": "lab", "slurm_qos": "high"}}, "wb-x", 8)
    auto = submitit.AutoExecutor(folder=tmp_path / "a", cluster="slurm")
    apply_parameters(auto, params)
    text = auto._executor._make_submission_file_text("true", "uid")
    for flag in ("--partition=gpu", "--gpus-per-node=2", "--cpus-per-task=8", "--time=90", "--mem=16GB",
                 "--account=lab", "--qos=high", "--job-name=wb-x"):
        assert flag in text, (flag, text)
    bare = submitit.SlurmExecutor(folder=tmp_path / "b")  # a bare executor from a factory works too
    apply_parameters(bare, params)
    assert bare._make_submission_file_text("true", "uid").replace(str(tmp_path / "b"), "F") == \
        text.replace(str(tmp_path / "a"), "F")
    local = submitit.LocalExecutor(folder=tmp_path / "c")
    apply_parameters(local, params)
    assert local.parameters == {"timeout_min": 90, "gpus_per_node": 2, "nodes": 1, "tasks_per_node": 1}


def test_executor_factory_and_registry(tmp_path):
    from workbench.suites.slurm import SlurmExecutor, SubmititLocalExecutor

    assert isinstance(EXECUTORS.get("slurm")(), SlurmExecutor)
    local = EXECUTORS.get("submitit-local")()
    assert isinstance(local, SubmititLocalExecutor) and local.wait and local.name == "submitit-local"
    made = []
    ex = SlurmExecutor(make_executor=lambda folder: made.append(folder) or submitit.LocalExecutor(folder))
    from workbench.suites.executors import RunContext

    cell = CellPaths(tmp_path / "runs" / "suites" / "s" / "cells" / "k")
    cell.root.mkdir(parents=True)
    executor = ex.prepare([cell], RunContext(suite="s", slurm={"cpus": 2, "time_min": 5}), 2)
    assert made == [cell.root.resolve().parent.parent / "slurm"] and isinstance(executor, submitit.LocalExecutor)
    assert executor.parameters["timeout_min"] == 5


def test_missing_submitit_or_sbatch_is_one_line(monkeypatch, tmp_path):
    from workbench.suites import slurm

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    with pytest.raises(WorkbenchError, match="sbatch is not on PATH"):
        slurm.slurm_executor(tmp_path)
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(WorkbenchError, match=r"pip install 'workbench\[slurm\]'"):
        slurm.local_executor(tmp_path)


def test_refresh_without_scheduler_keeps_states_and_settles_dead_local_jobs(tmp_path, monkeypatch):
    from workbench.suites import slurm
    from workbench.suites.state import CellState

    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue, no sacct
    paths = SuitePaths(tmp_path / "suite")
    cell = paths.cell("m-s0-x")
    cell.root.mkdir(parents=True)
    cell.plan.write_text(json.dumps({"model": "m", "seed": 0, "config": {"epochs": 1}, "evaluations": [{}]}))
    mark_job(cell, executor="slurm", state="queued", job_id="77")
    st = cell_state(cell)
    slurm.refresh_states([st], paths)
    assert st.state == "queued" and JobRecord.read(cell.job).state == "queued"
    # A submitit-local job on this host whose process is gone: stopped (a rerun continues it).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mark_job(cell, executor="submitit-local", state="running", pid=dead.pid, host="", job_id=str(dead.pid))
    st = cell_state(cell)
    assert isinstance(st, CellState) and st.state == "training"
    slurm.refresh_states([st], paths)
    assert st.state == "stopped" and JobRecord.read(cell.job).state == "stopped"


# ---------------------------------------------------------------------------------------------------------
# A real Slurm


def _slurm_ready() -> str | None:
    """None when a Slurm cluster with a usable node answers here, else why not."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH (bring up a one-node Slurm with .ci/slurm_up.sh)"
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"sinfo failed: {exc}"
    if out.returncode != 0:
        return f"sinfo failed: {(out.stderr or out.stdout).strip()[:200]}"
    states = out.stdout.split()
    if not any(s.rstrip("*~#!%$@^-").lower() in ("idle", "mixed", "allocated", "completing") for s in states):
        return f"no Slurm node is up (sinfo: {', '.join(states) or 'no nodes'})"
    return None


def test_real_slurm_runs_the_suite_and_a_fork_waits_for_its_source(tmp_path):
    why = _slurm_ready()
    if why is not None:
        if os.environ.get("WORKBENCH_REQUIRE_SLURM") == "1":
            pytest.fail(f"WORKBENCH_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)
    suite, runs = tmp_path / "forks.yaml", tmp_path / "runs"
    suite.write_text(FORK_SUITE)
    proc = wb("suite", "run", str(suite), "--runs", str(runs), "--executor", "slurm", "--cpus", "1", "--time", "10",
              "--device", "cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = {json.loads(c.plan.read_text())["model"]: c
             for c in map(CellPaths, (runs / "suites" / "tiny-forks" / "cells").iterdir())}
    job_ids = {JobRecord.read(c.job).job_id for c in cells.values()}
    assert len(job_ids) == 2 and None not in job_ids
    deadline = time.time() + 300
    while True:
        states = status_json(suite, runs)
        if all(s["state"] in ("done", "failed", "stopped") for s in states) or time.time() > deadline:
            break
        time.sleep(2)
    logs = "\n".join(Path(c.log).read_text() if c.log.exists() else "" for c in cells.values())
    assert [s["state"] for s in states] == ["done", "done"], (states, logs)
    assert {s["job"]["job_id"] for s in states} == job_ids and all(s["job"]["executor"] == "slurm" for s in states)
    # The fork's job started after its source's ended, from the source's state after the shared epoch.
    source, fork = (JobRecord.read(cells[m].job) for m in ("source", "fork"))
    assert fork.started >= source.ended, (source, fork)
    meta = json.loads((cells["fork"].run().root / "run.json").read_text())
    assert meta["forked_from"] == {"snapshot": str(cells["source"].run().snapshot(1)), "epochs": 1}
