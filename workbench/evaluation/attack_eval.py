"""`workbench attack`: evaluate a checkpoint under protocols of attacks; save JSON, CSV and examples.

Results go to the checkpoint's `evals/` folder (the run's `evals/` for a run checkpoint),
where the TUI lists them: `<stem>-<time>.json` (the full report), `.csv` (one row per
attack and eps, then the worst cases, then one row per attack, eps and stage with `stage`,
`stage_seconds`, `stage_attacked`, `stage_broken` set: empty `stage` on every other row) and, with
`--save-examples N`, `-examples.pt` (tensors only, loadable with `torch.load(weights_only=True)`): per
attack and eps, up to N fooled and N robust clean/adversarial pairs.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..accel import Precision, amp_name, compile_model, resolve_amp
from ..atomic import atomic_write_bytes, atomic_write_text
from ..checkpoint import build_model, defense_from_checkpoint, model_from_checkpoint, read_checkpoint
from ..data import load_raw
from ..errors import WorkbenchError
from ..progress.event import ProgressHook
from ..provenance import provenance
from ..runs import write_json_atomic
from ..runs.evals import evals_dir_for, reserve_name, resolve_checkpoint
from .engine import SpecOutcome, evaluate
from .protocol import AttackSpec, Protocol


def check_eps_list(eps: list[float]) -> list[float]:
    if not eps:
        raise WorkbenchError("--eps needs at least one value")
    for e in eps:
        if not (math.isfinite(e) and e >= 0):
            raise WorkbenchError(f"--eps values must be finite numbers >= 0 (got {e})")
    return eps


def check_linf_eps(eps: list[float]) -> None:
    for e in eps:
        if e > 1:
            raise WorkbenchError(f"--eps {e} is larger than the whole [0, 1] pixel range; L-inf eps is in pixel "
                                 "units (e.g. 0.3 or 8/255=0.031)")


def load_checkpoint_model(checkpoint: str | Path, device: torch.device,
                          head: str = "softmax") -> tuple[Path, dict[str, Any], Any]:
    ckpt = resolve_checkpoint(checkpoint)
    data = read_checkpoint(ckpt)
    return ckpt, data, model_from_checkpoint(data, ckpt, device, head)


def _plain(value: Any) -> Any:
    """Attack parameters as JSON: a callable (an adaptive loss) by its name, not its address."""
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def adaptive_loss(data: dict[str, Any], ckpt: Path) -> Callable:
    """The defense's own objective, for adaptive attacks (the PCL papers attack CE + PC)."""
    recipe = data["model"]
    defense = recipe.get("defense") or {"name": "softmax", "params": {}}
    # The loss may need the run's auxiliary state (PCL's prototypes and heads), loaded beside a CPU copy of
    # the model; it follows the attacked inputs to their device.
    loss = defense_from_checkpoint(data, build_model(recipe), ckpt).attack_loss()
    if loss is None:
        raise WorkbenchError(f"{ckpt}: defense {defense['name']!r} trains on cross-entropy; it has no adaptive "
                             "loss beyond the standard attacks (drop --adaptive)")
    return loss


def adaptive_protocol(loss: Callable, eps: list[float], norm: str) -> Protocol:
    name = getattr(loss, "__name__", "defense loss")
    return Protocol("adaptive", [
        AttackSpec("pgd", {"steps": 100, "restarts": 2, "loss": loss, "norm": norm}, eps, f"PGD-100x2 {name}"),
        AttackSpec("apgd", {"steps": 100, "loss": loss, "norm": norm}, eps, f"APGD-100 {name}"),
    ], "white-box attacks on the defense's own training objective", cascade=True)


