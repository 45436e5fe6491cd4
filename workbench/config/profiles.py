"""Finding profiles, applying `--set` overrides and validating them into a `RunConfig`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from ..errors import WorkbenchError
from .schema import RunConfig
from .yamlio import parse_yaml, read_yaml


def bundled_profile_dir() -> Path:
    """The profiles shipped with the package (`profiles/` in the repository)."""
    return Path(str(resources.files("workbench.profiles")))


def list_profiles() -> dict[str, Path]:
    return {p.stem: p for p in sorted(bundled_profile_dir().glob("*.yaml"))}


def find_profile(name_or_path: str) -> Path:
    """A path to a YAML file, or the name of a bundled profile."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise WorkbenchError(f"profile file {path} does not exist")
        return path
    profiles = list_profiles()
    if name_or_path not in profiles:
        raise WorkbenchError(
            f"unknown profile {name_or_path!r}; bundled profiles: {', '.join(profiles)} (or pass a path to a .yaml file)"
        )
    return profiles[name_or_path]


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides; values are parsed as YAML (`3`, `[0.1, 0.3]`, `true`)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise WorkbenchError(f"--set {item!r}: expected key.sub=value")
        value = parse_yaml(raw, f"--set {key}") if raw.strip() else None
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if isinstance(child, str) and part in ("model", "defense", "schedule"):
                child = {"name": child}  # allow --set model.width=64 on `model: small_cnn`
            elif child is None:
                child = {}
            elif not isinstance(child, dict):
                raise WorkbenchError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a mapping")
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def format_validation_error(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    # Discriminated unions put the tag ('sgd') in the location; users never wrote it.
    loc = [str(p) for p in err["loc"] if p not in ("sgd", "adam", "adamw", "function-after[_check_step_size(), union[float,str]]")]
    loc = [p for p in loc if not p.startswith(("function-", "union[", "list[", "dict[", "literal["))] or loc
    key = ".".join(loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "missing":
        msg = "missing required key"
    else:
        msg = err["msg"].removeprefix("Value error, ")
        if "input" in err and kind not in ("union_tag_invalid",) and not isinstance(err["input"], (dict, list)):
            msg += f" (got {err['input']!r})"
    return f"{source}: {key}: {msg}"


def validate_config(data: Any, source: str) -> RunConfig:
    if not isinstance(data, dict):
        raise WorkbenchError(f"{source}: a profile must be a YAML mapping of keys to values")
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise WorkbenchError(format_validation_error(exc, source)) from None
    check_references(cfg, source)
    return cfg


def check_references(cfg: RunConfig, source: str) -> None:
    """Check the names a config refers to (dataset, model and its options, defense) exist and fit."""
    from ..data import DATASETS
    from ..models import MODELS
    from defenses import DEFENSES

    def fail(key: str, msg: str) -> None:
        raise WorkbenchError(f"{source}: {key}: {msg}")

    if cfg.dataset not in DATASETS:
        fail("dataset", f"unknown dataset {cfg.dataset!r}; choose one of: {', '.join(DATASETS.names())}")
    if cfg.model.name not in MODELS:
        fail("model.name", f"unknown model {cfg.model.name!r}; choose one of: {', '.join(MODELS.names())}")
    data_spec = DATASETS.get(cfg.dataset)
    model_spec = MODELS.get(cfg.model.name)
    for opt in cfg.model.options:
        if opt not in model_spec.defaults:
            known = ", ".join(sorted(model_spec.defaults)) or "none"
            fail(f"model.{opt}", f"unknown option of model {cfg.model.name!r} (options: {known})")
    if not model_spec.fits(data_spec.channels, data_spec.image_size):
        fail("model.name", f"model {cfg.model.name!r} does not fit {cfg.dataset} images "
             f"({data_spec.channels}x{data_spec.image_size}x{data_spec.image_size})")
    if isinstance(cfg.model.normalize, dict):
        norm = cfg.model.normalize
        if set(norm) != {"mean", "std"} or any(len(v) != data_spec.channels for v in norm.values()):
            fail("model.normalize", f"expected {{mean: [...], std: [...]}} with {data_spec.channels} values each")
        if any(s <= 0 for s in norm["std"]):
            fail("model.normalize.std", "must be positive")
    if cfg.defense.name not in DEFENSES:
        fail("defense.name", f"unknown defense {cfg.defense.name!r}; choose one of: {', '.join(DEFENSES.names())}")
    defense_cls = DEFENSES.get(cfg.defense.name)
    try:
        defense_cls.Params.model_validate(cfg.defense.params)
    except ValidationError as exc:
        fail("defense", format_validation_error(exc, "params").removeprefix("params: "))


def load_profile(name_or_path: str, overrides: Iterable[str] = ()) -> tuple[RunConfig, Path]:
    path = find_profile(name_or_path)
    data = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WorkbenchError(f"{path}: a profile must be a YAML mapping of keys to values")
    data = apply_overrides(data, overrides)
    data.setdefault("name", path.stem)
    return validate_config(data, str(path)), path
