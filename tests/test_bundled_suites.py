"""Every bundled suite (suites/*.yaml) parses, plans under each of its budgets, and names only paper metrics
that one of its evaluations can produce. No training, no data: planning resolves profiles only."""

from __future__ import annotations

import fnmatch
import json

import pytest
import yaml

from workbench.suites.cell import evaluation_protocols
from workbench.suites.plan import plan_cells
from workbench.suites.spec import find_suite, list_suites, load_suite

SUITES = list_suites()
CASES = [(name, budget) for name in SUITES for budget in load_suite(name)[0].budgets]


def _eps_text(value: float) -> str:
    return f"{value:g}"  # as workbench.suites.table names a metric


def metric_names(protocols) -> set[str]:
    """The metric names (see workbench.suites.table) a report of these protocols can hold."""
    names = {"clean"}
    for protocol in protocols:
        eps_values = set()
        for spec in protocol.specs:
            if spec.sweep is None:
                names.add(spec.label)  # a minimum-norm attack's own row (C&W)
                continue
            names.update(f"{spec.label}@{_eps_text(v)}" for v in spec.sweep)
            if spec.sweep_param == "eps":
                eps_values.update(spec.sweep)
        names.update(f"worst {protocol.name}@{_eps_text(e)}" for e in eps_values)
    return names


def suite_metric_names(suite, dataset: str) -> set[str]:
    names: set[str] = set()
    for ev in suite.evaluations:
        spec = ev.model_dump(mode="json")
        spec["adaptive"] = False  # its loss comes from a trained checkpoint; the suite's paper numbers never name it
        protocols = evaluation_protocols(spec)({"dataset": dataset, "recipe": None, "path": None})
        names |= metric_names(protocols)
    return names


def test_some_suites_are_bundled():
    assert {"ccn_mnist", "pc_mnist", "pcl_mnist", "adr_mnist"} <= set(SUITES)


def test_the_suite_list_counts_the_cells_each_budget_trains():
    from typer.testing import CliRunner

    from workbench.cli import app

    result = CliRunner().invoke(app, ["suites", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["suite"]: r for r in json.loads(result.output)}
    for name, row in rows.items():
        suite, _ = load_suite(name)
        assert row["cells"] == {b: len(plan_cells(suite, b)[1]) for b in suite.budgets}
    # Read from the YAML itself: one cell per model, plus one per extra seed a model's cpu budget gives it.
    raw = yaml.safe_load(find_suite("adr_mnist").read_text())
    extra = sum(len(m.get("seeds", [0])) - 1 for m in raw["budgets"]["cpu"]["models"].values())
    assert extra >= 2 and rows["adr_mnist"]["cells"]["cpu"] == len(rows["adr_mnist"]["models"]) + extra


@pytest.mark.parametrize("name,budget", CASES)
def test_suite_plans_under_each_budget(name, budget):
    from workbench.config import load_profile

    suite, _ = load_suite(name)
    budget_name, cells = plan_cells(suite, budget)
    assert budget_name == budget
    spec = suite.budgets[budget]
    assert len(cells) == sum(len(suite.seeds_of(m.name, spec)) for m in suite.models)
    assert [(c.model, c.seed) for c in cells] == [(m.name, s) for m in suite.models for s in suite.seeds_of(m.name, spec)]
    assert len({c.key for c in cells}) == len(cells)
    entries = {m.name: m for m in suite.models}
    for cell in cells:
        per_model = spec.models.get(cell.model)
        epochs = (per_model.epochs if per_model and per_model.epochs else None) or spec.epochs
        if epochs is None:  # the profile's own (with the model's overrides)
            sets = [f"{k}={json.dumps(v)}" for k, v in entries[cell.model].set.items()]
            epochs = load_profile(entries[cell.model].profile, sets)[0].epochs
        assert cell.config["epochs"] == epochs, (cell.model, cell.config["epochs"], epochs)
        subset = (per_model.train_subset if per_model and per_model.train_subset else None) or spec.train_subset
        if subset is not None:
            assert cell.config["data"]["train_subset"] == subset
        assert cell.config["seed"] == cell.seed
        milestones = cell.config.get("schedule", {}).get("milestones") or []
        assert all(0 < m < epochs for m in milestones), (cell.model, milestones, epochs)
        assert [e.name for e in cell.evaluations] == [e.name for e in suite.evaluations
                                                      if e.models is None or cell.model in e.models]
        for ev in cell.evaluations:
            if spec.n is not None:
                assert ev.spec["n"] is not None and ev.spec["n"] <= spec.n


@pytest.mark.parametrize("name", [n for n in SUITES if load_suite(n)[0].paper])
def test_paper_numbers_name_metrics_the_suite_measures(name):
    suite, _ = load_suite(name)
    _, cells = plan_cells(suite)
    datasets = {c.config["dataset"] for c in cells}
    for dataset in datasets:
        measured = suite_metric_names(suite, dataset)
        for model, numbers in suite.paper.items():
            unknown = sorted(set(numbers) - measured)
            assert not unknown, f"{name}: {model}: no evaluation measures {unknown}; measured: {sorted(measured)}"


@pytest.mark.parametrize("name", [n for n in SUITES if load_suite(n)[0].table])
def test_table_columns_match_measured_metrics(name):
    suite, _ = load_suite(name)
    _, cells = plan_cells(suite)
    for dataset in {c.config["dataset"] for c in cells}:
        measured = suite_metric_names(suite, dataset)
        empty = [p for p in suite.table if not any(fnmatch.fnmatchcase(m, p) for m in measured)]
        assert not empty, f"{name}: table columns match no measured metric: {empty}"


@pytest.mark.parametrize("name", list(SUITES))
def test_paper_numbers_are_percentages(name):
    suite, _ = load_suite(name)
    for model, numbers in suite.paper.items():
        for metric, value in numbers.items():
            assert 0.0 <= value <= 100.0, (model, metric, value)


@pytest.mark.parametrize("name", [n for n in SUITES if load_suite(n)[0].checks])
def test_every_check_names_a_metric_the_suite_measures(name):
    suite, _ = load_suite(name)
    _, cells = plan_cells(suite)
    for dataset in {c.config["dataset"] for c in cells}:
        measured = suite_metric_names(suite, dataset) | {"clean"}
        for check in suite.checks:
            assert any(fnmatch.fnmatchcase(m, check.metric) for m in measured), (name, check.metric)
