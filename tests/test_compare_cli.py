"""`workbench compare RUN...`: robust accuracy per attack × eps across runs, each number and interval the one
its saved report holds, in md, csv, latex and json; bad input is one `error:` line.

Copies of the real quickstart run with real evaluations: last.pt once, then best.pt twice (the newer with
fewer samples, so which report a number came from shows), and a copy never evaluated."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.compare.table import build_compare_table
from workbench.runs import RunPaths
from workbench.suites.render import cell_text


def _copy(source: RunPaths, to: Path) -> RunPaths:
    # Without the shared run's evaluations: other tests save theirs there, in any order.
    shutil.copytree(source.root, to, ignore=lambda folder, names: names if folder.endswith("/evals") else [])
    return RunPaths(to)


@pytest.fixture(scope="module")
def runs(quickstart_run, tmp_path_factory):
    """{"evaluated": run, "bare": run, "older"/"newer"/"last": their reports (dicts with "path")}."""
    from workbench.evaluation import AttackSpec, Protocol, evaluate_checkpoint, save_evaluation

    root = tmp_path_factory.mktemp("compare")
    evaluated, bare = _copy(quickstart_run, root / "evaluated"), _copy(quickstart_run, root / "bare")
    fgsm = AttackSpec("fgsm", {}, [0.05, 0.1], "FGSM")
    out = {"evaluated": evaluated, "bare": bare, "root": root}
    for key, ckpt, specs, n in (("last", evaluated.last, [AttackSpec("fgsm", {}, [0.2], "FGSM")], 30),
                                ("older", evaluated.best, [fgsm], 50),
                                ("newer", evaluated.best, [AttackSpec("fgsm", {}, [0.1], "FGSM"),
                                                          AttackSpec("pgd", {"steps": 3}, [0.1], "PGD-3")], 40)):
        report, outcomes = evaluate_checkpoint(ckpt, [Protocol("custom", specs)], n=n)
        out[key] = {**report, "path": str(save_evaluation(report, outcomes))}
    return out


def _entry(report: dict, name: str) -> tuple[float, list[float], int]:
    """(robust accuracy, 95% interval, n) of a metric as the report holds it."""
    if name == "clean":
        return report["clean_accuracy"], report["clean_ci95"], report["n"]
    if name.startswith("worst "):
        protocol, eps = name[len("worst "):].split("@")
        w = next(w for w in report["worst_case"] if w["protocol"] == protocol and w["eps"] == float(eps))
        return w["robust_accuracy"], w["ci95"], w["n"]
    label, eps = name.split("@")
    r = next(r for r in report["results"] if r["label"] == label and r["value"] == float(eps))
    return r["robust_accuracy"], r["ci95"], r["n"]


def wb(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_each_number_is_its_newest_report_on_the_newest_checkpoint(runs):
    table = build_compare_table([runs["evaluated"].root, runs["bare"].root])
    assert table.models == ["evaluated"]  # the bare run has no row: the notes name it
    names = [m.name for m in table.metrics]
    # Clean first, then by eps, each protocol's worst case after its attacks; last.pt's eps 0.2 is left out.
    assert names == ["clean", "FGSM@0.05", "worst custom@0.05", "FGSM@0.1", "PGD-3@0.1", "worst custom@0.1"]
    came_from = {"clean": "newer", "FGSM@0.05": "older", "worst custom@0.05": "older", "FGSM@0.1": "newer",
                 "PGD-3@0.1": "newer", "worst custom@0.1": "newer"}
    for name, key in came_from.items():
        cell = table.cell("evaluated", name)
        value, ci95, n = _entry(runs[key], name)
        assert (cell.values, list(cell.ci95), cell.n, cell.sources) == ([value], ci95, [n], [runs[key]["path"]])
        assert cell_text(cell) == f"{100 * value:.1f} [{100 * ci95[0]:.1f}-{100 * ci95[1]:.1f}]"
    notes = table.framing.notes
    assert "evaluated: best.pt (2 reports)" in notes[1] and "No saved evaluation: bare." in notes


def test_a_checkpoint_path_compares_that_checkpoints_evaluations(runs):
    table = build_compare_table([runs["evaluated"].last])
    assert table.models == ["evaluated (last.pt)"]
    assert [m.name for m in table.metrics] == ["clean", "FGSM@0.2", "worst custom@0.2"]
    assert table.cell("evaluated (last.pt)", "FGSM@0.2").sources == [runs["last"]["path"]]


def test_a_report_that_cannot_be_read_is_left_out_and_named(runs, tmp_path):
    run = _copy(runs["evaluated"], tmp_path / "hostile")
    shutil.copytree(runs["evaluated"].evals, run.evals, dirs_exist_ok=True)
    newer = json.loads(Path(runs["newer"]["path"]).read_text())
    newer["created"] += 1
    newer["results"] = [{"robust_accuracy": 0.5, "n": 40}]  # no label: not a row of any table
    (run.evals / "best-hand-edited.json").write_text(json.dumps(newer))
    table = build_compare_table([run.root])
    assert "Unreadable reports left out: " + str(run.evals / "best-hand-edited.json") + "." in table.framing.notes
    assert table.cell("hostile", "PGD-3@0.1").values == [_entry(runs["newer"], "PGD-3@0.1")[0]]


def test_every_format_parses_and_holds_the_same_numbers(runs):
    args = ["compare", str(runs["evaluated"].root), str(runs["bare"].root)]
    expected = {name: _entry(runs[key], name) for name, key in
                (("clean", "newer"), ("FGSM@0.05", "older"), ("PGD-3@0.1", "newer"), ("worst custom@0.1", "newer"))}

    data = json.loads(wb(*args, "--format", "json").stdout)
    assert [r["name"] for r in data["runs"]] == ["evaluated", "bare"] and data["runs"][1]["checkpoint"] is None
    cells = {c["metric"]: c for c in data["cells"]}
    for name, (value, ci95, n) in expected.items():
        assert (cells[name]["mean"], cells[name]["ci95"], cells[name]["n"]) == (value, ci95, [n])
    assert any("No saved evaluation: bare." == line for line in data["notes"])

    rows = {r["metric"]: r for r in csv.DictReader(io.StringIO(wb(*args, "-f", "csv").stdout))}
    for name, (value, ci95, _) in expected.items():
        assert rows[name]["run"] == "evaluated"
        assert (float(rows[name]["mean"]), float(rows[name]["ci95_low"]), float(rows[name]["ci95_high"])) == \
            (value, *ci95)

    md = wb(*args).stdout.splitlines()
    header = [c.strip() for c in md[0].strip("|").split("|")]
    row = [c.strip() for c in md[2].strip("|").split("|")]
    assert header[0] == "run" and row[0] == "evaluated" and len(header) == len(row) == 7
    value, ci95, _ = expected["PGD-3@0.1"]
    assert row[header.index("PGD-3@0.1")] == f"{100 * value:.1f} [{100 * ci95[0]:.1f}-{100 * ci95[1]:.1f}]"

    tex = wb(*args, "-f", "latex").stdout
    body = tex[tex.index(r"\midrule") + len(r"\midrule"):tex.index(r"\bottomrule")].strip().splitlines()
    assert tex.startswith(r"\begin{tabular}{lrrrrrr}") and r"\end{tabular}" in tex
    assert len(body) == 1 and body[0].count("&") == 6 and body[0].endswith(r"\\")


def test_columns_and_output_file(runs, tmp_path):
    out = tmp_path / "table.csv"
    proc = wb("compare", str(runs["evaluated"].root), "--columns", "clean,worst *", "-f", "csv", "-o", str(out))
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr.strip() == f"saved: {out}"
    assert [r["metric"] for r in csv.DictReader(out.open())] == ["clean", "worst custom@0.05", "worst custom@0.1"]


@pytest.mark.parametrize("args, mentions", [
    ([], ["RUN"]),
    (["{root}/missing"], ["missing", "no such run folder"]),
    (["{root}"], ["not a run folder"]),
    (["{root}/evaluated/config.yaml"], ["config.yaml", "not a checkpoint"]),
    (["{root}/evaluated", "--format", "xml"], ["xml", "md"]),
    (["{root}/evaluated", "--columns", "nothing*"], ["nothing*", "FGSM@0.05"]),
])
def test_bad_input_is_one_error_line(runs, args, mentions):
    proc = wb("compare", *(a.format(root=runs["root"]) for a in args))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(text in lines[0] for text in mentions), lines[0]
