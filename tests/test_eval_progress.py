"""Progress and per-stage stats of real evaluations: events inside a batch, AutoAttack's stages in order,
stage stats in the rows and the CSV equal to what the attacks reported, and the CLI's stderr."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

import attacks.base
from workbench import load_data, load_model
from workbench.evaluation import AttackSpec, Evaluator, Protocol, evaluate
from workbench.evaluation.attack_eval import save_evaluation

STAGES = ["apgd_ce", "apgd_t", "fab_t", "square"]
SMALL_AA = {"attacks": [("apgd_ce", {"steps": 10}), ("apgd_t", {"steps": 5, "n_target_classes": 2}),
                        ("fab_t", {"steps": 5, "n_target_classes": 2}), ("square", {"queries": 30})]}


@pytest.fixture(scope="module")
def setup(quickstart_run):
    model = load_model(quickstart_run.best)
    x, y = load_data("digits", "test")
    return model, x[:60], y[:60]


@pytest.fixture
def results(monkeypatch):
    """Every AttackResult the engine's attacks return, in order."""
    seen: list[attacks.base.AttackResult] = []
    run = attacks.base.Attack.run

    def recording(self, *args, **kwargs):
        seen.append(run(self, *args, **kwargs))
        return seen[-1]
    monkeypatch.setattr(attacks.base.Attack, "run", recording)
    return seen


def test_steps_inside_one_batch_are_reported_as_they_happen(setup):
    model, x, y = setup
    events = []
    # One chunk; a small eps so the attack keeps working for its whole budget.
    ev = Evaluator(model, x, y, batch_size=len(y), on_progress=events.append)
    out = ev.run_spec(AttackSpec("pgd", {"steps": 40}, [0.02], "PGD"), "t")
    kinds = [e.kind for e in events]
    assert kinds[0] == "spec_start" and kinds[-3:] == ["chunk_end", "pass_end", "spec_end"]
    steps = [e for e in events if e.kind == "step"]
    assert len(steps) >= 30 and all(e.chunk == 0 and e.chunks == 1 and e.steps == 40 for e in steps)
    assert [e.step for e in steps] == sorted(set(e.step for e in steps))  # one event per step, in order
    assert all(e.stage == "pgd" and (e.label, e.value, e.value_index) == ("PGD", 0.02, 0) for e in steps)
    robust = [e.robust for e in steps]
    attacked = int(out.attacked[0].sum())
    assert robust == sorted(robust, reverse=True) and robust[0] <= attacked == steps[0].attacked
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and 0 < steps[-1].fraction < 1
    end = events[-2]
    assert end.robust == attacked - int((out.fooled[0] & out.attacked[0]).sum())


def test_autoattack_events_name_its_stages_in_order(setup):
    model, x, y = setup
    events = []
    ev = Evaluator(model, x, y, batch_size=30, on_progress=events.append)
    ev.run_spec(AttackSpec("autoattack", SMALL_AA, [0.05], "AA"), "t")
    chunks = sorted({e.chunk for e in events if e.kind == "step"})
    assert len(chunks) > 1
    for c in chunks:
        order = []
        for e in events:
            if e.kind == "step" and e.chunk == c and (not order or order[-1] != e.stage):
                order.append(e.stage)
        assert order == STAGES[:len(order)] and len(order) >= 2, order  # in order, never back
        indices = [e.stage_index for e in events if e.kind == "step" and e.chunk == c]
        assert indices == sorted(indices) and all(e.stages == 4 for e in events if e.kind == "step")


def _check_chain(stages: list[dict]) -> None:
    """Per-stage stats of AutoAttack: each stage attacks what the earlier ones left."""
    assert [s["name"] for s in stages] == STAGES
    for s in stages:
        assert s["attacked"] >= s["broken"] >= 0 and (s["seconds"] > 0 or s["attacked"] == 0)
    for a, b in zip(stages, stages[1:]):
        assert b["attacked"] == a["attacked"] - a["broken"]