def evaluate_checkpoint(
    checkpoint: str | Path,
    protocols: list[Protocol] | Callable[[dict[str, Any]], list[Protocol]],
    *,
    n: int | None = None,
    batch_size: int = 500,
    data_root: str | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    transfer_from: str | Path | None = None,
    targeted: bool = False,
    save_examples: int = 0,
    on_progress: ProgressHook | None = None,
    head: str = "softmax",
    amp: str = "off",
    channels_last: bool = False,
    compile: bool = False,
    journal: str | Path | None = None,
) -> tuple[dict[str, Any], list[SpecOutcome]]:
    """Evaluate a checkpoint under `protocols`; returns the report (plain data) and the raw outcomes.

    Speed options: `amp` (auto | bf16 | fp16 | off, default off: float32) and `channels_last` set how
    every model forward runs (attacks keep their arithmetic on x in float32); `compile` attacks a
    torch.compile'd view of the model (the one that crafts the examples: the source under transfer),
    built once and shared by every attack. The checkpoint itself is never modified.

    `journal`: a file where progress is saved after every attack pass; a rerun with the same checkpoint and
    settings resumes from it (it is removed once the report exists). Not with `save_examples`."""
    device = torch.device(device)
    precision = Precision(resolve_amp(amp, device), bool(channels_last))  # bad names fail before any loading
    ckpt, data, model = load_checkpoint_model(checkpoint, device, head)
    dataset = data.get("dataset")
    if not isinstance(dataset, str):
        raise WorkbenchError(f"{ckpt}: checkpoint does not name its dataset")
    source_path, source = (None, None) if transfer_from is None else _transfer_source(transfer_from, device, dataset)
    if callable(protocols):  # built once the checkpoint's dataset is known (per-dataset eps and settings)
        protocols = protocols({"dataset": dataset, "recipe": data, "path": ckpt})
    x, y = _test_samples(dataset, n, data_root, device)
    if compile:  # a compiled view sharing the parameters; the loaded model stays as it was
        if source is not None:
            source = compile_model(source)
        else:
            model = compile_model(model)
    book = None
    if journal is not None and not save_examples:
        from .journal import EvalJournal

        # Everything that changes the outcome: a journal written under other settings is not resumed.
        book = EvalJournal(journal, {
            "checkpoint": str(ckpt.resolve()), "size": ckpt.stat().st_size, "mtime": ckpt.stat().st_mtime_ns,
            "n": len(y), "seed": seed, "batch_size": batch_size, "head": head, "targeted": targeted,
            "transfer": str(source_path) if source_path else None, "amp": amp,
            "protocols": _protocols_identity(protocols)})
    report, outcomes = evaluate(model, x, y, protocols, batch_size=batch_size, seed=seed, craft_model=source,
                                targeted=targeted, save_examples=save_examples, on_progress=on_progress,
                                precision=precision, journal=book)
    report.update(_report_header(ckpt, data, dataset, source_path, head, seed, device, precision, compile))
    report.update({
        # What was asked for, beside what ran (results' settings): the TUI's rerun tells a chosen value from an
        # "auto" one (absent here) and restores the examples count.
        "save_examples": save_examples,
        "specs": [{"protocol": p.name, "attack": s.attack, "params": _plain(s.params), "sweep_param": s.sweep_param,
                   "sweep": s.sweep} for p in protocols for s in p.specs],
        "created": time.time(),
        "provenance": provenance(),
    })
    return report, outcomes


def _test_samples(dataset: str, n: int | None, data_root: str | None, device: torch.device):
    """The first n test samples (all of them for None) on the device."""
    x, y = load_raw(dataset, "test", root=data_root)
    if n is not None:
        if n <= 0:
            raise WorkbenchError("--n must be a positive number of test samples")
        x, y = x[:n], y[:n]
    return x.to(device), y.to(device)


def _report_header(ckpt: Path, data: dict[str, Any], dataset: str, source_path: Path | None, head: str, seed: int,
                   device: torch.device, precision: Precision, compile: bool) -> dict[str, Any]:
    """What was attacked and how it ran."""
    return {
        "checkpoint": str(ckpt),
        "dataset": dataset,
        "model": data["model"]["name"],
        "defense": (data["model"].get("defense") or {}).get("name", "softmax"),
        "transfer_from": str(source_path) if source_path else None,
        "head": head,
        "seed": seed,
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),  # timings depend on it (workbench.threads)
        "amp": amp_name(precision.amp),
        "channels_last": precision.channels_last,
        "compile": bool(compile),
    }


