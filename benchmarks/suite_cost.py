"""What a suite's budget costs, from the cells it has already run: training and evaluation time per cell,
and the wall time `suite run --jobs J` would take with those cells.

Training time comes from the times of the run's metrics records, with long gaps (the process stopped,
or not running between a kill and its resume) left out; evaluation time from each evaluation report's
rows, which keep any pause. So cells that were resumed or reused across sessions count only the work
they did, and cells that shared their cores with other work give upper bounds. The wall time assumes
`--jobs J` cells at a time, started in the suite's order with the cells others fork from first (as `suite
run` starts them; a fork's wait for its source's snapshot is not modelled), each taking its recorded time (a
cell not done counts what it has recorded so far, and the output says so).

    python benchmarks/suite_cost.py pcl_mnist --runs runs --jobs 2
    python benchmarks/suite_cost.py suites/adr_mnist.yaml --runs /tmp/runs --budget cpu --jobs 4
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
import sys
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.runs import RunPaths
from workbench.runs.files import load_json
from workbench.suites.layout import SuitePaths
from workbench.suites.plan import plan_cells
from workbench.suites.spec import load_suite
from workbench.suites.state import cell_state, find_evaluation, planned_evaluations


def training_seconds(run: RunPaths) -> tuple[float, float]:
    """(training seconds, seconds left out as pauses) from the times of the run's metrics records; a forked run
    counts the epochs it trained, not those it took from its source (whose records it starts with).

    A gap between two records far longer than the run's usual gap (over 10x the median, and over a minute)
    is a pause: the process stopped (SIGSTOP, a laptop asleep) or not running (between a kill and the
    resume). It counts as one usual gap.
    """
    times = []
    try:
        lines = run.metrics.read_text().splitlines()
    except OSError:
        return 0.0, 0.0
    forked = ((load_json(run.root / "run.json") or {}).get("forked_from") or {}).get("epochs") or 0
    for line in lines:
        try:
            record = json.loads(line)
            value = record.get("time")
        except (ValueError, AttributeError):
            continue
        if isinstance(value, (int, float)) and (record.get("epoch") or 0) > forked:
            times.append(float(value))
    gaps = [b - a for a, b in zip(times, times[1:]) if b >= a]
    if not gaps:
        return 0.0, 0.0
    usual = statistics.median(gaps)
    paused = [g for g in gaps if g > max(60.0, 10 * usual)]
    # The first record comes one usual gap after the start.
    return sum(gaps) - sum(paused) + usual * (len(paused) + 1), sum(paused) - usual * len(paused)


def evaluation_seconds(run: RunPaths, plan: dict, budget: str) -> float:
    total = 0.0
    for ev in planned_evaluations(plan, budget):
        found = find_evaluation(run, str(ev.get("key")))
        report = load_json(found) if found else None
        if report:
            # One attack run covers every eps of a sweep, and each of its rows repeats the run's seconds.
            runs = {(row.get("protocol"), row.get("label")): float(row.get("seconds") or 0)
                    for row in report.get("results") or []}
            total += float(report.get("clean_seconds") or 0) + sum(runs.values())
    return total


def wall_time(costs: list[float], jobs: int) -> float:
    """Cells started in order on the first of `jobs` free slots."""
    slots = [0.0] * max(1, jobs)
    for cost in costs:
        heapq.heappush(slots, heapq.heappop(slots) + cost)
    return max(slots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", help="a bundled suite's name or a suite YAML")
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--budget", default=None, help="default: the suite's default budget")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    try:
        suite, _ = load_suite(args.suite)
        budget, cells = plan_cells(suite, args.budget)
    except WorkbenchError as exc:
        sys.exit(f"error: {exc}")
    paths = SuitePaths.under(args.runs, suite.name)
    print(f"suite {suite.name}, budget {budget}, {len(cells)} cells, runs under {paths.root}")
    print(f"{'cell':<34} {'state':<10} {'train min':>9} {'eval min':>9} {'total min':>9}")
    costs, total_paused, unfinished = [], 0.0, 0
    cells = sorted(cells, key=lambda c: not c.snapshot_epochs)  # the local executor's order
    for cell in cells:
        folder = paths.cell(cell.key)
        state = cell_state(folder, budget)
        # A failed cell (say, stopped by a feature-health rule) has nothing left to do either.
        unfinished += state is None or state.state not in ("done", "failed")
        run = folder.run()
        plan = folder.read_plan() or {}
        train, paused = training_seconds(run) if run else (0.0, 0.0)
        total_paused += paused
        evals = evaluation_seconds(run, plan, budget) if run else 0.0
        costs.append(train + evals)
        label = state.state if state else "not run"
        print(f"{cell.key:<34} {label:<10} {train / 60:9.1f} {evals / 60:9.1f} {(train + evals) / 60:9.1f}")
    print(f"sum of cells: {sum(costs) / 60:.1f} min of one core each; with --jobs {args.jobs}: "
          f"{wall_time(costs, args.jobs) / 60:.1f} min wall"
          + (f" ({unfinished} cells not done: their remaining work is not counted)" if unfinished else ""))
    if total_paused:
        print(f"left out of training: {total_paused / 60:.1f} min of pauses (evaluations keep theirs)")


if __name__ == "__main__":
    main()
