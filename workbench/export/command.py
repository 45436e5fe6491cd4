"""`workbench export`: a run's or a suite's metrics and evaluations as TensorBoard event files.

Torch-free at import (the CLI starts without torch); `register(app)` adds the command to the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import WorkbenchError


def register(app: typer.Typer) -> None:
    """Add the `export` command to `app`."""
    app.command(name="export")(export)


def export(
    target: str = typer.Argument(..., help="A run folder, or a suite: a bundled suite name, a suite YAML file or "
                                           "its folder (RUNS/suites/<name>)."),
    tensorboard: Path = typer.Option(..., "--tensorboard", help="Folder for the event files: one subfolder per run "
                                                               "(view with `tensorboard --logdir DIR`)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs", help="Runs folder; a suite's cells live in "
                                                               "RUNS/suites/<name>/."),
    budget: Optional[str] = typer.Option(None, "--budget", help="A suite's budget: only its cells (default: every "
                                                               "budget's)."),
) -> None:
    """Write TensorBoard event files from a run's metrics.jsonl and saved evaluations (needs tensorboard)."""
    from .tensorboard import export_runs, summary_writer_class

    if tensorboard.exists() and not tensorboard.is_dir():
        raise WorkbenchError(f"--tensorboard {tensorboard} is not a folder")
    runs, skipped = resolve_target(target, runs_dir, budget)
    summary_writer_class()  # a missing tensorboard fails before any folder is written
    total = 0
    for done in export_runs([(run, tensorboard / (name or run.root.resolve().name))
                             for name, run in runs]):
        total += done.scalars
        print(f"{done.folder}: {done.scalars} scalars ({done.epochs} epochs, {done.steps} steps, "
              f"{done.evaluations} evaluations) from {done.run}", flush=True)
    for key, why in skipped:
        print(f"skipped {key}: {why}")
    print(f"wrote {total} scalars for {len(runs)} run{'s' if len(runs) != 1 else ''} to {tensorboard} "
          f"(view: tensorboard --logdir {tensorboard})")


def resolve_target(target: str, runs_dir: Path, budget: str | None):
    """([(subfolder name, run)], [(cell key, why it has none)]); the name is '' for a lone run (its own folder name)."""
    from ..runs import RunPaths
    from ..suites.layout import SuitePaths

    path = Path(target).expanduser()
    if path.is_dir():
        if RunPaths(path).is_run():
            if budget is not None:
                raise WorkbenchError("--budget selects a suite's cells; it does not apply to a run folder")
            return [("", RunPaths(path))], []
        if SuitePaths(path).budgets_file.is_file():
            return suite_runs(SuitePaths(path), budget)
        raise WorkbenchError(f"{path} is neither a run folder (no config.yaml) nor a suite folder (no budgets.json)")
    return suite_runs(_suite_folder(target, path, runs_dir), budget)


def _suite_folder(target: str, path: Path, runs_dir: Path):
    """The folder of a suite given by YAML file or name: RUNS/suites/<suite name>."""
    from ..suites.layout import SuitePaths
    from ..suites.spec import list_suites, load_suite

    kept = SuitePaths.under(runs_dir, target)
    if not path.is_file() and kept.budgets_file.is_file():
        return kept  # a suite run earlier under this name (its YAML need not be at hand)
    if not path.is_file() and path.suffix not in (".yaml", ".yml") and target not in list_suites():
        raise WorkbenchError(f"{target}: no such run folder, suite folder or suite (bundled suites: "
                             f"{', '.join(list_suites()) or 'none'})")
    suite, _ = load_suite(target)
    paths = SuitePaths.under(runs_dir, suite.name)
    if not paths.budgets_file.is_file():
        raise WorkbenchError(f"suite {suite.name} has not been run under {runs_dir} (no {paths.budgets_file})")
    return paths


def suite_runs(paths, budget: str | None):
    """The runs of a suite's cells, named by cell key, and the cells left out with why."""
    budgets = paths.read_budgets()
    if budget is not None and budget not in budgets:
        raise WorkbenchError(f"suite {paths.root.name}: no budget {budget!r} was run; "
                             f"budgets: {', '.join(budgets) or 'none'}")
    keys = budgets[budget] if budget is not None else [k for keys in budgets.values() for k in keys]
    runs, skipped = [], []
    for key in dict.fromkeys(keys):
        # The key names a folder here and under --tensorboard: a hand-edited budgets.json must not reach out.
        if not _plain_name(key):
            skipped.append((key, "not a cell folder name"))
        elif (run := paths.cell(key).run()) is None:
            skipped.append((key, "no run yet"))
        else:
            runs.append((key, run))
    if not runs:
        raise WorkbenchError(f"suite {paths.root.name}: no cell has a run yet ({paths.root})")
    return runs, skipped


def _plain_name(key: str) -> bool:
    return key not in ("", ".", "..") and "/" not in key and "\\" not in key
