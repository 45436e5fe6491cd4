"""The new-run form without the widgets: profile dict -> field values, field text -> typed values,
typed values + the profile dict -> config dict (keys the form does not show are kept), validation through
`workbench.config.validate_config`, and launching `workbench train --detach` the way the CLI does."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import yaml

from ...config import dump_yaml, parse_yaml
from ...config.schema import AdamConfig, AdvTrainConfig, EvalConfig, RunConfig, SGDConfig
from ...errors import WorkbenchError
from .catalog import Bounds, DefenseInfo, ParamSpec

SOURCE = "form"  # validate_config's `source`: messages read "form: key: problem"
PARAMS = "defense.params"  # the key of the defense hyperparameters in form values
LAUNCH_TIMEOUT = 120.0

# The fields the form shows, in order, with how their text parses (name, dataset, model, defense: selects).
FIELDS: dict[str, ParamSpec] = {
    "name": ParamSpec("name", "yaml", None, "run name: the run folder is <name>-<date>-<time>"),
    "dataset": ParamSpec("dataset", "choice", None, "dataset (channels x size, classes)"),
    "model.name": ParamSpec("model.name", "choice", None, "architecture: only those that fit the dataset"),
    "defense.name": ParamSpec("defense.name", "choice", "softmax", "training loss / defense"),
    "adv_train.attack": ParamSpec("adv_train.attack", "choice", "none", "adversarial training attack",
                                  ("none", "fgsm", "pgd")),
    "adv_train.eps": ParamSpec("adv_train.eps", "yaml", AdvTrainConfig.model_fields["eps"].default,
                               "adversarial training eps in pixels, or [lo, hi] sampled uniformly"),
    "adv_train.steps": ParamSpec("adv_train.steps", "int", AdvTrainConfig.model_fields["steps"].default,
                                 "PGD iterations of adversarial training", bounds=Bounds(gt=0)),
    "epochs": ParamSpec("epochs", "int", RunConfig.model_fields["epochs"].default, "training epochs",
                        bounds=Bounds(gt=0)),
    "batch_size": ParamSpec("batch_size", "int", RunConfig.model_fields["batch_size"].default,
                            "training batch size", bounds=Bounds(gt=0)),
    "optimizer.lr": ParamSpec("optimizer.lr", "float", None, "learning rate of the optimizer", bounds=Bounds(gt=0)),
    "eval.eps": ParamSpec("eval.eps", "float", EvalConfig.model_fields["eps"].default,
                          "eps of the robust accuracy measured during training", bounds=Bounds(gt=0)),
}
# An error on a key the form does not show is shown at the field that owns its block.
OWNERS = {"model": "model.name", "defense": "defense.name", "adv_train": "adv_train.attack",
          "optimizer": "optimizer.lr"}
LR_DEFAULTS = {"sgd": SGDConfig.model_fields["lr"].default, "adam": AdamConfig.model_fields["lr"].default,
               "adamw": AdamConfig.model_fields["lr"].default}


# -- profile dict -> values ---------------------------------------------------------------------
def model_block(data: dict) -> tuple[Any, dict]:
    block = data.get("model")
    if isinstance(block, dict):
        return block.get("name"), {k: v for k, v in block.items() if k != "name"}
    return block, {}


def defense_block(data: dict) -> tuple[str, dict]:
    """The defense name and its params, whether written inline, under `params`, or as just a name."""
    block = data.get("defense", "softmax")
    if isinstance(block, dict):
        params = {k: v for k, v in block.items() if k not in ("name", "params")}
        if isinstance(block.get("params"), dict):
            params.update(block["params"])
        return block.get("name", "softmax"), params
    return block, {}


def form_values(data: dict, name: str = "custom") -> dict[str, Any]:
    """Typed field values of a profile dict as written (schema defaults where it is silent)."""
    adv = data.get("adv_train") if isinstance(data.get("adv_train"), dict) else {}
    ev = data.get("eval") if isinstance(data.get("eval"), dict) else {}
    opt = data.get("optimizer") if isinstance(data.get("optimizer"), dict) else {}
    defense, params = defense_block(data)
    return {
        "name": data.get("name") or name,
        "dataset": data.get("dataset"),
        "model.name": model_block(data)[0],
        "defense.name": defense,
        PARAMS: params,
        "adv_train.attack": adv.get("attack", FIELDS["adv_train.attack"].default),
        "adv_train.eps": adv.get("eps", FIELDS["adv_train.eps"].default),
        "adv_train.steps": adv.get("steps", FIELDS["adv_train.steps"].default),
        "epochs": data.get("epochs", FIELDS["epochs"].default),
        "batch_size": data.get("batch_size", FIELDS["batch_size"].default),
        "optimizer.lr": opt.get("lr", LR_DEFAULTS.get(opt.get("name", "sgd"), 0.1)),
        "eval.eps": ev.get("eps", FIELDS["eval.eps"].default),
    }


def text_of(value: Any) -> str:
    """How a value is shown in an input: YAML scalars and flow-style lists; null is empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    # One line, flow style: "[{tap: gap, fc: [512]}, fc1]".
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1 << 16).strip()


