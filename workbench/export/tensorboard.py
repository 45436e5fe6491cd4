"""A run as TensorBoard event files: its metrics stream, its saved evaluations and its config.

Tags (every value a scalar; the wall time of each point is the record's or report's own time):

  epoch/<key>       every numeric key of an epoch record (train_loss, train_acc, test_clean_acc,
                    test_robust_acc, robust_eps, lr, seconds, eval_seconds, loss_<part>, the defense's
                    metrics...) at step = the epoch number (1, 2, ...)
  step/<key>        every numeric key of a step record (train_loss, train_acc, lr) at the global step
  eval/clean                          clean accuracy of an evaluation
  eval/<protocol>/<label>@<eps>       robust accuracy at an L-inf eps (e.g. eval/paper/FGSM@0.1)
  eval/<protocol>/<label>@<norm>=<eps>   ... at an eps of another norm (e.g. @l2=0.5)
  eval/<protocol>/<label>@<param>=<v> ... at a value of another sweep parameter (DeepFool's max_ratio)
  eval/<protocol>/<label>             robust accuracy of a minimum-norm attack (no eps), with
  eval/<protocol>/<label>/mean_norm   its mean perturbation norm
  eval/<protocol>/worst@<eps>         worst case over the protocol's attacks at that eps (same @ forms)

An evaluation's step is the epoch of the checkpoint it evaluated when that checkpoint is unchanged
since (its file is not newer than the report), else 0. Bookkeeping keys (epoch, step, batch, time)
and non-numbers (phase, null, booleans) are not scalars. The config is the text `config` and the
run's hyperparameters (its scalar config values, dotted keys) go to TensorBoard's HPARAMS tab.

Writing into a folder first removes the event files an earlier export left there, so a re-export
replaces, never duplicates. TensorBoard is optional: `pip install 'workbench[tensorboard]'`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from ..errors import WorkbenchError, describe_os_error
from ..runs import RunPaths, read_json, read_metrics
from ..runs.evals import as_number, report_entries

SKIP_KEYS = frozenset({"kind", "epoch", "step", "batch", "time"})  # positions and timestamps, not metrics
NOT_HPARAMS = ("description", "provenance")
HPARAM_METRICS = ("epoch/test_clean_acc", "epoch/test_robust_acc", "eval/clean")


class Scalar(NamedTuple):
    tag: str
    value: float
    step: int
    walltime: float | None = None


@dataclass
class Exported:
    run: Path
    folder: Path
    scalars: int
    epochs: int
    steps: int
    evaluations: int


def summary_writer_class():
    """torch's SummaryWriter; a one-line WorkbenchError when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise WorkbenchError("TensorBoard export needs the tensorboard package: "
                             "pip install 'workbench[tensorboard]'") from None
    return SummaryWriter


# -- metrics.jsonl ---------------------------------------------------------------------------

def record_scalars(record: dict[str, Any]) -> list[Scalar]:
    """The scalars of one metrics record ([] for a record of another kind or without a position)."""
    kind = record.get("kind")
    position = as_number(record.get("epoch" if kind == "epoch" else "step"))
    if kind not in ("epoch", "step") or position is None:
        return []
    walltime = as_number(record.get("time"))
    return [Scalar(f"{kind}/{key}", number, int(position), walltime)
            for key, value in record.items()
            if key not in SKIP_KEYS and (number := as_number(value)) is not None]


# -- evaluations -----------------------------------------------------------------------------

def _at(row: dict[str, Any]) -> str:
    """The `@...` suffix of a result or worst-case row; '' for a minimum-norm row."""
    eps = as_number(row.get("eps"))
    norm = row.get("norm")
    if eps is not None:
        return f"@{eps:g}" if norm in (None, "linf") else f"@{norm}={eps:g}"
    value, param = as_number(row.get("value")), row.get("sweep_param")
    return f"@{param}={value:g}" if value is not None and param else ""


def report_scalars(report: dict[str, Any], step: int) -> list[Scalar]:
    """The scalars of one saved evaluation report, all at `step`."""
    walltime = as_number(report.get("created"))
    out = []
    clean = as_number(report.get("clean_accuracy"))
    if clean is not None:
        out.append(Scalar("eval/clean", clean, step, walltime))
    for row in report_entries(report, "results"):
        tag = f"eval/{row.get('protocol')}/{row.get('label') or row.get('attack')}{_at(row)}"
        acc = as_number(row.get("robust_accuracy"))
        if acc is not None:
            out.append(Scalar(tag, acc, step, walltime))
        norm = as_number(row.get("mean_norm"))
        if not _at(row) and norm is not None:
            out.append(Scalar(f"{tag}/mean_norm", norm, step, walltime))
    for row in report_entries(report, "worst_case"):
        acc = as_number(row.get("robust_accuracy"))
        if acc is not None:
            out.append(Scalar(f"eval/{row.get('protocol')}/worst{_at(row)}", acc, step, walltime))
    return out


