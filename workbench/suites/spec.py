"""The suite file: models x seeds, named budgets, evaluations and the paper's numbers.

A suite is a paper's table as data. Validated strictly, like profiles: an unknown key or a wrong type
is a one-line error naming the key. Bundled suites live in `suites/` (installed as
`workbench.bundled_suites`); any path to a YAML file works too.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from ..config.schema import MAX_SEED, NonNegInt, PositiveInt, Strict
from ..config.yamlio import read_yaml
from ..errors import WorkbenchError

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Seeds = Annotated[list[Seed], Field(min_length=1)]
Overrides = dict[str, Any]  # dotted profile keys -> values, as `--set key=value`
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+/-]*$")


def _check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"{what} {value!r}: letters, digits and _ . + / - only, starting with a letter or digit")
    return value


class ModelEntry(Strict):
    name: str = Field(description="display name in tables (e.g. CCN+LS)")
    profile: str = Field(description="bundled profile name or path to a profile YAML")
    set: Overrides = Field(default_factory=dict, description="profile overrides, as --set key=value")
    fork_from: Union[str, None] = Field(
        None, description="a model whose first epochs this one trains identically (a shared warm-up): each cell "
                          "starts from that model's cell (same seed) after them, when the configs allow it "
                          "exactly (training/fork.py), and trains them itself otherwise")

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v, "model name")))


class BudgetModel(Strict):
    """A budget's settings for one model (an adversarially trained model may get fewer epochs)."""

    epochs: Union[PositiveInt, None] = None
    train_subset: Union[PositiveInt, None] = None
    seeds: Union[Seeds, None] = Field(None, description="this model's seeds under the budget (null: the budget's)")
    set: Overrides = Field(default_factory=dict)


class Budget(Strict):
    """How much compute: epochs, training subset and evaluation samples, for every model at once.

    Epochs change consistently: lr milestones and warm-up epochs keep their fraction of the run."""

    description: str = ""
    epochs: Union[PositiveInt, None] = Field(None, description="epochs of every model (null: the profile's)")
    train_subset: Union[PositiveInt, None] = Field(None, description="train on the first N images")
    seeds: Union[Seeds, None] = Field(None, description="seeds of every model (null: the suite's)")
    n: Union[PositiveInt, None] = Field(None, description="at most N test samples in every evaluation")
    evaluation_n: dict[str, PositiveInt] = Field(default_factory=dict,
                                                 description="at most N test samples, per evaluation name")
    set: Overrides = Field(default_factory=dict, description="more overrides for every model")
    models: dict[str, BudgetModel] = Field(default_factory=dict, description="per model name")


class AttackEntry(Strict):
    """One attack of an evaluation: `NAME[:key=value,...]` as `workbench attack --attack`, plus a label."""

    attack: str
    label: Union[str, None] = None
    eps: Union[list[float], None] = None
    n: Union[PositiveInt, None] = Field(None, description="at most N of the evaluation's samples")
    monotone: bool = Field(True, description="false: accuracy at exactly each eps (FGSM), not the worst up to it")


class Evaluation(Strict):
    """One `workbench attack` of every cell's final checkpoint."""

    name: str
    preset: Union[str, None] = Field(None, description="a paper's protocol: pcl | pc | adr | ccn | strong")
    attacks: list[Union[str, AttackEntry]] = Field(default_factory=list)
    eps: Union[list[float], None] = Field(None, description="eps values (null: the preset's, else the dataset's)")
    norm: Literal["linf", "l2"] = "linf"
    n: Union[PositiveInt, None] = Field(None, description="first N test samples (null: all)")
    strong: bool = Field(False, description="also the strong protocol (PGD-100x2 CE and CW, then AutoAttack)")
    adaptive: bool = Field(False, description="also PGD/APGD on the defense's own loss")
    head: Literal["softmax", "prototype"] = "softmax"
    models: Union[list[str], None] = Field(None, description="only these models (null: all), e.g. adaptive "
                                                             "attacks for the defenses that have a loss of their own")
    attack_n: dict[str, PositiveInt] = Field(default_factory=dict,
                                             description="at most N samples for the attacks of this label")
    batch_size: PositiveInt = 500
    seed: NonNegInt = 0

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v, "evaluation name")))

    @model_validator(mode="after")
    def _something(self) -> "Evaluation":
        if not (self.preset or self.attacks or self.strong or self.adaptive):
            raise ValueError(f"evaluation {self.name!r} runs nothing: give a preset, attacks, strong or adaptive")
        return self


class Check(Strict):
    """One of the paper's claims, checked against our table: an order of models on a metric, one model
    beating another, a floor every model reaches, or our numbers within some points of the paper's."""

    claim: str = Field("", description="what the paper says, in words")
    order: Union[list[str], None] = Field(None, description="models from best to worst on `metric`")
    beats: Union[list[str], None] = Field(None, description="[A, B]: A above B on every `metric` match")
    at_least: Union[float, None] = Field(None, description="every model (or `models`) at or above this % on `metric`")
    paper_within: Union[float, None] = Field(None, description="our numbers within this many points of the paper's")
    metric: str = Field("*", description="a metric name or glob (fnmatch)")
    models: Union[list[str], None] = None

    @model_validator(mode="after")
    def _one_kind(self) -> "Check":
        kinds = [k for k in ("order", "beats", "at_least", "paper_within") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a check is one of order, beats, at_least, paper_within"
                             + (f" (got {', '.join(kinds)})" if kinds else ""))
        if self.beats is not None and len(self.beats) != 2:
            raise ValueError("beats: give two models, [better, worse]")
        if self.order is not None and len(self.order) < 2:
            raise ValueError("order: give at least two models")
        return self

    def named_models(self) -> list[str]:
        return [*(self.order or []), *(self.beats or []), *(self.models or [])]


