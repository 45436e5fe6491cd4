"""From a suite and a budget to its cells: one (model, seed) each, identified by its resolved config.

A cell's key hashes the fully resolved training config (profile + overrides + budget + seed), so a rerun
with the same settings finds the same folder and reuses what is there, while changing anything (an lr,
the budget) makes a new cell beside the old one instead of mixing schedules in one table.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import WorkbenchError
from .layout import SuitePaths
from .spec import Budget, Evaluation, Suite

# Config keys that never change the final weights (logging, monitoring, speed, how many devices): a suite
# rerun with another logging cadence or --compile finds its cells again instead of retraining them.
NOT_IDENTITY = ("description", "log_every", "checkpoint_every", "eval", "performance", "distributed")

# Config fields added after suites had been run, left out of a cell's identity while at their default: a rerun
# after an upgrade finds its cells instead of retraining them all (set to anything else, they count).
LATER_FIELDS = {("adv_train", "train_subset"): None}

# Profile keys that count epochs: a budget that shortens the run scales them by the same fraction.
EPOCH_LISTS = ("schedule.milestones",)
EPOCH_COUNTS = ("defense.params.warmup_epochs",)  # whole epochs, at least 1, leaving at least 1 after
EPOCH_SPANS = ("schedule.warmup_epochs",)  # fractional epochs


@dataclass
class PlannedEvaluation:
    name: str
    key: str
    spec: dict[str, Any]  # the Evaluation as plain data, with the budget's n applied


@dataclass
class Cell:
    model: str
    seed: int
    key: str  # folder name: <model>-s<seed>-<hash>
    profile: str
    overrides: list[str]
    config: dict[str, Any]
    evaluations: list[PlannedEvaluation] = field(default_factory=list)
    fork: dict[str, Any] | None = None  # {"cell": source key, "epochs": k}: start from that cell's state after k
    snapshot_epochs: list[int] = field(default_factory=list)  # keep the state after these epochs for forks

    def to_json(self) -> dict[str, Any]:
        from ..data import DATASETS

        return {"model": self.model, "seed": self.seed, "key": self.key, "profile": self.profile,
                "num_classes": DATASETS.get(self.config["dataset"]).num_classes,
                "overrides": self.overrides, "config": self.config,
                "fork": self.fork, "snapshot_epochs": self.snapshot_epochs,
                "evaluations": [{"name": e.name, "key": e.key, "spec": e.spec} for e in self.evaluations]}


def _digest(data: Any, length: int = 10) -> str:
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def safe_name(name: str) -> str:
    """A display name as a folder name ("CCN+LS" -> "CCN_LS", "ADR+LC/GB" -> "ADR_LC_GB")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def scale_epochs(profile_cfg: dict[str, Any], epochs: int) -> list[str]:
    """Overrides keeping the profile's epoch-valued keys at their fraction of a run of `epochs`."""
    paper = profile_cfg.get("epochs")
    if not isinstance(paper, int) or paper == epochs:
        return [f"epochs={epochs}"]
    sets = [f"epochs={epochs}"]
    for key in EPOCH_LISTS:
        values = _lookup(profile_cfg, key)
        if isinstance(values, list) and values:
            scaled = sorted({max(1, round(v * epochs / paper)) for v in values})
            sets.append(f"{key}={[v for v in scaled if v < epochs]}")
    for key in EPOCH_COUNTS:
        value = _lookup(profile_cfg, key)
        if isinstance(value, int) and value > 0:
            sets.append(f"{key.replace('.params', '')}={min(epochs - 1, max(1, round(value * epochs / paper)))}")
    for key in EPOCH_SPANS:
        value = _lookup(profile_cfg, key)
        if isinstance(value, (int, float)) and value > 0:
            sets.append(f"{key}={value * epochs / paper:g}")
    return sets


def _as_sets(overrides: dict[str, Any]) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]


def cell_overrides(suite: Suite, model_index: int, budget: Budget, seed: int) -> list[str]:
    """The `--set` list of one cell: the model's, then the budget's (scaled epochs first), then the seed."""
    from ..config import load_profile

    entry = suite.models[model_index]
    per_model = budget.models.get(entry.name)
    sets = _as_sets(entry.set)
    base, _ = load_profile(entry.profile, sets)
    epochs = (per_model.epochs if per_model and per_model.epochs else None) or budget.epochs
    if epochs is not None:
        sets += scale_epochs(base.model_dump(mode="json"), epochs)
    subset = (per_model.train_subset if per_model and per_model.train_subset else None) or budget.train_subset
    if subset is not None:
        sets.append(f"data.train_subset={subset}")
    sets += _as_sets(budget.set)
    if per_model:
        sets += _as_sets(per_model.set)
    sets.append(f"seed={seed}")
    sets.append(f"name={safe_name(entry.name)}")
    return sets


