"""Experiment suites end to end on digits: plan, run with bounded parallelism, the table (interruptions:
test_suite_interruptions.py)."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from pathlib import Path

import pytest

from cores import ALL_CORES
from tiny_suite import TINY, wb, wb_here, wb_in, write_suite
from workbench.errors import WorkbenchError
from workbench.suites.executors import split_cores
from workbench.suites.layout import SuitePaths
from workbench.suites.plan import plan_cells, scale_epochs
from workbench.suites.spec import load_suite, parse_suite
from workbench.suites.state import cell_state


@pytest.fixture(scope="module")
def finished_suite(tmp_path_factory):
    """The tiny suite run once with --jobs 2 (shared by the checks of its results)."""
    folder = tmp_path_factory.mktemp("suite")
    path = write_suite(folder)
    runs = folder / "runs"
    t0 = time.time()
    # Every core, not this worker's share: the cells must be able to run side by side.
    proc = wb("suite", "run", str(path), "--runs", str(runs), "--jobs", "2", "--device", "cpu", every_core=True)
    return {"path": path, "runs": runs, "paths": SuitePaths.under(runs, "tiny"), "stderr": proc.stderr,
            "seconds": time.time() - t0}


# --- the suite file and its cells -------------------------------------------------------------------------


def test_cells_are_identified_by_their_resolved_config(tmp_path):
    suite = parse_suite(TINY, "tiny")
    _, cells = plan_cells(suite, "tiny")
    assert [(c.model, c.seed) for c in cells] == [("plain", 0), ("plain", 1), ("AT", 0), ("AT", 1)]
    assert len({c.key for c in cells}) == 4
    assert all(c.config["epochs"] == 2 and c.config["data"] is not None for c in cells)
    assert [c.config["seed"] for c in cells] == [0, 1, 0, 1]
    again = plan_cells(parse_suite(TINY, "tiny"), "tiny")[1]
    assert [c.key for c in again] == [c.key for c in cells]  # same settings, same folders
    changed = {**TINY, "models": [{**TINY["models"][0], "set": {"adv_train.attack": "none", "optimizer.lr": 0.01}},
                                  TINY["models"][1]]}
    other = plan_cells(parse_suite(changed, "tiny"), "tiny")[1]
    assert other[0].key != cells[0].key and other[2].key == cells[2].key  # only the changed model moves
    longer = plan_cells(suite, "longer")[1]
    assert {c.key for c in longer}.isdisjoint({c.key for c in cells})  # a budget never mixes into another


def test_a_config_field_added_later_keeps_old_cells_keys_at_its_default():
    """Upgrading workbench must not retrain every suite: a field added to the config (its default leaves
    training as it was) is not part of a cell's identity until a suite sets it."""
    from workbench.suites.plan import LATER_FIELDS, cell_identity

    _, cells = plan_cells(parse_suite(TINY, "tiny"), "tiny")
    assert ("adv_train", "train_subset") in LATER_FIELDS  # added after the paper suites' first runs
    for (section, key), default in LATER_FIELDS.items():
        assert cells[0].config[section][key] == default  # the resolved config has it, at its default
        before = {**cells[0].config, section: {k: v for k, v in cells[0].config[section].items() if k != key}}
        assert cell_identity(cells[0].config) == cell_identity(before)  # as a config from before the field
    subset = {**TINY, "models": [TINY["models"][0], {**TINY["models"][1], "set": {"adv_train.train_subset": 100}}]}
    other = plan_cells(parse_suite(subset, "tiny"), "tiny")[1]
    assert other[0].key == cells[0].key and other[2].key != cells[2].key  # set, it is a new cell


