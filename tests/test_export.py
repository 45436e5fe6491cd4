"""`workbench export --tensorboard`: event files read back equal metrics.jsonl and the saved reports.

A copy of the real quickstart run (so its new evaluation stays out of the shared run), a real FGSM/PGD
evaluation of it, and TensorBoard's own reader on what the export wrote."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.errors import WorkbenchError
from workbench.runs import RunPaths

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from workbench.export import export_run  # noqa: E402
from workbench.export.tensorboard import report_scalars  # noqa: E402

# The CLI with the export command, whether or not workbench/cli.py registers it already.
CLI = """
from workbench.cli import app, main
from workbench.export.command import register
if "export" not in {c.name for c in app.registered_commands}:
    register(app)
main()
"""
POSITIONS = {"kind", "epoch", "step", "batch", "time"}


@pytest.fixture(scope="module")
def evaluated(quickstart_run, tmp_path_factory):
    """A copy of the quickstart run with one saved evaluation of its best.pt: (run, report)."""
    from workbench.evaluation import AttackSpec, Protocol, evaluate_checkpoint, save_evaluation

    run = RunPaths(tmp_path_factory.mktemp("export") / quickstart_run.root.name)
    # Without the shared run's evaluations: other tests (audit, attacks) save theirs there, in any order.
    shutil.copytree(quickstart_run.root, run.root, ignore=lambda folder, names: names if folder.endswith("/evals")
                    else [])
    protocol = Protocol("custom", [AttackSpec("fgsm", {}, [0.05, 0.1], "FGSM"),
                                   AttackSpec("pgd", {"steps": 3}, [0.1], "PGD-3")])
    report, outcomes = evaluate_checkpoint(run.best, [protocol], n=50)
    save_evaluation(report, outcomes)
    (run.evals / "audit-best-x.json").write_text('{"checks": []}')  # an audit: no scalars
    return run, report


def read_events(folder: Path) -> EventAccumulator:
    files = list(folder.glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def expected_metrics(run: RunPaths) -> dict[str, list[tuple[int, float]]]:
    """What metrics.jsonl holds, read here with plain json: every numeric key at the record's position."""
    out: dict[str, list[tuple[int, float]]] = {}
    for line in run.metrics.read_text().splitlines():
        rec = json.loads(line)
        step = rec["epoch"] if rec["kind"] == "epoch" else rec["step"]
        for key, value in rec.items():
            if key not in POSITIONS and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.setdefault(f"{rec['kind']}/{key}", []).append((step, value))
    return out


@pytest.fixture(scope="module")
def exported(evaluated, tmp_path_factory):
    run, _ = evaluated
    folder = tmp_path_factory.mktemp("tb") / "run"
    result = export_run(run, folder)
    return result, scalars(read_events(folder)), read_events(folder)


def test_metrics_scalars_equal_metrics_jsonl(evaluated, exported):
    run, _ = evaluated
    result, got, _ = exported
    want = expected_metrics(run)
    assert {"epoch/train_loss", "epoch/test_clean_acc", "epoch/test_robust_acc", "epoch/lr", "epoch/seconds",
            "step/train_loss", "step/lr"} <= set(want)
    assert {t: v for t, v in got.items() if not t.startswith("eval/")}.keys() == want.keys()
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag
    assert result.epochs == len(got["epoch/train_loss"]) == 15
    assert result.steps == len(got["step/train_loss"])
    assert result.scalars == sum(len(v) for v in got.values())


def test_evaluation_scalars_equal_the_report_at_the_checkpoint_epoch(evaluated, exported):
    from workbench.checkpoint import read_checkpoint

    run, report = evaluated
    result, got, _ = exported
    epoch = read_checkpoint(run.best)["position"]["epoch"]
    want = {"eval/clean": report["clean_accuracy"]}
    want.update({f"eval/custom/{r['label']}@{r['eps']:g}": r["robust_accuracy"] for r in report["results"]})
    want.update({f"eval/custom/worst@{w['eps']:g}": w["robust_accuracy"] for w in report["worst_case"]})
    assert set(want) == {"eval/clean", "eval/custom/FGSM@0.05", "eval/custom/FGSM@0.1", "eval/custom/PGD-3@0.1",
                         "eval/custom/worst@0.05", "eval/custom/worst@0.1"}
    assert {t for t in got if t.startswith("eval/")} == set(want)
    for tag, value in want.items():
        assert got[tag] == [(epoch, pytest.approx(value, rel=1e-6))], tag
    assert result.evaluations == 1  # the audit file is no evaluation