def test_stage_stats_in_rows_and_csv_equal_the_attack_results(setup, results, tmp_path):
    model, x, y = setup
    chunk_ends = []
    eps = [0.03, 0.1]
    protocol = Protocol("custom", [AttackSpec("autoattack", SMALL_AA, eps, "AA"),
                                   AttackSpec("pgd", {"steps": 5}, eps, "PGD")])
    report, outcomes = evaluate(model, x, y, [protocol], batch_size=30,
                                on_progress=lambda e: chunk_ends.append(e) if e.kind == "chunk_end" else None)
    assert len(results) == len(chunk_ends)  # one attack call per chunk
    attack_results = results
    expected: dict[tuple[str, float], dict[str, list[float]]] = {}
    for e, res in zip(chunk_ends, attack_results):
        sums = expected.setdefault((e.label, e.value), {})
        for st in res.stage_stats:
            s = sums.setdefault(st.name, [0.0, 0, 0])
            s[0] += st.seconds
            s[1] += st.attacked
            s[2] += st.broken
    rows = {(r["label"], r["value"]): r for r in report["results"]}
    for key, sums in expected.items():
        stages = rows[key]["stages"]
        assert [s["name"] for s in stages] == list(sums)
        for s in stages:
            assert s["seconds"] == pytest.approx(sums[s["name"]][0])
            assert (s["attacked"], s["broken"]) == tuple(sums[s["name"]][1:])
    for v in eps:
        _check_chain(rows[("AA", v)]["stages"])
        pgd = rows[("PGD", v)]["stages"]
        assert len(pgd) == 1 and pgd[0]["name"] == "pgd" and pgd[0]["seconds"] > 0
    # A carry sweep: the larger eps attacks only the survivors of the smaller.
    assert rows[("AA", 0.1)]["stages"][0]["attacked"] < rows[("AA", 0.03)]["stages"][0]["attacked"]

    report["checkpoint"] = str(tmp_path / "checkpoints" / "best.pt")
    saved = json.loads(save_evaluation(report, outcomes).read_text())
    with open(saved["csv"]) as fh:
        table = list(csv.DictReader(fh))
    stage_rows = [r for r in table if r["stage"]]
    assert [r["label"] for r in table if not r["stage"]][:2] == ["clean", "AA"]  # the results table is unchanged
    assert len(stage_rows) == 2 * 4 + 2 * 1
    for r in stage_rows:
        want = next(s for s in rows[(r["label"], float(r["value"]))]["stages"] if s["name"] == r["stage"])
        assert float(r["stage_seconds"]) == pytest.approx(want["seconds"])
        assert (int(r["stage_attacked"]), int(r["stage_broken"])) == (want["attacked"], want["broken"])


def test_a_joint_pass_splits_its_stage_stats_by_value(setup, results):
    model, x, y = setup
    spec = AttackSpec("autoattack", SMALL_AA, [0.03, 0.1], "AA")
    out = Evaluator(model, x, y, batch_size=1000, sweep="joint").run_spec(spec, "t")
    [res] = results[-1:]  # one chunk holding both values
    for j, st in enumerate(res.stage_stats):
        assert sum(v[j].attacked for v in out.stage_stats) == st.attacked
        assert sum(v[j].broken for v in out.stage_stats) == st.broken
        assert sum(v[j].seconds for v in out.stage_stats) == pytest.approx(st.seconds)
    for per_value in out.stage_stats:
        _check_chain([vars(s) for s in per_value])
    # Joint: every value attacks every clean-correct sample.
    assert [v[0].attacked for v in out.stage_stats] == [int(out.attacked[i].sum()) for i in range(2)]


# -- the command line: stderr is a pipe here, not a terminal ---------------------------------------

def _cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "WORKBENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "workbench", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_cli_prints_one_line_per_stage_on_a_pipe_and_nothing_when_quiet(quickstart_run):
    run = str(quickstart_run.root)
    proc = _cli(["attack", run, "--autoattack", "--eps", "0.1", "--n", "12", "--device", "cpu", "--json"])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # stdout stays pure JSON
    lines = proc.stderr.splitlines()
    stages = report["results"][0]["stages"]
    ran = [s for s in stages if s["attacked"]]
    assert lines[0] == f"[1/1] AutoAttack eps 0.1: start · {report['results'][0]['attacked']} samples to attack"
    assert len(lines) == 2 + len(ran), lines
    for line, s in zip(lines[1:], ran):
        assert line.startswith(f"[1/1] AutoAttack eps 0.1 · {s['name']} {STAGES.index(s['name']) + 1}/4 done · ")
    robust = report["results"][0]["attacked"] - sum(s["broken"] for s in stages)
    assert lines[-1].startswith(f"[1/1] AutoAttack eps 0.1 done · robust {robust}/")

    quiet = _cli(["attack", run, "--pgd", "--steps", "5", "--eps", "0.1", "--n", "12", "--device", "cpu",
                  "--json", "--quiet"])
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert json.loads(quiet.stdout)["results"][0]["stages"][0]["name"] == "pgd"


def test_audit_prints_a_line_per_attack_and_eps(quickstart_run):
    proc = _cli(["audit", str(quickstart_run.root), "--n", "20", "--queries", "20", "--device", "cpu", "--json"])
    assert proc.returncode == 0, proc.stderr
    labels = list(dict.fromkeys(r["label"] for r in json.loads(proc.stdout)["results"]))
    lines = proc.stderr.splitlines()
    starts = [line for line in lines if ": start · " in line]
    assert len(starts) == len(labels), starts
    for i, (line, label) in enumerate(zip(starts, labels)):
        assert line.startswith(f"[{i + 1}/{len(labels)}] {label} "), line  # every attack, numbered in the run
    pgd = labels.index("PGD-20") + 1
    assert any(line.startswith(f"[{pgd}/{len(labels)}] PGD-20 all 4 eps done · robust ") for line in lines), lines
    assert len(lines) == 2 * len(labels), lines  # per attack: its start and its one pass (PGD-20: one joint pass)