def test_a_budget_may_give_its_own_seeds_and_one_model_more_seeds():
    # Issue 19: a second seed where it fits the budget (the cheap models), one seed for the rest.
    spec = {**TINY, "seeds": [0], "budgets": {"tiny": {**TINY["budgets"]["tiny"], "models": {"plain": {"seeds": [0, 1]}}},
                                              "wide": {**TINY["budgets"]["tiny"], "seeds": [5, 6]}}}
    suite = parse_suite(spec, "tiny")
    _, cells = plan_cells(suite, "tiny")
    assert [(c.model, c.seed) for c in cells] == [("plain", 0), ("plain", 1), ("AT", 0)]
    suite_seeds = plan_cells(parse_suite({**TINY, "seeds": [0, 1]}, "tiny"), "tiny")[1]
    assert {c.key for c in cells} <= {c.key for c in suite_seeds}  # a seed's cell is the same, whoever asks for it
    _, wide = plan_cells(suite, "wide")
    assert [(c.model, c.seed) for c in wide] == [("plain", 5), ("plain", 6), ("AT", 5), ("AT", 6)]
    assert [c.config["seed"] for c in wide] == [5, 6, 5, 6]


def test_a_shorter_budget_keeps_lr_milestones_at_their_fraction():
    profile = {"epochs": 50, "schedule": {"milestones": [30, 40], "warmup_epochs": 2.5},
               "defense": {"name": "pcl", "params": {"warmup_epochs": 10}}}
    assert scale_epochs(profile, 5) == ["epochs=5", "schedule.milestones=[3, 4]", "defense.warmup_epochs=1",
                                        "schedule.warmup_epochs=0.25"]
    assert scale_epochs(profile, 50) == ["epochs=50"]
    # a bundled profile whose CE warm-up is 50 of 350 epochs plans at 7 epochs with 1 warm-up epoch
    suite = parse_suite({"name": "x", "models": [{"name": "p", "profile": "pcl_mnist"}],
                         "budgets": {"small": {"epochs": 7}},
                         "evaluations": [{"name": "e", "attacks": ["fgsm"], "eps": [0.1]}]}, "x")
    config = plan_cells(suite)[1][0].config
    assert config["epochs"] == 7 and config["defense"]["params"]["warmup_epochs"] == 1


def test_budget_caps_every_evaluation_n():
    suite = parse_suite({**TINY, "evaluations": [{"name": "a", "attacks": [{"attack": "fgsm", "n": 500}],
                                                  "eps": [0.1], "n": 1000}]}, "tiny")
    _, cells = plan_cells(suite, "tiny")
    spec = cells[0].evaluations[0].spec
    assert spec["n"] == 60 and spec["attacks"][0]["n"] == 60


