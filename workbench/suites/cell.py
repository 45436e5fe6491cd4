"""One cell of a suite, start to finish: train (or resume) its run, then every planned evaluation not saved yet.

Run as `python -m workbench.suites.cell CELL_DIR` by the local executor, or called as `run_cell` inside a
Slurm job. Idempotent: a finished run is not trained again, a saved evaluation is not run again, a
stopped run resumes from its last checkpoint. SIGTERM during training checkpoints and stops (nothing
lost); during an evaluation it abandons that evaluation (it reruns whole next time).
"""

from __future__ import annotations

import argparse
import fcntl
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..allocator import keep_freed_memory
from ..errors import WorkbenchError
from .layout import CellPaths
from .state import find_evaluation, mark_job, planned_evaluations, worker_started


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass  # set once per process; a second cell in the same process keeps it


def train_cell(cell: CellPaths, plan: dict[str, Any], device: str, data_root: str | None) -> str:
    """The cell's run trained to its end; the run's final state."""
    from ..config.profiles import validate_config
    from ..runs import Status
    from ..stop_request import StopRequest
    from ..training import prepare_run, run_training
    from ..training.reporting import reporter_for

    run = cell.run()
    if run is not None:
        status = Status.read(run.status)
        if status is not None and status.state == "finished" and run.last.exists():
            return "finished"
    else:
        cfg = validate_config(plan["config"], str(cell.plan))
        run = prepare_run(cfg, cell.root, Path(plan["profile"]), data_root=data_root, device=device)
    print(f"run: {run.root}", flush=True)
    fork, fork_from = cell.fork_source(), cell.fork_snapshots()
    if fork is not None and cell.fork_snapshot() is None and not run.last.exists():
        print(f"note: {fork[0].root.name} has not kept its state after epoch {fork[1]}", flush=True)
    return run_training(run.root, device=None if device == "auto" else device, data_root=data_root,
                        reporter=reporter_for(sys.stdout), stop=StopRequest(), fork_from=fork_from,
                        snapshot_epochs=plan.get("snapshot_epochs") or ())


def evaluation_protocols(spec: dict[str, Any]):
    """The protocols of a planned evaluation, built once the checkpoint's dataset is known."""
    from ..evaluation import AttackOptions, parse_choice
    from ..evaluation.custom import build_spec
    from ..evaluation.protocol import Protocol
    from ..evaluation.request import requested_protocols

    entries = [a if isinstance(a, dict) else {"attack": a} for a in spec.get("attacks") or []]
    norm = spec.get("norm", "linf")

    def custom(eps_values: list[float]) -> Protocol | None:
        specs = []
        for entry in entries:
            attack = build_spec(parse_choice(entry["attack"]), AttackOptions(eps=entry.get("eps") or eps_values,
                                                                              norm=norm))
            attack.label = entry.get("label") or attack.label
            attack.max_samples = entry.get("n")
            attack.monotone = entry.get("monotone", True)
            specs.append(attack)
        return Protocol(spec["name"], specs, f"the suite's {spec['name']} attacks") if specs else None

    def protocols_for(info: dict[str, Any]):
        protocols = requested_protocols(info, preset=spec.get("preset"), eps=spec.get("eps"), norm=norm,
                                        strong=bool(spec.get("strong")), adaptive=bool(spec.get("adaptive")),
                                        custom=custom)
        caps = spec.get("attack_n") or {}
        for attack in (a for p in protocols for a in p.specs if a.label in caps):
            attack.max_samples = min(attack.max_samples or caps[attack.label], caps[attack.label])
        return protocols

    return protocols_for