def _transfer_source(path: str | Path, device: torch.device, dataset: str) -> tuple[Path, torch.nn.Module]:
    """The model that crafts the examples for a transfer (black-box) attack: same dataset as the target."""
    source_path, source_data, source = load_checkpoint_model(path, device)
    if source_data.get("dataset") != dataset:
        raise WorkbenchError(f"--transfer-from {source_path} was trained on {source_data.get('dataset')!r}, "
                             f"the target on {dataset!r}")
    return source_path, source


def _protocols_identity(protocols: list[Protocol]) -> list:
    return [[p.name, p.cascade, [[s.attack, s.label, _plain(s.params), s.sweep, s.max_samples, s.monotone,
                                  s.thresholds] for s in p.specs]] for p in protocols]


CSV_FIELDS = ["protocol", "label", "attack", "norm", "sweep_param", "value", "n", "attacked", "robust_accuracy",
              "ci95_low", "ci95_high", "success_rate", "mean_norm", "seconds", "cumulative",
              "stage", "stage_seconds", "stage_attacked", "stage_broken"]


def report_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerow({"protocol": "clean", "label": "clean", "n": report["n"],
                     "robust_accuracy": report["clean_accuracy"], "ci95_low": report["clean_ci95"][0],
                     "ci95_high": report["clean_ci95"][1]})
    for r in report["results"]:
        writer.writerow({**r, "ci95_low": r["ci95"][0], "ci95_high": r["ci95"][1]})
    for r in report["worst_case"]:
        writer.writerow({**r, "label": "worst case", "attack": "any", "sweep_param": "eps", "value": r["eps"],
                         "ci95_low": r["ci95"][0], "ci95_high": r["ci95"][1]})
    # Last, one row per attack, value and stage: the key columns of its result row and the stage's
    # numbers; every other row leaves `stage` empty, so filtering on it separates the two tables.
    for r in report["results"]:
        if r.get("threshold_of_minimum_norm"):
            continue  # the same run as its minimum-norm row
        key = {k: r.get(k) for k in ("protocol", "label", "attack", "norm", "sweep_param", "value", "n")}
        for st in r.get("stages", []):
            writer.writerow({**key, "stage": st["name"], "stage_seconds": st["seconds"],
                             "stage_attacked": st["attacked"], "stage_broken": st["broken"]})
    return buf.getvalue()


EXAMPLES_VERSION = 2  # 1: the first N pairs per value whatever the outcome; 2: up to N fooled and N robust


def examples_payload(outcomes: list[SpecOutcome]) -> dict[str, Any]:
    """Tensors and plain data only, so the viewer loads it with weights_only=True. Per attack and value, up
    to N fooled and N robust pairs (`--save-examples N`), each kind first in sample order; `fooled` is the
    engine's verdict, `norm` the attack's threat model (what its value bounds)."""
    items = []
    for out in outcomes:
        for ex in out.examples:
            v = out.values[ex["value_index"]]
            items.append({"protocol": out.protocol, "attack": out.spec.label, "norm": out.spec.norm, "value": v,
                          "sample": ex["sample"], "true": ex["label"], "fooled": ex["fooled"],
                          "clean_pred": ex["clean_pred"], "clean_conf": ex["clean_conf"],
                          "adv_pred": ex["adv_pred"], "adv_conf": ex["adv_conf"],
                          "clean": ex["clean"].half(), "adversarial": ex["adversarial"].half()})
    return {"format": "workbench-examples", "version": EXAMPLES_VERSION, "examples": items}


def save_evaluation(report: dict[str, Any], outcomes: list[SpecOutcome] | None = None) -> Path:
    ckpt = Path(report["checkpoint"])
    out = evals_dir_for(ckpt)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = reserve_name(out, f"{ckpt.stem}-{stamp}", ".json")
    base = path.name[:-len(".json")]
    if outcomes and any(o.examples for o in outcomes):
        ex_path = out / f"{base}-examples.pt"
        payload = examples_payload(outcomes)
        atomic_write_bytes(ex_path, lambda fh: torch.save(payload, fh))
        report["examples"] = str(ex_path)
    atomic_write_text(out / f"{base}.csv", report_csv(report))
    report["csv"] = str(out / f"{base}.csv")
    write_json_atomic(path, report)
    return path
