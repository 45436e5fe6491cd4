"""The files of a suite under a runs folder (torch-free: the TUI and `suite status` read them).

<runs>/suites/<suite name>/
  suite.yaml            the suite file the last `suite run` used
  budgets.json          budget name -> the cell keys it planned
  cells/<model>-s<seed>-<hash>/
    cell.json           what to train and evaluate (model, seed, resolved config, evaluations)
    job.json            who runs it: executor, pid or Slurm job id, state, start / end, message
    cell.log            the cell's output (training progress, evaluation stages)
    <name>-<time>/      the run folder (as `workbench train` makes it); evaluations in its evals/
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..runs import RunPaths, Status, read_json

SUITES_DIR = "suites"


@dataclass(frozen=True)
class CellPaths:
    root: Path

    plan = property(lambda self: self.root / "cell.json")
    job = property(lambda self: self.root / "job.json")
    log = property(lambda self: self.root / "cell.log")

    def run(self) -> RunPaths | None:
        """The cell's run folder, once training has created it (the newest, should there be several)."""
        try:
            found = sorted(p for p in self.root.iterdir() if p.is_dir() and (p / "config.yaml").is_file())
        except OSError:
            return None
        return RunPaths(found[-1]) if found else None

    def read_plan(self) -> dict[str, Any] | None:
        return read_json(self.plan)

    def fork_source(self) -> tuple["CellPaths", int] | None:
        """(source cell, epochs) of the fork the plan asks for, if any."""
        fork = (self.read_plan() or {}).get("fork")
        return (CellPaths(self.root.parent / fork["cell"]), int(fork["epochs"])) if fork else None

    def fork_snapshot(self) -> Path | None:
        """The source cell's kept state this cell's run starts from, once the source has written it."""
        found = self.fork_snapshots()
        return found[0] if found and found[0].name == f"epoch-{self.fork_source()[1]}" else None

    def awaited_source(self) -> "CellPaths | None":
        """The source cell whose kept state this cell would start from, while it may still be written. None when
        the cell forks from nothing, the state is kept, the cell's own run has started (it resumes), or the
        source's run is past that epoch without keeping it (planned before the fork: it never will)."""
        fork = self.fork_source()
        if fork is None or self.fork_snapshot() is not None:
            return None
        run = self.run()
        if run is not None and run.last.exists():
            return None
        source_run = fork[0].run()
        status = Status.read(source_run.status) if source_run is not None else None
        # status.json says epoch K only after epoch K's snapshot is written (Trainer: snapshot, then status).
        return None if status is not None and status.epoch >= fork[1] else fork[0]

    def fork_snapshots(self) -> list[Path]:
        """The source's kept states this cell's run may start from, latest first: the planned one, then earlier
        ones (kept for other forks) should the source's records rule the planned one out (a gated warm-up)."""
        fork = self.fork_source()
        run = fork[0].run() if fork else None
        if run is None:
            return []
        return [run.snapshot(k) for k in range(fork[1], 0, -1) if run.snapshot(k).is_dir()]


@dataclass(frozen=True)
class SuitePaths:
    root: Path

    suite_file = property(lambda self: self.root / "suite.yaml")
    budgets_file = property(lambda self: self.root / "budgets.json")
    cells_dir = property(lambda self: self.root / "cells")

    @classmethod
    def under(cls, runs_dir: Path, suite_name: str) -> "SuitePaths":
        return cls(Path(runs_dir) / SUITES_DIR / suite_name)

    def cell(self, key: str) -> CellPaths:
        return CellPaths(self.cells_dir / key)

    def read_budgets(self) -> dict[str, list[str]]:
        data = read_json(self.budgets_file)
        return {k: [str(c) for c in v] for k, v in data.items() if isinstance(v, list)} if data else {}

    def cells_of(self, budget: str) -> list[CellPaths]:
        return [self.cell(k) for k in self.read_budgets().get(budget, [])]


def find_suites(runs_dir: Path) -> list[SuitePaths]:
    """Every suite a `suite run` has planned under `runs_dir`, by name."""
    folder = Path(runs_dir) / SUITES_DIR
    try:
        return sorted((SuitePaths(p) for p in folder.iterdir() if (p / "budgets.json").is_file()),
                      key=lambda s: s.root.name)
    except OSError:
        return []