def test_config_text_and_hparams(evaluated, exported):
    from tensorboard.plugins.hparams import plugin_data_pb2

    run, _ = evaluated
    _, _, acc = exported
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "    dataset: digits" in text and run.config.read_text().splitlines()[0] in text
    start = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["dataset"].string_value == "digits"
    assert hparams["optimizer.lr"].number_value == pytest.approx(0.003)
    assert "description" not in hparams


def test_reexport_replaces_the_event_file(evaluated, tmp_path):
    run, _ = evaluated
    first = export_run(run, tmp_path)
    second = export_run(run, tmp_path)
    got = scalars(read_events(tmp_path))  # one event file, each point once
    assert first.scalars == second.scalars == sum(len(v) for v in got.values())


def test_tag_scheme_of_other_rows():
    report = {"clean_accuracy": 0.9, "created": 5.0, "results": [
        {"protocol": "ccn", "label": "DeepFool", "sweep_param": "max_ratio", "value": 0.02, "eps": None,
         "robust_accuracy": 0.4},
        {"protocol": "ccn", "label": "CW", "value": None, "eps": None, "robust_accuracy": 0.0, "mean_norm": 1.5},
        {"protocol": "ccn", "label": "CW", "value": 0.5, "eps": 0.5, "norm": "l2", "robust_accuracy": 0.3},
        {"protocol": "ccn", "label": "CW", "eps": 0.1, "robust_accuracy": None},
        "not a row"],
        "worst_case": [{"protocol": "all", "norm": "linf", "eps": 0.3, "robust_accuracy": 0.1}]}
    got = {s.tag: (s.value, s.step, s.walltime) for s in report_scalars(report, 7)}
    assert got == {"eval/clean": (0.9, 7, 5.0), "eval/ccn/DeepFool@max_ratio=0.02": (0.4, 7, 5.0),
                   "eval/ccn/CW": (0.0, 7, 5.0), "eval/ccn/CW/mean_norm": (1.5, 7, 5.0),
                   "eval/ccn/CW@l2=0.5": (0.3, 7, 5.0), "eval/all/worst@0.3": (0.1, 7, 5.0)}


def test_missing_tensorboard_is_one_line_error(evaluated, tmp_path, monkeypatch):
    run, _ = evaluated
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(WorkbenchError, match=r"pip install 'workbench\[tensorboard\]'") as info:
        export_run(run, tmp_path / "tb")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "tb").exists()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, "export", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_cli_exports_a_run_into_its_named_folder(evaluated, tmp_path):
    run, _ = evaluated
    proc = cli(str(run.root), "--tensorboard", "tb", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "tb" / run.root.name
    got = scalars(read_events(folder))
    assert f"{Path('tb') / run.root.name}: {sum(len(v) for v in got.values())} scalars" in proc.stdout
    assert "1 evaluations" in proc.stdout


def test_cli_exports_a_suite_one_folder_per_cell(evaluated, tmp_path):
    run, _ = evaluated
    suite = tmp_path / "runs" / "suites" / "s1"
    (suite / "cells").mkdir(parents=True)
    (suite / "budgets.json").write_text(json.dumps({"cpu": ["A-s0-x", "B-s0-y"], "full": ["A-s0-x"]}))
    shutil.copytree(run.root, suite / "cells" / "A-s0-x" / run.root.name)
    for target in (str(suite), "s1"):  # the folder, or the suite's name under --runs
        proc = cli(target, "--tensorboard", "tb", "--runs", "runs", "--budget", "cpu", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert [p.name for p in (tmp_path / "tb").iterdir()] == ["A-s0-x"]
        got = scalars(read_events(tmp_path / "tb" / "A-s0-x"))["epoch/train_loss"]
        want = expected_metrics(run)["epoch/train_loss"]
        assert [p[0] for p in got] == [p[0] for p in want]
        assert [p[1] for p in got] == pytest.approx([p[1] for p in want], rel=1e-6)
        assert "skipped B-s0-y: no run yet" in proc.stdout
    proc = cli(str(suite), "--tensorboard", "tb", "--budget", "gpu", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: suite s1: no budget 'gpu' was run; budgets: cpu, full"


@pytest.mark.parametrize("target, mentions", [
    ("no-such-run", "no such run folder, suite folder or suite"),
    (".", "neither a run folder (no config.yaml) nor a suite folder"),
    ("missing.yaml", "missing.yaml does not exist"),
])
def test_cli_bad_target_is_one_line_error(tmp_path, target, mentions):
    proc = cli(target, "--tensorboard", "tb", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and mentions in lines[0], proc.stderr
    assert not (tmp_path / "tb").exists()


def test_command_module_is_torch_free():
    code = "import sys, workbench.export.command; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