def evaluate_cell(cell: CellPaths, plan: dict[str, Any], suite: str, device: str, data_root: str | None,
                  budget: str | None = None, only: tuple[str, ...] | None = None) -> None:
    from ..evaluation import evaluate_checkpoint, save_evaluation
    from ..progress import open_display
    from ..training.trainer import resolve_device

    run = cell.run()
    assert run is not None
    dev = resolve_device(device)
    for ev in planned_evaluations(plan, budget):
        if (only is not None and ev["name"] not in only) or find_evaluation(run, ev["key"]) is not None:
            continue
        spec = ev["spec"]
        journal = cell.root / f"evaluation-{ev['key']}.journal.pt"  # a kill resumes at the last finished pass
        print(f"evaluation {ev['name']}: {run.last}" + (" (resuming)" if journal.exists() else ""), flush=True)
        display = open_display(False, sys.stdout)
        t0 = time.time()
        try:
            report, outcomes = evaluate_checkpoint(run.last, evaluation_protocols(spec), n=spec.get("n"),
                                                   batch_size=spec.get("batch_size", 500), data_root=data_root,
                                                   device=dev, seed=spec.get("seed", 0), on_progress=display,
                                                   head=spec.get("head", "softmax"), journal=journal)
        finally:
            if display is not None:
                display.close()
        report["suite"] = {"suite": suite, "cell": cell.root.name, "model": plan["model"], "seed": plan["seed"],
                           "evaluation": ev["name"], "key": ev["key"], "seconds": time.time() - t0}
        saved = save_evaluation(report, outcomes)
        journal.unlink(missing_ok=True)
        print(f"evaluation {ev['name']} saved: {saved} ({time.time() - t0:.0f} s)", flush=True)


def _interrupt(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def run_cell(cell_dir: str | Path, suite: str, device: str = "auto", data_root: str | None = None,
             threads: int | None = None, budget: str | None = None,
             evaluations: tuple[str, ...] | None = None) -> str:
    """Train and evaluate one cell (only the named evaluations, if given); records the outcome in its
    job.json and returns it."""
    cell = CellPaths(Path(cell_dir))
    plan = cell.read_plan()
    if not plan:
        raise WorkbenchError(f"{cell.root}: no cell.json (plan the suite with `workbench suite run`)")
    with cell_lock(cell) as mine:
        if not mine:
            print(f"{cell.root.name}: another worker is running this cell; leaving it", flush=True)
            return "busy"
        return _run_locked(cell, plan, suite, device, data_root, threads, budget, evaluations)


@contextmanager
def cell_lock(cell: CellPaths) -> Iterator[bool]:
    """One worker per cell (two `suite run`s, or a local run beside a Slurm job, must not both train it)."""
    with open(cell.root / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _run_locked(cell: CellPaths, plan: dict[str, Any], suite: str, device: str, data_root: str | None,
                threads: int | None, budget: str | None, only: tuple[str, ...] | None) -> str:
    worker_started(cell, threads)
    _set_threads(threads)
    try:
        state = train_cell(cell, plan, device, data_root)
        if state != "finished":
            run = cell.run()
            from ..runs import Status

            status = Status.read(run.status) if run else None
            message = (status.message if status else "") or f"training {state}"
            mark_job(cell, state="failed" if state == "failed" else "stopped", ended=time.time(), message=message)
            return state
        previous = signal.signal(signal.SIGTERM, _interrupt)  # an evaluation has no checkpoint: unwind cleanly
        try:
            evaluate_cell(cell, plan, suite, device, data_root, budget, only)
        finally:
            signal.signal(signal.SIGTERM, previous)
    except KeyboardInterrupt:
        mark_job(cell, state="stopped", ended=time.time(), message="stopped during evaluation (a rerun resumes it "
                                                                   "after its last finished attack pass)")
        return "stopped"
    except Exception as exc:
        message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        mark_job(cell, state="failed", ended=time.time(), message=message)
        raise
    run = cell.run()
    left = [ev["name"] for ev in planned_evaluations(plan, budget)
            if only is not None and run is not None and find_evaluation(run, ev["key"]) is None]
    if left:
        # The evaluations asked for are saved; the cell is not done until a run without --evaluations.
        mark_job(cell, state="stopped", ended=time.time(), message=f"not run yet (--evaluations): {', '.join(left)}")
        return "partial"
    mark_job(cell, state="done", ended=time.time(), message="")
    return "done"


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cell_dir")
    ap.add_argument("--suite", required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--budget", default=None, help="whose evaluations to run (default: the budget planned last)")
    ap.add_argument("--evaluations", default=None, help="comma-separated: run only these evaluations")
    args = ap.parse_args(argv)
    only = tuple(args.evaluations.split(",")) if args.evaluations is not None else None
    try:
        state = run_cell(args.cell_dir, args.suite, args.device, args.data_root, args.threads, args.budget, only)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return {"done": 0, "partial": 0, "stopped": 3, "busy": 4}.get(state, 1)


if __name__ == "__main__":
    sys.exit(main())
