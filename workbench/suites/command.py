"""`workbench suite run|status|table|chart` and `workbench suites`: the CLI of experiment suites.

Imports torch only inside the commands that train or plan (the CLI starts without it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import WorkbenchError

suite_app = typer.Typer(no_args_is_help=True, help="Experiment suites: a paper's table (models x seeds, trained "
                                                    "and evaluated) from one command; see `workbench suites`.")
out = Console()
err = Console(stderr=True)

RunsDir = typer.Option(Path("runs"), "--runs", help="Runs folder; the suite's cells live in RUNS/suites/<name>/.")
Budget = typer.Option(None, "--budget", help="Budget name (default: the suite's default_budget, else its first).")
SuiteArg = typer.Argument(..., help="A bundled suite name (see `workbench suites`) or a path to a suite YAML file.")


def _load(suite_arg: str, runs_dir: Path):
    """The suite from its name or file; else from the copy a `suite run` left under the runs folder."""
    from .layout import SuitePaths
    from .spec import load_suite, parse_suite
    from ..config.yamlio import read_yaml

    try:
        suite, path = load_suite(suite_arg)
    except WorkbenchError:
        kept = SuitePaths.under(runs_dir, str(suite_arg))
        if not kept.suite_file.is_file():
            raise
        suite, path = parse_suite(read_yaml(kept.suite_file), str(kept.suite_file)), kept.suite_file
    return suite, path, SuitePaths.under(runs_dir, suite.name)


def _planned_budget(suite, paths, budget: Optional[str]) -> str:
    """The budget to show: the one asked, else the default if it was run, else the only one run."""
    name, _ = suite.budget(budget)
    runs = paths.read_budgets()
    if budget is None and name not in runs and len(runs) == 1:
        return next(iter(runs))
    return name


@suite_app.command("run")
def run(
    suite_arg: str = SuiteArg,
    budget: Optional[str] = Budget,
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Cells run at once (local); each gets cores / N threads."),
    executor: str = typer.Option("local", "--executor", help="local | slurm (submitit; one Slurm job per cell) | "
                                                            "submitit-local (the Slurm path run here, for testing)."),
    runs_dir: Path = RunsDir,
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N for every cell."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Dataset folder (default: $WORKBENCH_DATA)."),
    models: Optional[str] = typer.Option(None, "--models", help="Comma-separated model names: run only these."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds: run only these (e.g. 0: "
                                                              "every model's first seed before any second one)."),
    evaluations: Optional[str] = typer.Option(
        None, "--evaluations", help="Comma-separated evaluation names: train, then run only these (e.g. the "
                                    "paper's protocol first, the strong one later); a rerun without it does the rest."),
    partition: Optional[str] = typer.Option(None, "--partition", help="Slurm partition (overrides the suite's)."),
    gpus: Optional[int] = typer.Option(None, "--gpus", min=0, help="Slurm GPUs per cell."),
    cpus: Optional[int] = typer.Option(None, "--cpus", min=1, help="Slurm CPUs per cell."),
    time_min: Optional[int] = typer.Option(None, "--time", min=1, help="Slurm time limit per cell, minutes."),
) -> None:
    """Train and evaluate every cell not done yet; a rerun reuses finished work and resumes stopped runs."""
    import importlib

    from .executors import EXECUTORS, RunContext
    from .plan import plan_cells, write_plan

    importlib.import_module(f"{__package__}.slurm")  # registers the Slurm executors (submitit loads later)
    make_executor = EXECUTORS.get(executor)
    suite, path, paths = _load(suite_arg, runs_dir)
    budget_name, cells = plan_cells(suite, budget)
    chosen = _only_seeds(_only_models(cells, models, suite), seeds, suite)
    only = _only_evaluations(evaluations, suite)
    write_plan(paths, path, budget_name, cells)
    todo, busy, done = _cells_to_run(paths, chosen, budget_name, only)
    err.print(f"suite {suite.name}, budget {budget_name}: {len(todo) + len(busy) + done} cells, {done} done, "
              f"{len(busy)} running elsewhere, {len(todo)} to run  ({paths.root})", highlight=False)
    for key in busy:
        err.print(f"  skip {key}: already running (see `workbench suite status {suite.name}`)", highlight=False)
    if not todo:
        return
    resources = suite.slurm.model_dump()
    for key, value in (("partition", partition), ("gpus", gpus), ("cpus", cpus), ("time_min", time_min)):
        if value is not None:
            resources[key] = value
    ctx = RunContext(suite=suite.name, budget=budget_name, evaluations=only, device=device, data_root=data_root,
                     jobs=jobs, slurm=resources, echo=_echo)
    code = make_executor().run(todo, ctx)
    if code:
        raise typer.Exit(code)


def _echo(line: str) -> None:
    """Progress on stderr; a reader that went away (`| head`) must not kill the runner with its workers."""
    try:
        err.print(line, highlight=False, soft_wrap=True)
    except (BrokenPipeError, OSError):
        pass


def _comma_list(text: str) -> list[str]:
    """The items of a comma-separated option, blanks dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _only_models(cells, models: Optional[str], suite):
    if not models:
        return cells
    wanted = _comma_list(models)
    unknown = [m for m in wanted if m not in {c.model for c in cells}]
    if unknown:
        raise WorkbenchError(f"--models: {', '.join(unknown)} not in suite {suite.name} "
                             f"({', '.join(m.name for m in suite.models)})")
    return [c for c in cells if c.model in wanted]


