"""Finding profiles, applying `--set` overrides and validating them into a `RunConfig`."""

from __future__ import annotations

import typing
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from pydantic import TypeAdapter, ValidationError

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
        if path.is_dir():
            raise WorkbenchError(f"profile {path} is a folder; give a profile name or a .yaml file")
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


def format_validation_error(exc: ValidationError, source: str, prefix: str = "") -> str:
    err = exc.errors()[0]
    # pydantic puts union members and discriminator tags ('sgd', 'float', 'list[float]') in the location;
    # users never wrote them.
    tags = {"sgd", "adam", "adamw", "float", "int", "str", "bool", "none"}
    noise = ("function-", "union[", "list[", "dict[", "literal[", "is-instance[", "constrained-")
    loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and (p in tags or p.startswith(noise)))]
    key = ".".join(([prefix] if prefix else []) + loc) or "(top level)"
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


def validate_config(data: Any, source: str, overridden: Iterable[str] = ()) -> RunConfig:
    if not isinstance(data, dict):
        raise WorkbenchError(f"{source}: a profile must be a YAML mapping of keys to values")
    try:
        try:
            cfg = RunConfig.model_validate(data)
        except ValidationError as exc:
            raise WorkbenchError(format_validation_error(exc, source)) from None
        check_references(cfg, source)
    except WorkbenchError as exc:
        # Say so when the offending key came from a --set override rather than the file.
        key = str(exc).removeprefix(f"{source}: ").split(":", 1)[0]
        if any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in overridden):
            raise WorkbenchError(f"{exc} (set by --set)") from None
        raise
    return cfg


def check_references(cfg: RunConfig, source: str) -> None:
    """Check the names a config refers to (dataset, model and its options, defense) exist and fit."""
    from ..data import DATASETS
    from ..models import MODELS, check_parameter_budget

    def fail(key: str, msg: str) -> None:
        raise WorkbenchError(f"{source}: {key}: {msg}")

    if cfg.dataset not in DATASETS:
        fail("dataset", f"unknown dataset {cfg.dataset!r}; choose one of: {', '.join(DATASETS.names())}")
    if cfg.model.name not in MODELS:
        fail("model.name", f"unknown model {cfg.model.name!r}; choose one of: {', '.join(MODELS.names())}")
    data_spec = DATASETS.get(cfg.dataset)
    meta_model = _checked_meta_model(cfg, data_spec, fail)
    meta_model, aux = _checked_defense(cfg, data_spec, meta_model, source, fail)
    try:
        check_parameter_budget(meta_model, aux, what=f"{cfg.model.name} with {cfg.defense.name}")
    except WorkbenchError as exc:
        fail("model", str(exc))


def _checked_meta_model(cfg: RunConfig, data_spec, fail):
    """The model with its options and normalization checked, built on the meta device (no weights allocated)."""
    import torch

    from ..models import MODELS, create_model

    model_spec = MODELS.get(cfg.model.name)
    hints = typing.get_type_hints(model_spec.builder)
    for opt, value in cfg.model.options.items():
        if opt not in model_spec.defaults:
            known = ", ".join(sorted(model_spec.defaults)) or "none"
            fail(f"model.{opt}", f"unknown option of model {cfg.model.name!r} (options: {known})")
        if opt in hints:
            try:
                TypeAdapter(hints[opt]).validate_python(value, strict=True)
            except ValidationError:
                fail(f"model.{opt}", f"expected {_type_name(hints[opt])} (got {value!r})")
    if not model_spec.fits(data_spec.channels, data_spec.image_size):
        fail("model.name", f"model {cfg.model.name!r} does not fit {cfg.dataset} images "
             f"({data_spec.channels}x{data_spec.image_size}x{data_spec.image_size})")
    try:
        # Build on the meta device: checks option values (e.g. width: 0) without allocating weights.
        with torch.device("meta"):
            meta_model = create_model(cfg.model.name, data_spec.channels, data_spec.num_classes,
                                      data_spec.image_size, **cfg.model.options)
    except WorkbenchError as exc:
        fail("model", str(exc))
    except Exception as exc:  # noqa: BLE001 - any builder failure is a bad option value
        fail("model", f"cannot build {cfg.model.name!r} with options {cfg.model.options}: "
             f"{str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}")
    if isinstance(cfg.model.normalize, dict):
        norm = cfg.model.normalize
        if set(norm) != {"mean", "std"} or any(len(v) != data_spec.channels for v in norm.values()):
            fail("model.normalize", f"expected {{mean: [...], std: [...]}} with {data_spec.channels} values each")
        if any(s <= 0 for s in norm["std"]):
            fail("model.normalize.std", "must be positive")
    return meta_model


def _checked_defense(cfg: RunConfig, data_spec, meta_model, source: str, fail):
    """The defense's settings checked against the config, and its transform and auxiliary heads applied to the
    meta model: (the transformed meta model, its auxiliary module or None)."""
    import torch
    from defenses import DEFENSES

    if cfg.defense.name not in DEFENSES:
        fail("defense.name", f"unknown defense {cfg.defense.name!r}; choose one of: {', '.join(DEFENSES.names())}")
    defense_cls = DEFENSES.get(cfg.defense.name)
    try:
        defense = defense_cls.from_config(cfg.defense.params, data_spec.num_classes)
    except ValidationError as exc:
        raise WorkbenchError(format_validation_error(exc, source, prefix="defense.params")) from None
    try:
        defense.check_config(cfg)
        # The defense's model transform on the meta model: catches e.g. an unknown layer name now, not mid-launch.
        with torch.device("meta"):
            meta_model = defense.transform_model(meta_model)
            # Auxiliary heads on the meta model: catches an unknown tap name or a head that cannot fit.
            aux = defense.attach(meta_model, (data_spec.channels, data_spec.image_size, data_spec.image_size))
        if cfg.performance.amp == "fp16" and defense.self_updated():
            # fp16 needs a gradient scaler; the defense's own prototype optimizers step on raw gradients.
            raise WorkbenchError("updates its own prototypes from the gradients, which fp16's loss scaling would "
                                 "distort; use performance.amp bf16 or off")
    except WorkbenchError as exc:
        fail("defense", f"{cfg.defense.name}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a transform that cannot apply to this model
        fail("defense", f"{cfg.defense.name} cannot transform {cfg.model.name!r}: "
             f"{str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}")
    return meta_model, aux


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def load_profile(name_or_path: str, overrides: Iterable[str] = ()) -> tuple[RunConfig, Path]:
    overrides = list(overrides)
    path = find_profile(name_or_path)
    data = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WorkbenchError(f"{path}: a profile must be a YAML mapping of keys to values")
    data = apply_overrides(data, overrides)
    data.setdefault("name", path.stem)
    keys = [o.partition("=")[0].strip() for o in overrides]
    return validate_config(data, str(path), keys), path