class SlurmSettings(Strict):
    partition: Union[str, None] = None
    gpus: NonNegInt = 0
    cpus: PositiveInt = 4
    time_min: PositiveInt = 240
    mem_gb: Union[PositiveInt, None] = None
    extra: dict[str, Any] = Field(default_factory=dict, description="more submitit slurm_* parameters")
    fork_wait: bool = Field(
        True, description="a fork's job waits for its source's job to end (a Slurm dependency, afterany), so it "
                          "starts from the source's kept state; false: it starts when Slurm schedules it, from "
                          "that state only if it is kept by then")


class Suite(Strict):
    name: str
    description: str = ""
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    models: list[ModelEntry] = Field(min_length=1)
    budgets: dict[str, Budget] = Field(default_factory=lambda: {"full": Budget()})
    default_budget: Union[str, None] = Field(None, description="budget without --budget (default: the first)")
    evaluations: list[Evaluation] = Field(min_length=1)
    paper: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="the paper's numbers (%): model name -> {metric: value}, where a metric "
                                          "is 'clean', 'LABEL@EPS', 'LABEL' (minimum-norm) or 'worst PROTOCOL@EPS'")
    table: Union[list[str], None] = Field(
        None, description="default columns of `suite table`: metric names or globs (e.g. 'FGSM fixed@*'); "
                          "null: clean, the metrics the paper reports, and every protocol's worst case")
    checks: list[Check] = Field(default_factory=list, description="the paper's claims, checked under the table")
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v, "suite name")))

    @model_validator(mode="after")
    def _consistent(self) -> "Suite":
        names = [m.name for m in self.models]
        _unique(names, "model name")
        _unique([e.name for e in self.evaluations], "evaluation name")
        _unique([str(s) for s in self.seeds], "seed")
        if not self.budgets:
            raise ValueError("budgets: give at least one")
        if self.default_budget is not None and self.default_budget not in self.budgets:
            raise ValueError(f"default_budget {self.default_budget!r} is not one of {', '.join(self.budgets)}")
        for budget_name, budget in self.budgets.items():
            if budget.seeds is not None:
                _unique([str(s) for s in budget.seeds], f"budgets.{budget_name}.seeds: seed")
            for key, per_model in budget.models.items():
                if key not in names:
                    raise ValueError(f"budgets.{budget_name}.models: {key!r} is not a model of the suite")
                if per_model.seeds is not None:
                    _unique([str(s) for s in per_model.seeds], f"budgets.{budget_name}.models.{key}.seeds: seed")
        forks = {m.name: m.fork_from for m in self.models if m.fork_from is not None}
        for key, source in forks.items():
            if source not in names or source == key:
                raise ValueError(f"model {key}: fork_from {source!r} is not another model of the suite")
            if source in forks:
                raise ValueError(f"model {key}: fork_from {source!r}, which forks itself; name the model it forks from")
        evaluations = {e.name for e in self.evaluations}
        for ev in self.evaluations:
            for key in ev.models or []:
                if key not in names:
                    raise ValueError(f"evaluation {ev.name}: models: {key!r} is not a model of the suite")
        for budget_name, budget in self.budgets.items():
            for key in budget.evaluation_n:
                if key not in evaluations:
                    raise ValueError(f"budgets.{budget_name}.evaluation_n: {key!r} is not an evaluation")
        for i, check in enumerate(self.checks):
            for key in check.named_models():
                if key not in names:
                    raise ValueError(f"checks[{i}]: {key!r} is not a model of the suite")
        for key in self.paper:
            if key not in names:
                raise ValueError(f"paper: {key!r} is not a model of the suite ({', '.join(names)})")
        return self

    def seeds_of(self, model: str, budget: Budget) -> list[int]:
        """The seeds a model trains under a budget: the budget's for that model, else the budget's, else the
        suite's (e.g. a second seed for the cheap models only)."""
        per_model = budget.models.get(model)
        if per_model is not None and per_model.seeds is not None:
            return list(per_model.seeds)
        return list(budget.seeds if budget.seeds is not None else self.seeds)

    def budget(self, name: str | None) -> tuple[str, Budget]:
        name = name or self.default_budget or next(iter(self.budgets))
        if name not in self.budgets:
            raise WorkbenchError(f"suite {self.name}: no budget {name!r}; budgets: {', '.join(self.budgets)}")
        return name, self.budgets[name]


def _unique(values: list[str], what: str) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} {v!r} appears twice")
        seen.add(v)


def bundled_suite_dir() -> Path:
    return Path(str(resources.files("workbench.bundled_suites")))


def list_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(bundled_suite_dir().glob("*.yaml"))}


def find_suite(name_or_path: str | Path) -> Path:
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise WorkbenchError(f"suite file {path} does not exist")
        return path
    suites = list_suites()
    if str(name_or_path) not in suites:
        raise WorkbenchError(f"unknown suite {name_or_path!r}; bundled suites: {', '.join(suites) or 'none'} "
                             "(or pass a path to a .yaml file)")
    return suites[str(name_or_path)]


def parse_suite(data: Any, source: str) -> Suite:
    from ..config.profiles import format_validation_error

    if not isinstance(data, dict):
        raise WorkbenchError(f"{source}: a suite must be a YAML mapping of keys to values")
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        # A check across keys has no location of its own; its message names the keys.
        raise WorkbenchError(format_validation_error(exc, source).replace(": (top level): ", ": ")) from None


def load_suite(name_or_path: str | Path) -> tuple[Suite, Path]:
    path = find_suite(name_or_path)
    return parse_suite(read_yaml(path), str(path)), path