def _only_seeds(cells, seeds: Optional[str], suite):
    if seeds is None:
        return cells
    try:
        wanted = {int(s) for s in _comma_list(seeds)}
    except ValueError:
        raise WorkbenchError(f"--seeds: {seeds!r} is not a comma-separated list of integers") from None
    planned = sorted({c.seed for c in cells})
    if not wanted or not wanted & set(planned):
        raise WorkbenchError(f"--seeds: no cell of suite {suite.name} has seed {seeds} "
                             f"(its seeds: {', '.join(map(str, planned))})")
    return [c for c in cells if c.seed in wanted]


def _only_evaluations(evaluations: Optional[str], suite) -> tuple[str, ...] | None:
    if evaluations is None:
        return None
    wanted = tuple(_comma_list(evaluations))
    names = [ev.name for ev in suite.evaluations]
    unknown = [e for e in wanted if e not in names]
    if unknown or not wanted:
        raise WorkbenchError(f"--evaluations: {', '.join(unknown) or 'none named'} not in suite {suite.name} "
                             f"({', '.join(names)})")
    return wanted


def _cells_to_run(paths, cells, budget: str, only: tuple[str, ...] | None = None):
    """(cell folders to run, keys running elsewhere, number done), after asking Slurm about its jobs."""
    from .state import cell_state

    states = {c.key: cell_state(paths.cell(c.key), budget) for c in cells}
    # Sources of chosen forks too (left out by --models): a fork's Slurm job may be made to wait for theirs.
    forks = (paths.cell(c.key).fork_source() for c in cells)
    sources = {f[0].root.name: f[0] for f in forks if f is not None and f[0].root.name not in states}
    outside = [cell_state(src, budget) for src in sources.values()]
    _refresh_slurm([s for s in [*states.values(), *outside] if s is not None], paths)  # a dead job is not "running"
    todo, busy, done = [], [], 0
    for cell in cells:
        st = states[cell.key]
        if st is not None and st.done_for(only):
            done += 1
        elif st is not None and st.state in ("training", "evaluating", "queued"):
            busy.append(cell.key)
        else:
            todo.append(paths.cell(cell.key))
    return todo, busy, done


@suite_app.command("status")
def status(suite_arg: str = SuiteArg, budget: Optional[str] = Budget, runs_dir: Path = RunsDir,
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Every cell's state (pending, queued, training, evaluating, done, stopped, failed), epoch and accuracies."""
    from dataclasses import asdict

    from .state import cell_state

    suite, _, paths = _load(suite_arg, runs_dir)
    budget_name = _planned_budget(suite, paths, budget)
    cells = paths.cells_of(budget_name)
    if not cells:
        raise WorkbenchError(f"suite {suite.name}, budget {budget_name}: not run yet under {runs_dir} "
                             f"(start it with `workbench suite run {suite_arg} --budget {budget_name}`)")
    states = [s for s in (cell_state(c, budget_name) for c in cells) if s is not None]
    _refresh_slurm(states, paths)
    if as_json:
        print(json.dumps([{**asdict(s), "job": asdict(s.job) if s.job else None} for s in states]))
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False,
                  title=f"suite {suite.name} · budget {budget_name} · {paths.root}", title_justify="left")
    for col, justify in (("model", "left"), ("seed", "right"), ("state", "left"), ("epoch", "right"),
                         ("clean", "right"), ("robust", "right"), ("evals", "right"), ("note", "left")):
        table.add_column(col, justify=justify, no_wrap=col != "note", overflow="fold")
    colours = {"done": "green", "failed": "bold red", "training": "cyan", "evaluating": "cyan", "stopped": "yellow"}
    for s in states:
        table.add_row(Text(s.model), str(s.seed), Text(s.state, style=colours.get(s.state, "")),
                      f"{s.epoch}/{s.epochs}", _pct(s.clean), _pct(s.robust), f"{s.evaluations_done}/{s.evaluations}",
                      Text(s.message or (s.job.job_id and f"job {s.job.job_id}" or "") if s.job else s.message or ""))
    out.print(table)
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    out.print(", ".join(f"{n} {state}" for state, n in counts.items()), highlight=False)


