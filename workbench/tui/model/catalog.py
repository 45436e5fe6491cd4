"""What a new run can be built from: profiles, datasets, models, defenses (with their hyperparameter schemas)
and devices. `load_catalog` imports torch and the registries (~2 s): the TUI asks its backend process for it
(`backend_client.shared().run_catalog()`), which runs it and sends `catalog_to_json`; `catalog_from_json`
rebuilds the same dataclasses on the UI side."""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

# What an input for a hyperparameter looks like: a switch, a choice, a number, or YAML text.
ParamKind = Literal["bool", "choice", "int", "float", "yaml"]


@dataclass(frozen=True)
class Bounds:
    """Numeric limits from a pydantic field's metadata (Gt, Ge, Lt, Le); None: unlimited."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def problem(self, value: float) -> str | None:
        if self.gt is not None and not value > self.gt:
            return f"must be > {self.gt:g}"
        if self.ge is not None and not value >= self.ge:
            return f"must be >= {self.ge:g}"
        if self.lt is not None and not value < self.lt:
            return f"must be < {self.lt:g}"
        if self.le is not None and not value <= self.le:
            return f"must be <= {self.le:g}"
        return None


@dataclass(frozen=True)
class ParamSpec:
    name: str
    kind: ParamKind
    default: Any  # JSON-like (what a profile would write)
    description: str = ""
    choices: tuple[str, ...] = ()
    optional: bool = False  # null allowed (an empty input)
    bounds: Bounds = field(default_factory=Bounds)


@dataclass(frozen=True)
class DefenseInfo:
    name: str
    paper: str
    params: tuple[ParamSpec, ...]

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    image_size: int
    num_classes: int
    description: str = ""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    channels: tuple[int, ...]
    min_image_size: int

    def fits(self, dataset: DatasetInfo) -> bool:
        return dataset.channels in self.channels and dataset.image_size >= self.min_image_size


@dataclass(frozen=True)
class Catalog:
    profiles: dict[str, Path]
    datasets: dict[str, DatasetInfo]
    models: dict[str, ModelInfo]
    defenses: dict[str, DefenseInfo]
    devices: tuple[str, ...]  # what the device select offers: auto, cpu and cuda where available
    auto_device: str  # what "auto" resolves to on this machine

    def models_for(self, dataset: str) -> list[str]:
        info = self.datasets.get(dataset)
        if info is None:
            return []
        return [name for name, m in self.models.items() if m.fits(info)]


def load_catalog() -> Catalog:
    import torch
    from defenses import DEFENSES

    from ...config import list_profiles
    from ...data import DATASETS
    from ...models import MODELS

    datasets = {name: DatasetInfo(name, s.channels, s.image_size, s.num_classes, s.description)
                for name, s in DATASETS.items()}
    models = {name: ModelInfo(name, s.description, tuple(s.channels), s.min_image_size) for name, s in MODELS.items()}
    defenses = {name: defense_info(name, cls) for name, cls in DEFENSES.items()}
    cuda = bool(torch.cuda.is_available())
    return Catalog(profiles=list_profiles(), datasets=datasets, models=models, defenses=defenses,
                   devices=("auto", "cpu", "cuda") if cuda else ("auto", "cpu"),
                   auto_device="cuda" if cuda else "cpu")


# -- JSON (the backend's wire format): the same dataclasses on both sides ---------------------------
def catalog_to_json(cat: Catalog) -> dict[str, Any]:
    return {
        "profiles": {name: str(path) for name, path in cat.profiles.items()},
        "datasets": {name: asdict(d) for name, d in cat.datasets.items()},
        "models": {name: asdict(m) for name, m in cat.models.items()},
        "defenses": {name: asdict(d) for name, d in cat.defenses.items()},
        "devices": list(cat.devices),
        "auto_device": cat.auto_device,
    }


def catalog_from_json(data: dict[str, Any]) -> Catalog:
    return Catalog(
        profiles={name: Path(path) for name, path in data["profiles"].items()},
        datasets={name: DatasetInfo(**d) for name, d in data["datasets"].items()},
        models={name: ModelInfo(m["name"], m["description"], tuple(m["channels"]), m["min_image_size"])
                for name, m in data["models"].items()},
        defenses={name: defense_from_json(d) for name, d in data["defenses"].items()},
        devices=tuple(data["devices"]),
        auto_device=data["auto_device"],
    )


def defense_from_json(data: dict[str, Any]) -> DefenseInfo:
    return DefenseInfo(data["name"], data["paper"], tuple(param_from_json(p) for p in data["params"]))


def param_from_json(data: dict[str, Any]) -> ParamSpec:
    # JSON has no tuples: a default written as a tuple comes back as a list (profiles write lists anyway).
    return ParamSpec(data["name"], data["kind"], data["default"], data["description"], tuple(data["choices"]),
                     data["optional"], Bounds(**data["bounds"]))


def defense_info(name: str, cls: Any) -> DefenseInfo:
    params_model = cls.Params
    try:
        # The defaults as a profile would write them (nested models become mappings).
        defaults = params_model().model_dump(mode="json")
    except Exception:  # noqa: BLE001 - a defense with required params has no complete default set
        defaults = {}
    specs = []
    for key, info in params_model.model_fields.items():
        default = defaults.get(key, None if info.is_required() else info.get_default(call_default_factory=True))
        specs.append(param_spec(key, info.annotation, info.metadata, default, info.description or ""))
    return DefenseInfo(name, getattr(cls, "paper", ""), tuple(specs))


def param_spec(name: str, annotation: Any, metadata: list, default: Any, description: str) -> ParamSpec:
    hint, optional = _strip_optional(annotation)
    hint, extra = _strip_annotated(hint)
    bounds = _bounds(list(metadata) + extra)
    if hint is bool:
        kind: ParamKind = "bool"
    elif typing.get_origin(hint) is Literal and all(isinstance(c, str) for c in typing.get_args(hint)):
        return ParamSpec(name, "choice", default, description, tuple(typing.get_args(hint)), optional, bounds)
    elif hint is int:
        kind = "int"
    elif hint is float:
        kind = "float"
    else:
        kind = "yaml"
    return ParamSpec(name, kind, default, description, (), optional, bounds)


def _strip_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(rest) < len(args):
            return rest[0], True
    return hint, False


def _strip_annotated(hint: Any) -> tuple[Any, list]:
    if typing.get_origin(hint) is typing.Annotated:
        args = typing.get_args(hint)
        extra = []
        for meta in args[1:]:
            # pydantic's Field(...) inside Annotated carries its constraints in .metadata
            extra.extend(getattr(meta, "metadata", None) or [meta])
        return args[0], extra
    return hint, []


def _bounds(metadata: list) -> Bounds:
    found = {}
    for meta in metadata:
        for attr in ("gt", "ge", "lt", "le"):
            value = getattr(meta, attr, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                found[attr] = float(value)
    return Bounds(**found)