def checkpoint_epoch(run: RunPaths, report: dict[str, Any], cache: dict[str, int | None]) -> int | None:
    """The epoch of the run checkpoint a report evaluated, if that file has not changed since.

    The checkpoint is looked up by name in this run's checkpoints/ (a copied run keeps its reports'
    absolute paths of the original)."""
    name = Path(str(report.get("checkpoint") or "")).name
    created = as_number(report.get("created"))
    path = run.checkpoints / name
    try:
        if not name or created is None or path.stat().st_mtime > created:
            return None
    except OSError:
        return None
    if name not in cache:
        cache[name] = _read_epoch(path)
    return cache[name]


def _read_epoch(path: Path) -> int | None:
    from ..checkpoint import read_checkpoint

    try:
        position = read_checkpoint(path).get("position")
    except WorkbenchError:
        return None
    epoch = as_number(position.get("epoch")) if isinstance(position, dict) else None
    return int(epoch) if epoch is not None else None


def evaluation_scalars(run: RunPaths) -> tuple[list[Scalar], int]:
    """The scalars of every saved evaluation of the run, and how many reports they came from.

    Ordered by step, then time: TensorBoard's loader drops a tag's points when its steps go back."""
    reports, cache = [], {}
    for path in sorted(run.evals.glob("*.json")) if run.evals.is_dir() else []:
        report = read_json(path)
        if report is None or "results" not in report:
            continue  # audits, half-written or foreign files
        step = checkpoint_epoch(run, report, cache) or 0
        reports.append((step, as_number(report.get("created")) or 0.0, path.name, report))
    reports.sort(key=lambda r: r[:3])
    return [s for step, _, _, report in reports for s in report_scalars(report, step)], len(reports)


# -- config ------------------------------------------------------------------------------------

def read_config(run: RunPaths) -> tuple[str, dict[str, Any]]:
    """The config's text and its mapping ({} when it cannot be parsed)."""
    from ..config.yamlio import read_yaml

    try:
        text = run.config.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise WorkbenchError(f"{run.config}: cannot read: {exc.strerror or exc}") from None
    try:
        data = read_yaml(run.config)
    except WorkbenchError:
        data = None
    return text, data if isinstance(data, dict) else {}


def hparams_of(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar config values under dotted keys; lists as JSON text (the hparams plugin takes scalars only)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(hparams_of(value, f"{name}."))
        elif isinstance(value, (bool, str)) or as_number(value) is not None:
            out[name] = value
        elif isinstance(value, list):
            out[name] = json.dumps(value)
    return out


# -- writing -----------------------------------------------------------------------------------

def clear_events(folder: Path) -> None:
    """Remove the event files of an earlier export (only those: the folder may hold other files)."""
    for path in folder.glob("events.out.tfevents.*"):
        if path.is_file():
            path.unlink()


def export_run(run: RunPaths, folder: Path) -> Exported:
    """Write one run's event file into `folder` (created; earlier event files there are replaced)."""
    SummaryWriter = summary_writer_class()
    if not run.is_run():
        raise WorkbenchError(f"{run.root} is not a run folder (no config.yaml)")
    records = list(read_metrics(run.metrics))
    scalars = [s for r in records for s in record_scalars(r)]
    evals, reports = evaluation_scalars(run)
    text, config = read_config(run)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        clear_events(folder)
        writer = SummaryWriter(log_dir=str(folder))
    except OSError as exc:
        raise WorkbenchError(describe_os_error(exc, folder)) from None
    try:
        for s in [*scalars, *evals]:
            writer.add_scalar(s.tag, s.value, s.step, walltime=s.walltime)
        # Indented: TensorBoard renders text as markdown, and YAML's newlines would collapse.
        writer.add_text("config", "".join(f"    {line}\n" for line in text.splitlines()), 0)
        _add_hparams(writer, hparams_of({k: v for k, v in config.items() if k not in NOT_HPARAMS}),
                     {s.tag for s in [*scalars, *evals]})
    finally:
        writer.close()
    return Exported(run.root, folder, len(scalars) + len(evals),
                    epochs=sum(r.get("kind") == "epoch" for r in records),
                    steps=sum(r.get("kind") == "step" for r in records), evaluations=reports)


def _add_hparams(writer, hparams: dict[str, Any], tags: set[str]) -> None:
    # In the run's own folder: SummaryWriter.add_hparams would make a new subfolder per call.
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    metrics = {tag: 0.0 for tag in HPARAM_METRICS if tag in tags}  # the values are read from the scalars
    if not hparams or not metrics:
        return
    for summary in hparams_summaries(hparams, metrics):
        writer._get_file_writer().add_summary(summary)


def export_runs(runs: list[tuple[RunPaths, Path]]) -> Iterator[Exported]:
    """export_run for each (run, folder), one at a time (the caller prints as they finish)."""
    for run, folder in runs:
        yield export_run(run, folder)