def plan_evaluation(ev: Evaluation, budget: Budget) -> PlannedEvaluation:
    spec = ev.model_dump(mode="json")
    spec.pop("models")  # which cells run it is the plan's business, not the evaluation's identity
    for cap in (budget.n, budget.evaluation_n.get(ev.name)):
        if cap is None:
            continue
        spec["n"] = min(spec["n"] or cap, cap)
        for a in spec["attacks"]:
            if isinstance(a, dict) and a.get("n") is not None:
                a["n"] = min(a["n"], spec["n"])
        spec["attack_n"] = {label: min(v, spec["n"]) for label, v in spec["attack_n"].items()}
    return PlannedEvaluation(ev.name, _digest(spec), spec)


def cell_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What a cell's key hashes: the resolved config without what never changes the weights."""
    identity = {k: v for k, v in config.items() if k not in NOT_IDENTITY}
    for (section, key), default in LATER_FIELDS.items():
        if section in identity and identity[section].get(key, default) == default:
            identity[section] = {k: v for k, v in identity[section].items() if k != key}
    return identity


def plan_cells(suite: Suite, budget_name: str | None = None) -> tuple[str, list[Cell]]:
    """Every (model, seed) cell of the suite under a budget, with its resolved config and evaluations."""
    from ..config import load_profile

    name, budget = suite.budget(budget_name)
    cells = []
    for i, entry in enumerate(suite.models):
        evaluations = [plan_evaluation(ev, budget) for ev in suite.evaluations
                       if ev.models is None or entry.name in ev.models]
        for seed in suite.seeds_of(entry.name, budget):
            try:
                sets = cell_overrides(suite, i, budget, seed)
                cfg, path = load_profile(entry.profile, sets)
            except WorkbenchError as exc:
                why = str(exc).replace("(set by --set)", "(set by the suite)")
                raise WorkbenchError(f"suite {suite.name}, model {entry.name} (budget {name}): {why}") from None
            config = cfg.model_dump(mode="json")
            identity = cell_identity(config)
            key = f"{safe_name(entry.name)}-s{seed}-{_digest(identity)}"
            cells.append(Cell(entry.name, seed, key, str(path), sets, config, evaluations))
    check_evaluations(suite, cells)
    plan_forks(suite, cells)
    return name, cells


def plan_forks(suite: Suite, cells: list[Cell]) -> None:
    """Each forking cell: the epochs it can take from its source's cell of the same seed, which keeps its state
    after them. None when the configs leave no epoch shared (the cell trains alone, as without fork_from)."""
    from ..config import validate_config
    from ..data import DATASETS
    from ..training.fork import shared_epochs

    sources = {m.name: m.fork_from for m in suite.models if m.fork_from is not None}
    by_model_seed = {(c.model, c.seed): c for c in cells}
    for cell in cells:
        source = by_model_seed.get((sources.get(cell.model), cell.seed))
        if source is None:
            continue
        a, b = (validate_config(c.config, f"suite {suite.name}, model {c.model}") for c in (source, cell))
        epochs = shared_epochs(a, b, DATASETS.get(b.dataset).num_classes)
        if epochs:
            cell.fork = {"cell": source.key, "epochs": epochs}
            source.snapshot_epochs = sorted({*source.snapshot_epochs, epochs})


def check_evaluations(suite: Suite, cells: list[Cell]) -> None:
    """Build every evaluation's attacks for each dataset now, so a typo fails before hours of training."""
    from ..attack_meta import check_eps
    from .cell import evaluation_protocols

    seen: set[tuple[str, str]] = set()
    for cell in cells:
        dataset = cell.config["dataset"]
        for ev in cell.evaluations:
            if (ev.key, dataset) in seen:
                continue
            seen.add((ev.key, dataset))
            spec = {**ev.spec, "adaptive": False}  # the defense's loss needs the trained checkpoint
            try:
                for values in [spec.get("eps") or []] + [a.get("eps") or [] for a in spec["attacks"]
                                                         if isinstance(a, dict)]:
                    if any(v < 0 for v in values):
                        raise WorkbenchError(f"eps must be >= 0, got {min(values):g}")
                    check_eps(values, spec["norm"], "eps")
                evaluation_protocols(spec)({"dataset": dataset, "recipe": None, "path": None})
            except WorkbenchError as exc:
                raise WorkbenchError(f"suite {suite.name}, evaluation {ev.name}: {exc}") from None


def write_plan(paths: SuitePaths, suite_source: Path, budget: str, cells: list[Cell]) -> None:
    """The suite's folder: a copy of the suite file, and one `cell.json` per cell (what to train and
    evaluate). Readers (status, table, the TUI) need nothing else, and no torch."""
    from ..runs import write_json_atomic, write_text_atomic

    paths.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(paths.suite_file, suite_source.read_text())
    for cell in cells:
        folder = paths.cell(cell.key)
        folder.root.mkdir(parents=True, exist_ok=True)
        # Budgets that train the same model share its cell; each keeps its own evaluations (and their n).
        kept = (folder.read_plan() or {}).get("evaluations_by_budget") or {}
        data = cell.to_json()
        write_json_atomic(folder.plan, {**data, "budget": budget,
                                        "evaluations_by_budget": {**kept, budget: data["evaluations"]}})
    write_json_atomic(paths.budgets_file, {**(paths.read_budgets()), budget: [c.key for c in cells]})
