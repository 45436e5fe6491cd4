"""Fuzzing the readers of run folders: whatever another process leaves in a run's files, reading them
raises nothing but WorkbenchError, and listing the runs raises nothing at all.

Each property runs twice: in the default suite with few examples, and marked slow with many more
(`pytest -m slow tests/test_fuzz_run_folders.py`).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.errors import WorkbenchError
from workbench.runs import RunPaths, Status, effective_state, list_runs, pid_alive, read_json, read_metrics, \
    summarize
from workbench.runs.files import MAX_LINE_BYTES, load_json
from workbench.runs.status import MAX_TEXT, PID_MAX
from workbench.runs.tail import JsonlTail

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILES = ("config.yaml", "status.json", "metrics.jsonl", "run.json")
FIELDS = tuple(Status.__dataclass_fields__)

# -- what a file may hold ------------------------------------------------------------------------

numbers = st.one_of(st.integers(), st.integers(min_value=-(10**40), max_value=10**40), st.floats(),
                    st.sampled_from([10**30, 2**31, 2**63, -1, 0, 1]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=40))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
# Objects with the status fields, each of any JSON type: the case readers must sort out field by field.
status_like = st.fixed_dictionaries({}, optional={k: json_values for k in FIELDS})
record_like = st.fixed_dictionaries({}, optional={k: json_values for k in (
    "kind", "epoch", "step", "test_clean_acc", "test_robust_acc", "train_loss", "time")})
bombs = st.builds(lambda n, c: c * n, st.integers(1, 120_000), st.sampled_from(["[", "{", '{"a":', "- ", "[{"]))


def dumped(values) -> st.SearchStrategy[str]:
    return values.map(json.dumps)  # NaN and Infinity come out as their non-standard JSON tokens


def _mutate(text: str, cut: int, junk: bytes) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    return raw[:cut] + junk + raw[cut:]


file_bytes = st.one_of(
    st.binary(max_size=300),
    dumped(json_values).map(lambda s: s.encode("utf-8", "surrogatepass")),
    dumped(status_like).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
    bombs.map(str.encode),
    st.builds(_mutate, dumped(status_like), st.integers(0, 100), st.binary(min_size=1, max_size=4)),
)
jsonl_bytes = st.lists(st.one_of(dumped(record_like), dumped(json_values), st.text(max_size=60), bombs,
                                 st.just('{"kind": "epoch", "epoch": 1, "test_clean_acc": NaN}')),
                       max_size=12).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))
yaml_bytes = st.one_of(
    file_bytes,
    st.lists(st.sampled_from(["a: 1\n", "model: {name: x}\n", "- x\n", "  b: [\n", "&a [*a]\n", "epochs: 1e999\n",
                              "dataset: !!binary x\n", "x: *nope\n", "? [1]\n: 2\n", "\t\n", "epochs: -3\n",
                              "defense: [1, 2]\n"]), max_size=8).map(lambda parts: "".join(parts).encode()),
)
folders = st.fixed_dictionaries({}, optional={
    "config.yaml": yaml_bytes, "status.json": file_bytes, "metrics.jsonl": st.one_of(jsonl_bytes, file_bytes),
    "run.json": file_bytes, "checkpoints/": st.just(b"")})


class Scratch:
    """A fresh folder per example (pytest's tmp_path is per test, hypothesis runs many examples in one)."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="fuzz-runs-"))
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def write_folder(root: Path, files: dict[str, bytes]) -> None:
    root.mkdir(parents=True)
    for name, content in files.items():
        if name.endswith("/"):
            (root / name).mkdir()
        else:
            (root / name).write_bytes(content)


# -- the properties ------------------------------------------------------------------------------

def check_status(raw: bytes) -> None:
    with Scratch() as tmp:
        path = tmp / "status.json"
        path.write_bytes(raw)
        status, problem = Status.read_checked(path)
        assert (Status.read(path) is None) == (status is None)  # (equal but for the default times)
        assert isinstance(problem, str) and "\n" not in problem
        if status is None:
            return
        for name in ("epoch", "epochs", "step", "batch", "batches"):
            value = getattr(status, name)
            assert type(value) is int and 0 <= value < 2**63
        assert status.pid is None or (type(status.pid) is int and 0 < status.pid <= PID_MAX)
        for name in ("started", "updated", "best_clean", "best_robust", "last_clean", "last_robust"):
            value = getattr(status, name)
            assert value is None or (type(value) in (int, float) and math.isfinite(value) and abs(value) < 2**63)
        for name in ("state", "host", "message", "device"):
            value = getattr(status, name)
            assert isinstance(value, str) and len(value) <= MAX_TEXT + 1
            value.encode("utf-8")  # printable to any UTF-8 terminal: no lone surrogates
        pid_alive(status.pid)
        assert isinstance(effective_state(status), str)


def check_json(raw: bytes) -> None:
    with Scratch() as tmp:
        path = tmp / "run.json"
        path.write_bytes(raw)
        data = read_json(path)
        assert data is None or isinstance(data, dict)
        try:
            assert load_json(path) == data
        except WorkbenchError as exc:
            assert data is None and "\n" not in str(exc)


def check_metrics(raw: bytes, cuts: list[int]) -> None:
    with Scratch() as tmp:
        path = tmp / "metrics.jsonl"
        path.write_bytes(raw)
        whole = list(read_metrics(path))
        for rec in whole:
            assert isinstance(rec, dict)
            json.dumps(rec, allow_nan=False)  # no NaN, no inf, nothing too deep to write back
        # The same bytes appended in pieces, read by a tail after each piece: the same records.
        tail, got = JsonlTail(tmp / "tailed.jsonl"), []
        with open(tmp / "tailed.jsonl", "wb") as fh:
            for a, b in zip([0, *cuts], [*cuts, len(raw)]):
                fh.write(raw[a:b])
                fh.flush()
                records, reset = tail.read()
                assert not reset
                got += records
        assert got == whole


def check_folder(files: dict[str, bytes]) -> None:
    with Scratch() as tmp:
        root = tmp / "runs" / "run-20260101-000000"
        write_folder(root, files)
        run = RunPaths(root)
        summary = summarize(run) if files else None
        listed = list_runs(tmp / "runs")  # young folders without config.yaml are skipped as being created
        if summary is None:
            assert listed == []
            return
        # (a status without times reads as started now: compare what does not move)
        assert [(s.path, s.state, s.message) for s in listed] in ([], [(root, summary.state, summary.message)])
        assert listed or "config.yaml" not in files
        assert isinstance(summary.state, str) and isinstance(summary.message, str)
        if summary.state == "unreadable":
            assert summary.message and "\n" not in summary.message and len(summary.message) <= 300
        for text in (summary.name, summary.state, summary.dataset, summary.model, summary.defense):
            text.encode("utf-8")
        read_json(root / "run.json")


def check_many_folders(folders_: list[dict[str, bytes]]) -> None:
    """Several broken runs beside a good one: all are listed, the good one as it is."""
    with Scratch() as tmp:
        runs = tmp / "runs"
        write_folder(runs / "good", {"config.yaml": b"dataset: digits\n",
                                     "status.json": json.dumps({"state": "finished", "started": 1.0}).encode()})
        for i, files in enumerate(folders_):
            write_folder(runs / f"r{i}", {"config.yaml": b"", **files})
        listed = {s.name: s for s in list_runs(runs)}
        assert set(listed) == {"good", *(f"r{i}" for i in range(len(folders_)))}
        assert listed["good"].state == "finished" and listed["good"].dataset == "digits"


def variants(strategy_args: tuple, check):
    """The property as two tests: the default suite's (FAST), and a slow one with MANY examples."""
    fast = FAST(given(*strategy_args)(check))
    many = pytest.mark.slow(MANY(given(*strategy_args)(check)))
    return fast, many


cuts = st.lists(st.integers(0, 2000), max_size=5).map(sorted)

test_status_read, test_status_read_many = variants((file_bytes,), check_status)
test_read_json, test_read_json_many = variants((file_bytes,), check_json)
test_metrics_readers, test_metrics_readers_many = variants((st.one_of(jsonl_bytes, file_bytes), cuts), check_metrics)
test_run_folder, test_run_folder_many = variants((folders,), check_folder)
test_many_run_folders, test_many_run_folders_many = variants((st.lists(folders, max_size=4),), check_many_folders)


def test_a_line_longer_than_the_limit_is_no_record_but_the_next_one_is():
    line = b'{"kind": "epoch", "pad": "' + b"x" * MAX_LINE_BYTES + b'"}\n'
    with Scratch() as tmp:
        path = tmp / "metrics.jsonl"
        path.write_bytes(line + b'{"ok": 1}\n')
        assert list(read_metrics(path)) == [{"ok": 1}]
        assert JsonlTail(path).read() == ([{"ok": 1}], False)