@pytest.mark.parametrize("change, message", [
    ({"seeds": [0, 0]}, "seed '0' appears twice"),
    ({"models": [{"name": "a", "profile": "quickstart"}, {"name": "a", "profile": "quickstart"}]},
     "model name 'a' appears twice"),
    ({"evaluations": [{"name": "e"}]}, "runs nothing"),
    ({"paper": {"nobody": {"clean": 1.0}}}, "'nobody' is not a model"),
    ({"default_budget": "huge"}, "default_budget 'huge'"),
    ({"budgets": {"tiny": {"epoch": 3}}}, "budgets.tiny.epoch: unknown key"),
    ({"budgets": {"tiny": {"seeds": [1, 1]}}}, "budgets.tiny.seeds: seed '1' appears twice"),
    ({"budgets": {"tiny": {"seeds": []}}}, "budgets.tiny.seeds: List should have at least 1 item"),
    ({"budgets": {"tiny": {"models": {"AT": {"seeds": [2, 2]}}}}}, "budgets.tiny.models.AT.seeds: seed '2' appears twice"),
])
def test_a_bad_suite_file_is_one_clear_line(tmp_path, change, message):
    path = write_suite(tmp_path, **change)
    with pytest.raises(WorkbenchError, match=re.escape(message)):
        load_suite(path)
    proc = wb_here("suite", "run", str(path), "--runs", str(tmp_path / "runs"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_a_bad_profile_in_a_suite_names_the_model(tmp_path):
    path = write_suite(tmp_path, models=[{"name": "x", "profile": "quickstart", "set": {"epochs": -1}}], paper={}, checks=[])
    proc = wb_here("suite", "run", str(path), "--runs", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "model x" in proc.stderr and "epochs" in proc.stderr


def test_jobs_never_oversubscribe_the_cores():
    assert split_cores(2, cores=2) == (2, 1)
    assert split_cores(1, cores=8) == (1, 8)
    assert split_cores(3, cores=8) == (3, 2)
    assert split_cores(16, cores=4) == (4, 1)  # more jobs than cores: one thread each, no more jobs than cores
    with pytest.raises(WorkbenchError):
        split_cores(0, cores=2)


# --- a whole run -------------------------------------------------------------------------------------------


def test_the_tiny_suite_runs_end_to_end(finished_suite):
    paths = finished_suite["paths"]
    cells = paths.cells_of("tiny")
    states = [cell_state(c) for c in cells]
    assert [s.state for s in states] == ["done"] * 4, [(s.key, s.state, s.message) for s in states]
    assert all(s.epoch == 2 and s.evaluations_done == 1 for s in states)
    status = json.loads(wb_in("suite", "status", str(finished_suite["path"]), "--runs", str(finished_suite["runs"]),
                           "--json").stdout)
    assert [(s["model"], s["seed"], s["state"]) for s in status] == [
        ("plain", 0, "done"), ("plain", 1, "done"), ("AT", 0, "done"), ("AT", 1, "done")]


def test_jobs_2_never_runs_more_than_2_cells_at_once(finished_suite):
    spans = []
    for cell in finished_suite["paths"].cells_of("tiny"):
        job = json.loads(cell.job.read_text())
        assert job["threads"] == max(1, len(ALL_CORES) // 2)
        spans.append((job["started"], job["ended"]))
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda t: (t[0], t[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= 2
    assert peak == 2 or len(ALL_CORES) < 2  # and it did run them side by side


def _report_value(path: str, metric: str) -> float:
    report = json.loads(Path(path).read_text())
    if metric == "clean":
        return report["clean_accuracy"]
    if metric.startswith("worst "):
        protocol, eps = metric.removeprefix("worst ").rsplit("@", 1)
        rows = [w for w in report["worst_case"] if w["protocol"] == protocol and f"{w['eps']:g}" == eps]
    else:
        label, eps = metric.rsplit("@", 1)
        rows = [r for r in report["results"] if r["label"] == label and f"{r['value']:g}" == eps]
    assert len(rows) == 1, (metric, path)
    return rows[0]["robust_accuracy"]


def test_every_table_value_equals_the_evaluation_file_it_came_from(finished_suite):
    args = ["suite", "table", str(finished_suite["path"]), "--runs", str(finished_suite["runs"])]
    default = json.loads(wb_in(*args, "--format", "json").stdout)
    # by default: clean, what the paper reports, and the worst cases
    assert [m["name"] for m in default["metrics"]] == ["clean", "FGSM@0.1", "worst weak@0.1", "worst weak@0.2"]
    data = json.loads(wb_in(*args, "--format", "json", "--columns", "*").stdout)
    cells = data["cells"]
    assert {c["model"] for c in cells} == {"plain", "AT"}
    names = [m["name"] for m in data["metrics"]]
    assert names[0] == "clean" and {"FGSM@0.1", "PGD@0.2", "worst weak@0.2"} <= set(names)
    for c in cells:
        assert len(c["values"]) == 2 and c["seeds"] == [0, 1] and len(set(c["sources"])) == 2
        for value, source in zip(c["values"], c["sources"]):
            assert value == _report_value(source, c["metric"])
        assert c["mean"] == pytest.approx(sum(c["values"]) / 2)
        assert c["std"] == pytest.approx(abs(c["values"][0] - c["values"][1]) / 2 ** 0.5)
    at = next(c for c in cells if c["model"] == "AT" and c["metric"] == "FGSM@0.1")
    assert at["paper"] == 80.0
    # every cell's reports belong to its own run
    for c in cells:
        assert all(f"/{c['model']}-s{seed}-" in src for seed, src in zip(c["seeds"], c["sources"]))


def test_the_papers_claims_are_checked_on_our_numbers(finished_suite):
    args = ["suite", "table", str(finished_suite["path"]), "--runs", str(finished_suite["runs"])]
    data = json.loads(wb_in(*args, "--format", "json", "--columns", "*").stdout)
    mean = {(c["model"], c["metric"]): c["mean"] for c in data["cells"]}
    beats = all(mean[("AT", m)] > mean[("plain", m)] for m in ("worst weak@0.1", "worst weak@0.2"))
    verdicts = [c["holds"] for c in data["checks"]]
    assert verdicts == [beats, mean[("AT", "PGD@0.1")] > mean[("plain", "PGD@0.1")], True,
                        all(mean[(m, "clean")] == 1.0 for m in ("AT", "plain")), None, True]
    assert data["checks"][0]["check"].startswith("AT beats plain")
    md = wb_in(*args).stdout
    assert "The paper's claims on our numbers:" in md and "**open**" in md


def test_markdown_csv_and_latex_outputs_parse(finished_suite):
    args = ["suite", "table", str(finished_suite["path"]), "--runs", str(finished_suite["runs"])]
    md = wb_in(*args).stdout
    header = md.splitlines()[0]
    assert header.startswith("| model | clean |") and "| paper |" in header
    rows = [line for line in md.splitlines() if line.startswith("| AT ") or line.startswith("| plain ")]
    assert len(rows) == 2 and all(r.count("|") == header.count("|") for r in rows)
    assert " ± " in rows[0]

    rows = list(csv.DictReader(io.StringIO(wb_in(*args, "--format", "csv").stdout)))
    assert {r["model"] for r in rows} == {"plain", "AT"}
    fgsm = [r for r in rows if r["metric"] == "FGSM@0.1"]
    assert len(fgsm) == 2 and all(0 <= float(r["mean"]) <= 1 for r in fgsm) and fgsm[0]["eps"] == "0.1"

    tex = wb_in(*args, "--format", "latex").stdout
    spec = re.search(r"\\begin\{tabular\}\{(lr*)\}", tex)
    assert spec is not None
    body = tex[spec.end():tex.index(r"\end{tabular}")]
    rules = [line for line in body.splitlines() if line.strip() in (r"\toprule", r"\midrule", r"\bottomrule")]
    assert rules == [r"\toprule", r"\midrule", r"\bottomrule"]
    lines = [line for line in body.splitlines() if line.endswith(r"\\")]
    assert len(lines) == 3  # the header and 2 models
    for line in lines:  # every row has the tabular's number of columns; TeX's specials are escaped
        assert len(re.split(r"(?<!\\)&", line)) == len(spec.group(1))
        assert not re.search(r"(?<!\\)[%#_]", line)
    assert r"$\pm$" in body and "±" not in body
    assert all(line.startswith("%") for line in tex[tex.index(r"\end{tabular}"):].splitlines()[1:])


def test_chart_in_the_terminal_and_as_png(finished_suite, tmp_path):
    png = tmp_path / "chart.png"
    proc = wb_in("suite", "chart", str(finished_suite["path"]), "--runs", str(finished_suite["runs"]), "--png", str(png),
              "--width", "70", "--height", "14")
    assert "plain" in proc.stdout and "AT" in proc.stdout and "\x1b[" not in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from workbench.suites.chart import chart_series
    from workbench.suites.table import build_table

    suite, _ = load_suite(finished_suite["path"])
    table = build_table(suite, finished_suite["paths"], "tiny", ["*"])
    series = chart_series(table)
    for model in ("plain", "AT"):
        assert [eps for eps, _ in series[model]] == [0.1, 0.2]
        for eps, y in series[model]:
            # per seed the lowest robust accuracy of any attack at eps (the worst-case row), averaged over seeds
            rows = [table.cell(model, m.name) for m in table.metrics if m.eps == eps]
            per_seed = [min(c.values[i] for c in rows) for i in range(2)]
            assert y == pytest.approx(100 * sum(per_seed) / 2)
            assert y == pytest.approx(100 * table.cell(model, f"worst weak@{eps:g}").mean)


def test_a_rerun_of_a_finished_suite_does_nothing(finished_suite):
    paths = finished_suite["paths"]
    before = {p: p.stat().st_mtime_ns for c in paths.cells_of("tiny") for p in c.root.rglob("*") if p.is_file()}
    proc = wb_in("suite", "run", str(finished_suite["path"]), "--runs", str(finished_suite["runs"]))
    assert "4 done" in proc.stderr and "0 to run" in proc.stderr
    after = {p: p.stat().st_mtime_ns for c in paths.cells_of("tiny") for p in c.root.rglob("*") if p.is_file()}
    changed = [p for p in before if after.get(p) != before[p] and p.name != "cell.json"]
    assert not changed and set(after) == set(before)


def test_evaluations_can_be_limited_to_models_and_capped_per_evaluation():
    suite = parse_suite({**TINY, "evaluations": [
        {"name": "all", "attacks": ["fgsm"], "eps": [0.1], "n": 300, "attack_n": {"FGSM": 200}},
        {"name": "adaptive", "adaptive": True, "models": ["AT"]},
    ], "budgets": {"tiny": {"evaluation_n": {"all": 100}}}}, "tiny")
    _, cells = plan_cells(suite, "tiny")
    by_model = {c.model: [e.name for e in c.evaluations] for c in cells}
    assert by_model == {"plain": ["all"], "AT": ["all", "adaptive"]}
    spec = cells[0].evaluations[0].spec
    assert spec["n"] == 100 and spec["attack_n"] == {"FGSM": 100}
    with pytest.raises(WorkbenchError, match="'nobody' is not a model"):
        parse_suite({**TINY, "evaluations": [{"name": "a", "adaptive": True, "models": ["nobody"]}]}, "tiny")


def test_attack_n_caps_a_preset_attack(tmp_path):
    from workbench.suites.cell import evaluation_protocols

    spec = {"name": "p", "preset": "pcl", "attacks": [], "eps": [0.3], "norm": "linf", "strong": False,
            "adaptive": False, "attack_n": {"C&W c=10": 100, "FGSM": 50}}
    protocols = evaluation_protocols(spec)({"dataset": "mnist", "recipe": {}, "path": tmp_path})
    caps = {a.label: a.max_samples for p in protocols for a in p.specs}
    assert caps["C&W c=10"] == 100 and caps["FGSM"] == 50 and caps["BIM-10"] is None


def test_a_collapsed_run_is_marked_not_averaged_and_one_seed_gets_a_wilson_interval(tmp_path):
    # An untrained model (lr ~ 0) predicts near chance: the table must flag it, not report its "robustness".
    path = write_suite(tmp_path, seeds=[3], paper={}, checks=[], models=[
        {"name": "trained", "profile": "quickstart", "set": {"adv_train.attack": "none"}},
        {"name": "untrained", "profile": "quickstart", "set": {"adv_train.attack": "none", "optimizer.lr": 1e-12}},
    ], budgets={"tiny": {"epochs": 1, "n": 100, "set": {"eval.robust_every": 0},
                         "models": {"trained": {"epochs": 3}}}},
        evaluations=[{"name": "weak", "attacks": ["fgsm"], "eps": [0.1]}])
    runs = tmp_path / "runs"
    wb_in("suite", "run", str(path), "--runs", str(runs), "--jobs", "2", "--device", "cpu")
    data = json.loads(wb_in("suite", "table", str(path), "--runs", str(runs), "--format", "json").stdout)
    assert data["collapsed"] == {"untrained": [3]}
    cells = {(c["model"], c["metric"]): c for c in data["cells"]}
    dead = cells[("untrained", "FGSM@0.1")]
    assert dead["mean"] is None and dead["values"] == [] and dead["collapsed_seeds"] == [3]
    alive = cells[("trained", "FGSM@0.1")]
    assert alive["std"] is None and alive["seeds"] == [3]
    report = json.loads(Path(alive["sources"][0]).read_text())
    row = next(r for r in report["results"] if r["label"] == "FGSM")
    assert alive["ci95"] == row["ci95"] and alive["ci95"][0] < alive["mean"] < alive["ci95"][1]
    md = wb_in("suite", "table", str(path), "--runs", str(runs)).stdout
    assert "untrained (collapsed: s3)" in md and "| collapsed |" in md and "Collapsed runs" in md
    assert re.search(r"\| trained \| [\d.]+ \[[\d.]+-[\d.]+\] \|", md)  # one seed: the Wilson interval


def test_a_model_with_more_seeds_is_averaged_and_the_others_are_not_missing_any(tmp_path):
    path = write_suite(tmp_path, seeds=[0], paper={}, checks=[],
                       budgets={"tiny": {"epochs": 1, "n": 60, "set": {"eval.robust_every": 0},
                                         "models": {"plain": {"seeds": [0, 1]}}}},
                       evaluations=[{"name": "weak", "attacks": ["fgsm"], "eps": [0.1]}])
    runs = tmp_path / "runs"
    wb_in("suite", "run", str(path), "--runs", str(runs), "--jobs", "2", "--device", "cpu")
    data = json.loads(wb_in("suite", "table", str(path), "--runs", str(runs), "--format", "json").stdout)
    assert data["seeds"] == [0, 1] and data["missing"] == {}
    cells = {(c["model"], c["metric"]): c for c in data["cells"]}
    two, one = cells[("plain", "FGSM@0.1")], cells[("AT", "FGSM@0.1")]
    assert two["seeds"] == [0, 1] and two["std"] is not None and two["ci95"] is None
    assert one["seeds"] == [0] and one["missing_seeds"] == [] and one["ci95"] is not None
    md = wb_in("suite", "table", str(path), "--runs", str(runs)).stdout
    assert "†" not in md  # nobody is short of a seed


@pytest.mark.parametrize("evaluation, message", [
    ({"name": "e", "attacks": ["nosuch"], "eps": [0.1]}, "unknown attack 'nosuch'"),
    ({"name": "e", "attacks": ["pgd:stepz=3"], "eps": [0.1]}, "pgd has no parameter 'stepz'"),
    ({"name": "e", "preset": "nosuch"}, "unknown preset 'nosuch'"),
    ({"name": "e", "attacks": ["fgsm"], "eps": [-0.1]}, "eps must be >= 0"),
    ({"name": "e", "attacks": ["fgsm"], "eps": [8]}, "larger than the whole [0, 1] pixel range"),
])
def test_a_bad_evaluation_fails_before_any_training(tmp_path, evaluation, message):
    path = write_suite(tmp_path, evaluations=[evaluation], paper={}, checks=[])
    proc = wb_here("suite", "run", str(path), "--runs", str(tmp_path / "runs"))
    assert proc.returncode == 2 and message in proc.stderr and "evaluation e" in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing planned, nothing trained


def test_settings_that_never_change_the_weights_keep_the_cells():
    _, cells = plan_cells(parse_suite(TINY, "tiny"), "tiny")
    quieter = {**TINY, "budgets": {"tiny": {**TINY["budgets"]["tiny"],
                                            "set": {"eval.robust_every": 3, "log_every": 7, "checkpoint_every": 9,
                                                    "performance.channels_last": True}}}}
    assert [c.key for c in plan_cells(parse_suite(quieter, "tiny"), "tiny")[1]] == [c.key for c in cells]


def test_budgets_sharing_a_cell_keep_their_own_evaluations(finished_suite, tmp_path):
    # Another budget trains the same models (same epochs) but evaluates on fewer samples: it reuses the
    # trained runs, and each budget's table shows its own evaluations.
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(finished_suite["runs"], runs)
    path = write_suite(tmp_path, budgets={**TINY["budgets"], "small": {"epochs": 2, "n": 20,
                                                                       "set": {"eval.robust_every": 0}}})
    proc = wb_in("suite", "run", str(path), "--runs", str(runs), "--budget", "small", "--jobs", "2")
    assert "4 to run" in proc.stderr
    small = json.loads(wb_in("suite", "table", str(path), "--runs", str(runs), "--budget", "small", "-f", "json").stdout)
    tiny = json.loads(wb_in("suite", "table", str(path), "--runs", str(runs), "--budget", "tiny", "-f", "json").stdout)
    assert {n for c in small["cells"] for n in c["n"]} == {20}
    assert {n for c in tiny["cells"] for n in c["n"]} == {60}
    paths = SuitePaths.under(runs, "tiny")
    assert paths.read_budgets()["small"] == paths.read_budgets()["tiny"]  # the same cells, trained once
    runs_per_cell = [len([p for p in c.root.iterdir() if (p / "config.yaml").exists()]) for c in paths.cells_of("small")]
    assert runs_per_cell == [1, 1, 1, 1]


def test_evaluations_can_be_run_a_few_at_a_time(finished_suite, tmp_path):
    """`--evaluations`: the paper's protocol for every model first, the strong one later; each run does only
    what is asked and left, and the training is never redone."""
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(finished_suite["runs"], runs)
    extra = [{"name": "extra", "attacks": ["fgsm"], "eps": [0.3]}, {"name": "extra2", "attacks": ["fgsm"], "eps": [0.4]}]
    path = write_suite(tmp_path, evaluations=[*TINY["evaluations"], *extra])
    run = ("suite", "run", str(path), "--runs", str(runs), "--jobs", "2")
    assert "4 done" in wb_in(*run, "--evaluations", "weak").stderr  # weak is saved everywhere: nothing to run

    proc = wb_in(*run, "--evaluations", "extra", "--models", "AT")
    assert "2 to run" in proc.stderr and "done   AT-s0" in proc.stderr
    paths = SuitePaths.under(runs, "tiny")
    states = {s.key: s for s in (cell_state(c, "tiny") for c in paths.cells_of("tiny"))}
    for st in states.values():
        expected = {"weak", "extra"} if st.model == "AT" else {"weak"}
        assert set(st.reports) == expected and st.state == "stopped", (st.key, st.reports, st.state)
    assert all("not run yet (--evaluations): extra2" in s.message for s in states.values() if s.model == "AT")

    assert "4 to run" in wb_in(*run).stderr  # the rest: extra and extra2 for plain, extra2 for AT
    states = [cell_state(c, "tiny") for c in paths.cells_of("tiny")]
    assert all(s.state == "done" and set(s.reports) == {"weak", "extra", "extra2"} for s in states)
    runs_per_cell = [len([p for p in c.root.iterdir() if (p / "config.yaml").exists()]) for c in paths.cells_of("tiny")]
    assert runs_per_cell == [1, 1, 1, 1]

    proc = wb_here(*run, "--evaluations", "weak,nope")
    assert proc.returncode == 2 and "--evaluations: nope not in suite tiny (weak, extra, extra2)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_seeds_choose_cells_and_a_bad_seed_list_is_one_line(finished_suite, tmp_path):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(finished_suite["runs"], runs)
    path = write_suite(tmp_path, evaluations=[*TINY["evaluations"], {"name": "extra", "attacks": ["fgsm"], "eps": [0.3]}])
    run = ("suite", "run", str(path), "--runs", str(runs), "--jobs", "2")
    assert "2 to run" in wb_in(*run, "--seeds", "1").stderr
    states = [cell_state(c, "tiny") for c in SuitePaths.under(runs, "tiny").cells_of("tiny")]
    assert {(s.model, s.seed) for s in states if s.state == "done"} == {("plain", 1), ("AT", 1)}
    for seeds, message in (("7", "--seeds: no cell of suite tiny has seed 7 (its seeds: 0, 1)"),
                           ("0,x", "--seeds: '0,x' is not a comma-separated list of integers")):
        proc = wb_here(*run, "--seeds", seeds)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_the_same_label_in_two_evaluations_keeps_both_rows(finished_suite, tmp_path):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(finished_suite["runs"], runs)
    path = write_suite(tmp_path, evaluations=[*TINY["evaluations"],
                                              {"name": "stronger", "attacks": ["pgd:steps=10"], "eps": [0.2]}])
    wb_in("suite", "run", str(path), "--runs", str(runs), "--jobs", "2")
    data = json.loads(wb_in("suite", "table", str(path), "--runs", str(runs), "-f", "json", "--columns", "*PGD@0.2").stdout)
    assert [m["name"] for m in data["metrics"]] == ["PGD@0.2", "stronger/PGD@0.2"]
    for c in data["cells"]:
        metric = c["metric"].split("/")[-1]
        assert all(v == _report_value(src, metric) for v, src in zip(c["values"], c["sources"]))
    proc = wb_here("suite", "table", str(path), "--runs", str(runs), "--columns", "nothing*")
    assert proc.returncode == 2 and "matches no metric" in proc.stderr