# -- text -> typed values -----------------------------------------------------------------------
def parse_value(spec: ParamSpec, raw: Any) -> Any:
    """The typed value of one input; raises ValueError with a one-line message."""
    if spec.kind in ("bool", "choice"):
        return raw  # a switch or a select cannot hold a wrong value
    text = str(raw).strip()
    if spec.name == "name":
        return text or None  # a folder name, taken as typed (None: the CLI's default)
    if not text:
        if spec.optional:
            return None
        raise ValueError("required")
    if spec.kind == "int":
        try:
            value: Any = int(text)
        except ValueError:
            raise ValueError(f"expected a whole number (got {text!r})") from None
    elif spec.kind == "float":
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected a number (got {text!r})") from None
        if not math.isfinite(value):
            raise ValueError("must be finite")
    else:
        try:
            value = parse_yaml(text, spec.name)
        except WorkbenchError as exc:
            raise ValueError(str(exc).split(": ", 1)[-1]) from None
        if spec.name == "adv_train.eps":
            _check_eps(value)
        return value
    problem = spec.bounds.problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _check_eps(value: Any) -> None:
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and len(value) != 2:
        raise ValueError("a range must be [lo, hi]")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError("expected a number or [lo, hi]")
    if any(not (math.isfinite(v) and v >= 0) for v in values):
        raise ValueError("must be a finite number >= 0")


