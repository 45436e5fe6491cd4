"""Following the metrics stream and logs the way the TUI does."""

from __future__ import annotations

import json
import os

from workbench.runs import write_text_atomic
from workbench.runs.tail import JsonlTail, tail_lines


def test_returns_only_complete_lines_and_keeps_the_partial_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = JsonlTail(path)
    assert tail.read() == ([], False)  # no file yet
    with open(path, "w") as fh:
        fh.write(json.dumps({"kind": "epoch", "epoch": 1}) + "\n" + '{"kind": "epoch", "ep')
    records, reset = tail.read()
    assert [r["epoch"] for r in records] == [1] and not reset
    assert tail.read() == ([], False)  # the partial line is not returned again, nor parsed
    with open(path, "a") as fh:
        fh.write('och": 2}\n{"kind": "step"}\n')
    records, _ = tail.read()
    assert records == [{"kind": "epoch", "epoch": 2}, {"kind": "step"}]


def test_skips_garbage_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('not json\n[1, 2]\n{"a": 1}\n')
    assert JsonlTail(path).read() == ([{"a": 1}], False)


def test_a_rewritten_stream_is_read_from_the_start_and_flagged(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(5)))
    tail = JsonlTail(path)
    assert len(tail.read()[0]) == 5
    # A resume truncates the stream to the checkpoint's position with an atomic replace (new inode).
    write_text_atomic(path, json.dumps({"i": 0}) + "\n")
    records, reset = tail.read()
    assert reset and records == [{"i": 0}]
    # In-place truncation is noticed too.
    with open(path, "w") as fh:
        fh.write("")
    assert tail.read() == ([], True)


def test_tail_lines_keeps_the_last_redraw_of_progress_lines(tmp_path):
    path = tmp_path / "train.log"
    path.write_text("start\nepoch 1 10%\repoch 1 50%\repoch 1 100%\nerror: boom\n")
    assert tail_lines(path, 2) == ["epoch 1 100%", "error: boom"]
    assert tail_lines(tmp_path / "missing.log") == []


def test_tail_lines_reads_only_the_end_of_a_big_log(tmp_path):
    path = tmp_path / "big.log"
    with open(path, "w") as fh:
        for i in range(50_000):
            fh.write(f"line {i}\n")
    assert os.path.getsize(path) > 256 * 1024
    lines = tail_lines(path, 3)
    assert lines == ["line 49997", "line 49998", "line 49999"]
    assert all(line.startswith("line ") for line in tail_lines(path, 10_000))  # no cut first line