def _refresh_slurm(states, paths) -> None:
    from .slurm import refresh_states

    refresh_states(states, paths)


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


@suite_app.command("table")
def table(
    suite_arg: str = SuiteArg,
    budget: Optional[str] = Budget,
    fmt: str = typer.Option("md", "--format", "-f", help="md | csv | latex | json"),
    columns: Optional[str] = typer.Option(None, "--columns", help="Comma-separated metric names or globs, e.g. "
                                                                  "'clean,FGSM*@0.3,worst strong@*'."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
    runs_dir: Path = RunsDir,
) -> None:
    """The suite's results: mean ± std over seeds (Wilson interval for one), the paper's number beside ours."""
    from .checks import with_checks
    from .render import FORMATS, render
    from .table import build_table

    FORMATS.get(fmt)
    suite, _, paths = _load(suite_arg, runs_dir)
    budget_name = _planned_budget(suite, paths, budget)
    if not paths.cells_of(budget_name):
        raise WorkbenchError(f"suite {suite.name}, budget {budget_name}: not run yet under {runs_dir}")
    wanted = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    text = render(with_checks(suite, paths, budget_name, build_table(suite, paths, budget_name, wanted)), fmt)
    if output is not None:
        from ..atomic import atomic_write_text

        atomic_write_text(output, text)
        err.print(f"saved: {output}", highlight=False)
    else:
        sys.stdout.write(text)


@suite_app.command("chart")
def chart(
    suite_arg: str = SuiteArg,
    budget: Optional[str] = Budget,
    png: Optional[Path] = typer.Option(None, "--png", help="Also save the chart as a PNG (needs matplotlib: "
                                                          "pip install 'workbench[plot]')."),
    runs_dir: Path = RunsDir,
    width: Optional[int] = typer.Option(None, "--width", min=30),
    height: int = typer.Option(20, "--height", min=8),
) -> None:
    """Robust accuracy vs eps per model (the worst case over every attack run), in the terminal."""
    from .chart import chart_series, save_png, terminal_chart
    from .table import build_table

    suite, _, paths = _load(suite_arg, runs_dir)
    budget_name = _planned_budget(suite, paths, budget)
    series = chart_series(build_table(suite, paths, budget_name, ["worst *"]))
    if not series:
        raise WorkbenchError(f"suite {suite.name}, budget {budget_name}: no evaluation with eps values saved yet")
    print(terminal_chart(series, f"{suite.name} ({budget_name}): robust accuracy vs eps",
                         width or min(100, out.width), height, colour=sys.stdout.isatty()))
    if png is not None:
        save_png(series, f"{suite.name} ({budget_name})", png)
        err.print(f"saved: {png}", highlight=False)


def list_suites_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the bundled suites (models, seeds, budgets, evaluations)."""
    from .spec import list_suites, load_suite

    rows = []
    for name, path in list_suites().items():
        suite, _ = load_suite(path)
        rows.append({"suite": name, "models": [m.name for m in suite.models], "seeds": suite.seeds,
                     "budgets": list(suite.budgets),
                     # a budget may give some models more seeds: its cell count says what a run trains
                     "cells": {b: sum(len(suite.seeds_of(m.name, spec)) for m in suite.models)
                               for b, spec in suite.budgets.items()}, "evaluations": [e.name for e in suite.evaluations],
                     "description": suite.description})
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(box=box.SIMPLE_HEAD, caption="run one: workbench suite run NAME [--budget B] [--jobs N]")
    for col in ("suite", "models x seeds", "budgets", "description"):
        table.add_column(col, overflow="fold", no_wrap=col == "suite")
    for r in rows:
        table.add_row(Text(r["suite"]), Text(f"{', '.join(r['models'])} x {len(r['seeds'])}"),
                      Text(", ".join(f"{b} ({n} cells)" for b, n in r["cells"].items())), Text(r["description"]))
    out.print(table)
