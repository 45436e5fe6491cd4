"""A run folder that cannot be read is a row saying why, never a crash or a silently missing run.

Each defect is built by hand the way another process (a crash, another version, a hostile file) leaves it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from workbench.errors import WorkbenchError
from workbench.runs import Status, delete_run, effective_state, list_runs, new_run_dir, pid_alive, read_json, \
    read_metrics
from workbench.runs.files import MAX_JSON_BYTES, load_json
from workbench.runs.tail import JsonlTail
from workbench.tui.model.compare import RunFollower

REPO = Path(__file__).resolve().parents[1]
OLD = time.time() - 3600  # folder mtime of a broken run: well past the "being created" grace


def good_run(runs: Path, name: str, started: float, state: str = "finished") -> Path:
    run = new_run_dir(runs, name)
    run.config.write_text(f"name: {name}\ndataset: digits\nepochs: 3\nmodel:\n  name: tiny\ndefense:\n  name: pcl\n")
    Status(state=state, started=started, epoch=3, epochs=3, best_clean=0.9, best_robust=0.5,
           message="boom [/x]" if state == "failed" else "").write(run.status)
    with open(run.metrics, "w") as fh:
        fh.write(json.dumps({"kind": "epoch", "epoch": 1, "test_clean_acc": 0.9}) + "\n")
    return run.root


def broken(runs: Path, name: str, files: dict[str, str | bytes], status: dict | None = None) -> Path:
    root = runs / name
    root.mkdir(parents=True)
    for rel, content in files.items():
        path = root / rel
        if rel.endswith("/"):
            path.mkdir()
        elif content == FIFO:
            os.mkfifo(path)  # opening one for reading would wait for a writer forever
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    if status is not None:
        (root / "status.json").write_text(json.dumps(status))
    os.utime(root, (OLD, OLD))
    return root


CONFIG = "dataset: digits\nmodel: {name: tiny}\n"
FIFO = "<a named pipe>"
# name -> (files, status, what the reason says)
DEFECTS = {
    "nested-config": ({"config.yaml": "[" * 5000}, None, "config.yaml: invalid YAML"),
    "list-config": ({"config.yaml": "- a\n- b\n"}, None, "config.yaml: not a mapping"),
    "bad-yaml": ({"config.yaml": "a: [\n"}, None, "config.yaml:2: invalid YAML"),
    "binary-config": ({"config.yaml": b"\xff\xfe\x00garbage"}, None, "config.yaml: not UTF-8"),
    "empty-config": ({"config.yaml": ""}, None, "config.yaml: empty"),
    "config-is-a-folder": ({"config.yaml/": ""}, None, "config.yaml: a folder"),
    "no-config": ({}, {"state": "finished", "started": OLD}, "no config.yaml"),
    "only-checkpoints": ({"checkpoints/": ""}, None, "no config.yaml"),
    "only-metrics": ({"metrics.jsonl": "garbage\n"}, None, "no config.yaml"),
    "huge-pid": ({"config.yaml": CONFIG}, {"state": "running", "pid": 10**30, "started": OLD},
                 "status.json: pid out of range"),
    "negative-pid": ({"config.yaml": CONFIG}, {"state": "running", "pid": -1}, "status.json: pid out of range"),
    "zero-pid": ({"config.yaml": CONFIG}, {"state": "running", "pid": 0}, "status.json: pid out of range"),
    "bad-status": ({"config.yaml": CONFIG, "status.json": '{"state": "runn'}, None, "status.json: invalid JSON"),
    "deep-status": ({"config.yaml": CONFIG, "status.json": "[" * 100_000}, None, "status.json: invalid JSON"),
    "list-status": ({"config.yaml": CONFIG, "status.json": "[1, 2]"}, None, "status.json: not a JSON object"),
    "binary-status": ({"config.yaml": CONFIG, "status.json": b'{"state": "\xff"}'}, None, "status.json: not UTF-8"),
    "fifo-status": ({"config.yaml": CONFIG, "status.json": FIFO, "metrics.jsonl": FIFO, "train.log": FIFO}, None,
                    "status.json: not a regular file"),
    "fifo-config": ({"config.yaml": FIFO}, None, "config.yaml: not a regular file"),
}


def build_all(runs: Path) -> tuple[list[Path], dict[str, Path]]:
    good = [good_run(runs, f"good{i}", OLD + i, state="failed" if i == 0 else "finished") for i in range(4)]
    bad = {name: broken(runs, name, files, status) for name, (files, status, _) in DEFECTS.items()}
    (runs / "unrelated").mkdir()  # no run file: not a run
    (runs / "unrelated" / "notes.txt").write_text("hello")
    (runs / "stray-file.txt").write_text("not a folder")
    return good, bad


def test_every_good_run_and_one_unreadable_row_per_broken_folder(tmp_path):
    runs = tmp_path / "runs"
    good, bad = build_all(runs)
    summaries = {s.path.name: s for s in list_runs(runs)}
    assert set(summaries) == {p.name for p in good} | set(bad)
    for p in good:
        assert summaries[p.name].state in ("finished", "failed")
        assert summaries[p.name].dataset == "digits" and summaries[p.name].best_clean == 0.9
    for name, (_, _, reason) in DEFECTS.items():
        s = summaries[name]
        assert s.state == "unreadable", name
        assert s.message.startswith(reason), (name, s.message)
        assert "\n" not in s.message and len(s.message) <= 300


def test_readable_parts_of_an_unreadable_run_are_still_shown(tmp_path):
    runs = tmp_path / "runs"
    root = broken(runs, "huge-pid", {"config.yaml": CONFIG},
                  {"state": "running", "pid": 10**30, "epoch": 2, "epochs": 5, "best_clean": 0.7})
    [s] = list_runs(runs)
    assert (s.state, s.dataset, s.model, s.epoch, s.epochs, s.best_clean) == ("unreadable", "digits", "tiny", 2, 5, 0.7)
    # Both problems at once are both told.
    (root / "config.yaml").write_text("[" * 5000)
    [s] = list_runs(runs)
    assert "config.yaml: invalid YAML" in s.message and "status.json: pid out of range" in s.message


def test_a_folder_being_created_is_not_yet_a_broken_run(tmp_path):
    runs = tmp_path / "runs"
    new_run_dir(runs, "fresh")  # checkpoints/ and evals/ exist; config.yaml comes a moment later
    assert list_runs(runs) == []


def test_a_run_without_status_takes_its_best_from_a_messy_metrics_stream(tmp_path):
    runs = tmp_path / "runs"
    root = broken(runs, "ok", {"config.yaml": CONFIG})
    lines = ["[" * 100_000, "garbage", json.dumps({"kind": "epoch", "test_clean_acc": "high"}),
             '{"kind": "epoch", "test_clean_acc": NaN, "test_robust_acc": Infinity}',
             json.dumps({"kind": "epoch", "test_clean_acc": 0.4, "test_robust_acc": 0.2}),
             '{"kind": "epoch", "test_clean_acc": 1e400}', '{"kind": "epoch", "test_clean_acc": true}']
    (root / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    [s] = list_runs(runs)
    assert (s.state, s.best_clean, s.best_robust) == ("unknown", 0.4, 0.2)


def test_status_fields_out_of_range_are_dropped_and_wrong_types_still_are(tmp_path):
    path = tmp_path / "status.json"
    path.write_text('{"state": "running", "pid": 100000000000000000000000000000, "epoch": 100000000000000000000000,'
                    ' "step": -3, "started": 1e400, "updated": NaN, "best_clean": Infinity, "last_clean": 0.5,'
                    ' "batch": "x", "epochs": true, "message": "' + "m" * 10_000 + '", "device": "\\ud800"}')
    status, problem = Status.read_checked(path)
    assert problem == "status.json: pid out of range"
    assert status.pid is None and status.epoch == 0 and status.step == 0 and status.batch == 0 and status.epochs == 0
    assert status.best_clean is None and status.last_clean == 0.5 and status.started != 1e400
    assert len(status.message) <= 4097 and status.device == "?"
    assert effective_state(status) == "stopped"  # no pid to probe: the trainer is not known to be alive


@pytest.mark.parametrize("pid", [10**30, 2**31, 2**63, -1, 0, True, None, "12"])
def test_pid_alive_is_false_for_any_impossible_pid(pid):
    assert pid_alive(pid) is False


def test_pid_alive_still_sees_a_live_process():
    assert pid_alive(os.getpid())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_pid_alive_is_false_for_a_zombie_that_is_not_our_child():
    # `sleep 0` exits, and its parent (exec'd into `sleep 5`) never reaps it: a zombie os.kill(pid, 0) still finds.
    shell = subprocess.Popen(["sh", "-c", "sleep 0 & echo $!; exec sleep 5"], stdout=subprocess.PIPE, text=True)
    try:
        zombie = int(shell.stdout.readline())
        deadline = time.time() + 10
        while Path(f"/proc/{zombie}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.time() < deadline, "the child never exited"
            time.sleep(0.01)
        assert not pid_alive(zombie)
    finally:
        shell.kill()
        shell.wait()


def test_json_and_metrics_readers_refuse_huge_files_without_reading_them(tmp_path):
    big = tmp_path / "status.json"
    with open(big, "wb") as fh:
        fh.truncate(2 << 30)  # 2 GiB, sparse
    tracemalloc.start()
    try:
        assert read_json(big) is None
        with pytest.raises(WorkbenchError, match="larger than 16 MiB"):
            load_json(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * MAX_JSON_BYTES + (4 << 20)
    assert load_json(tmp_path / "missing.json") is None


def test_metrics_readers_skip_huge_lines_with_bounded_memory(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with open(path, "wb") as fh:
        fh.write(b'{"kind": "epoch", "epoch": 1}\n')
        fh.write(b"7" * (3 << 20) + b"\n")  # one 3 MiB line
        fh.write(b'{"kind": "epoch", "epoch": 2}\n')
        fh.seek(200 << 20)  # then 200 MiB of NUL bytes without a newline, a line that never ends
        fh.write(b"\n" + b'{"kind": "epoch", "epoch": 3}\n{"partial')
    tracemalloc.start()
    try:
        assert [r["epoch"] for r in read_metrics(path)] == [1, 2, 3]
        metrics_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        tail, got, reads = JsonlTail(path), [], 0
        while reads < 40:  # a poller: each read takes a bounded slice
            records, reset = tail.read()
            assert not reset
            got += [r["epoch"] for r in records]
            reads += 1
        tail_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [1, 2, 3]
    assert metrics_peak < 8 << 20 and tail_peak < 80 << 20


def test_metrics_lines_that_are_bombs_or_not_finite_are_skipped_or_nulled(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(["[" * 100_000, "{" * 50_000, '{"a": ' * 70 + "1" + "}" * 70, "null", "\x00",
                               '{"loss": NaN, "n": 1e400, "big": 100000000000000000000000}',
                               '{"ok": 1}', ""]))
    expected = [{"loss": None, "n": None, "big": None}, {"ok": 1}]
    assert list(read_metrics(path)) == expected
    assert JsonlTail(path).read() == (expected, False)


def test_delete_works_on_broken_runs_like_on_other_stopped_ones(tmp_path):
    runs = tmp_path / "runs"
    _, bad = build_all(runs)
    for name in ("no-config", "huge-pid", "bad-status", "nested-config", "only-checkpoints"):
        delete_run(bad[name])
        assert not bad[name].exists()
    with pytest.raises(WorkbenchError, match="not a run folder"):
        delete_run(runs / "unrelated")


def test_compare_follower_reads_a_broken_run_without_raising(tmp_path):
    runs = tmp_path / "runs"
    root = broken(runs, "x", {"config.yaml": "[" * 5000, "metrics.jsonl": "[" * 100_000 + "\n",
                              "evals/": ""}, {"state": "running", "pid": 10**30})
    (root / "evals" / "r.json").write_text(json.dumps({"results": [{"eps": 10**400, "robust_accuracy": 1}],
                                                       "clean_accuracy": 10**400}))
    follower = RunFollower(root)
    follower.refresh()
    assert "invalid YAML" in follower.view().error
    (root / "config.yaml").write_text(CONFIG)
    follower.refresh()
    view = follower.view()
    assert not view.error and view.state == "stopped" and view.evals is not None and view.evals.clean is None


# -- the command line ----------------------------------------------------------------------

def workbench_runs(runs: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "workbench", "runs", "--runs", str(runs), *args], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=120)


def test_workbench_runs_lists_good_and_unreadable_runs(tmp_path):
    runs = tmp_path / "runs"
    good, bad = build_all(runs)
    # Markup and an unencodable surrogate in a failed run's message must print, not crash.
    broken(runs, "failed-markup", {"config.yaml": CONFIG},
           {"state": "failed", "message": "[/x] \ud800 [bold]", "started": OLD})
    table = workbench_runs(runs)
    assert table.returncode == 0, table.stderr
    assert "Traceback" not in table.stdout + table.stderr
    for p in good:
        assert p.name in table.stdout
    rows = [line for line in table.stdout.splitlines() if " unreadable " in line]
    assert len(rows) == len(bad)
    for name, (_, _, reason) in DEFECTS.items():
        assert f"{name}: {reason}" in table.stdout, name  # the reason, under the table
    assert f"{good[0].name}: boom [/x]" in table.stdout and "failed-markup: [/x] ? [bold]" in table.stdout

    listed = workbench_runs(runs, "--json")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr
    by_name = {r["name"]: r for r in json.loads(listed.stdout)}
    assert set(by_name) == {p.name for p in good} | set(bad) | {"failed-markup"}
    for name, (_, _, reason) in DEFECTS.items():
        assert by_name[name]["state"] == "unreadable" and by_name[name]["message"].startswith(reason)

    latest = workbench_runs(runs, "--latest")  # the newest run that later commands can open
    assert latest.returncode == 0 and Path(latest.stdout.strip()) == good[3]