def parse_fields(raw: dict[str, Any], defense: DefenseInfo | None) -> tuple[dict[str, Any], dict[str, str]]:
    """Typed values and per-field errors from the raw widget values (`PARAMS` maps to the params' raws)."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key, spec in FIELDS.items():
        if key in raw:
            try:
                values[key] = parse_value(spec, raw[key])
            except ValueError as exc:
                errors[key] = str(exc)
    params: dict[str, Any] = {}
    specs = {p.name: p for p in defense.params} if defense else {}
    for name, text in raw.get(PARAMS, {}).items():
        spec = specs.get(name) or ParamSpec(name, "yaml", None)
        try:
            params[name] = parse_value(spec, text)
        except ValueError as exc:
            errors[f"{PARAMS}.{name}"] = str(exc)
    values[PARAMS] = params
    return values, errors


# -- values -> config dict ----------------------------------------------------------------------
def build_config(base: dict, values: dict[str, Any], defense: DefenseInfo | None) -> dict:
    """The profile dict with the form's values: keys the form does not show stay as the profile wrote them,
    and a default value is only written where the profile had the key (so an unchanged profile stays itself)."""
    data = copy.deepcopy(base)
    data.pop("name", None)
    if values.get("name"):
        data = {"name": values["name"], **data}
    data["dataset"] = values["dataset"]
    old_model, rest = model_block(base)
    if values["model.name"] == old_model:
        data["model"] = {"name": old_model, **rest} if rest else old_model
    else:  # options belong to the old architecture; normalization does not
        keep = {k: rest[k] for k in ("normalize",) if k in rest}
        data["model"] = {"name": values["model.name"], **keep} if keep else values["model.name"]
    data["defense"] = _defense(base, values, defense)
    for key in ("adv_train.attack", "adv_train.eps", "adv_train.steps", "epochs", "batch_size", "eval.eps"):
        _put(data, key, values[key], FIELDS[key].default)
    opt = data.get("optimizer")
    opt = dict(opt) if isinstance(opt, dict) else {"name": "sgd"}
    if "lr" in opt or values["optimizer.lr"] != LR_DEFAULTS.get(opt.get("name"), None):
        opt["lr"] = values["optimizer.lr"]
        data["optimizer"] = opt
    return data


def _defense(base: dict, values: dict[str, Any], defense: DefenseInfo | None) -> Any:
    name = values["defense.name"]
    old_name, old_params = defense_block(base)
    old_params = old_params if old_name == name else {}
    defaults = defense.defaults() if defense else {}
    params = {k: v for k, v in values.get(PARAMS, {}).items()
              if k in old_params or k not in defaults or v != defaults[k]}
    params.update({k: v for k, v in old_params.items() if k not in values.get(PARAMS, {})})
    return {"name": name, "params": params} if params else name


def _put(data: dict, key: str, value: Any, default: Any) -> None:
    """Set a dotted key where the profile has it or the value is not the schema default."""
    *parents, last = key.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            if value == default:
                return
            child = {}
        node[part] = child = dict(child)
        node = child
    if last in node or value != default:
        node[last] = value


# -- validation ---------------------------------------------------------------------------------
def split_error(message: str) -> tuple[str, str]:
    """("key", "problem") of a validate_config message "form: key: problem"."""
    text = message.removeprefix(f"{SOURCE}: ")
    key, sep, problem = text.partition(": ")
    if not sep or " " in key:
        return "", text
    return key, problem


def field_for(key: str, fields: set[str] | None = None) -> str | None:
    """The form field an error key belongs to: itself, or the field owning its closest parent block."""
    fields = set(FIELDS) if fields is None else fields
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        k = ".".join(parts[:i])
        if k in fields:
            return k
        if OWNERS.get(k) in fields:
            return OWNERS[k]
    return None


def check_config(data: dict) -> tuple[str, str] | None:
    """None when `workbench train` accepts the config, else (key, one-line problem). Imports torch: the TUI
    runs it in its backend process (`backend_client.shared().check_config`)."""
    from ...config import validate_config

    try:
        validate_config(data, SOURCE)
    except WorkbenchError as exc:
        return split_error(str(exc).splitlines()[0])
    return None


# -- saving and launching -----------------------------------------------------------------------
def to_yaml(data: dict) -> str:
    return dump_yaml(data)


def launch_profile_path(runs_dir: Path, name: str | None, now: float | None = None) -> Path:
    """A new `<runs>/.profiles/<name>-<time>.yaml`, claimed atomically: two TUIs launching the same name
    in the same second never share (and overwrite) one file."""
    from ...runs.evals import reserve_name

    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    safe = "".join(c if c.isalnum() or c in "_.-" else "-" for c in (name or "custom")).strip("-") or "custom"
    folder = Path(runs_dir) / ".profiles"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkbenchError(f"cannot create {folder}: {exc.strerror or exc}") from None
    return reserve_name(folder, f"{safe}-{stamp}", ".yaml")


def launch_training(data: dict, runs_dir: Path, device: str, timeout: float = LAUNCH_TIMEOUT,
                    cancelled=lambda: False, check=None) -> Path:
    """Write the config beside the runs and start `workbench train --detach` on it; the run folder.
    Blocks for the CLI's validation and set-up (seconds): call it in a worker. Raises WorkbenchError.
    `check` (data -> problem or None) defaults to `check_config` run by the TUI's backend process, so the
    UI process never imports torch."""
    from ...runs.control import launch_profile

    if check is None:
        from .backend_client import shared

        check = shared().check_config
    problem = check(data)
    if problem is not None:
        key, msg = problem
        raise WorkbenchError(f"{key}: {msg}" if key else msg)
    # The run folder is named after `name`; without one the CLI would use the file's name.
    data = {**data, "name": data.get("name") or "custom"}
    profile = launch_profile_path(runs_dir, data["name"])
    try:
        profile.write_text(to_yaml(data), encoding="utf-8")
    except OSError as exc:
        raise WorkbenchError(f"cannot write {profile}: {exc.strerror or exc}") from None
    return launch_profile(profile, runs_dir, device, timeout=timeout, cancelled=cancelled)


