"""Checkpoints: tensors and plain data only, written atomically, loaded without unpickling objects.

A checkpoint is a dict: format/version markers, the model's build recipe (registry name,
input shape, classes, normalization, options, defense), its state_dict, and for resuming
the optimizer state, position, RNG states and metrics. `torch.load(..., weights_only=True)`
reads it, once `checkpoint_scan` has checked the zip container and the tensors it declares; anything else (an
arbitrary pickle, a truncated file, a compressed record, a recipe that does not fit its weights) is rejected
with one line, before any memory is spent on it.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_write_bytes
from .checkpoint_scan import scan_checkpoint
from .errors import WorkbenchError

FORMAT = "workbench-checkpoint"
# torch's weights_only unpickler names the global it refused to load.
_BLOCKED_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL|Unsupported operand \d+ for) ?([\w.]+)?", re.I)
VERSION = 1


def save_checkpoint(data: dict[str, Any], path: Path) -> None:
    payload = {**data, "format": FORMAT, "version": VERSION}
    atomic_write_bytes(Path(path), lambda fh: torch.save(payload, fh))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely; any problem is a one-line `WorkbenchError`."""
    path = Path(path)
    if not path.exists():
        raise WorkbenchError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise WorkbenchError(f"checkpoint {path} is not a file")
    scan_checkpoint(path)  # the container and its declared tensors, before torch.load allocates anything
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about legacy/pickle formats on stderr
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # untrusted input: every failure to load is the file's fault
        blocked = _BLOCKED_GLOBAL.search(str(exc))
        if blocked:
            what = re.sub(r"[^\w.]", "", blocked.group(1) or "")[:80]
            raise WorkbenchError(f"{path} is not a safe checkpoint: it asks to run Python code ({what}), "
                                 "which is never unpickled") from None
        raise WorkbenchError(f"{path} is not a readable checkpoint (not a tensors-only torch file, "
                             f"or truncated/corrupt: {type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise WorkbenchError(f"{path} is not a workbench checkpoint (no '{FORMAT}' marker)")
    if data.get("version") != VERSION:
        raise WorkbenchError(f"{path} has checkpoint version {_describe(data.get('version'))}; "
                             f"this workbench reads {VERSION}")
    for key in ("model", "state_dict"):
        if key not in data:
            raise WorkbenchError(f"{path} is an incomplete checkpoint (missing {key!r})")
    return data


# -- model recipes: checked, then built on the meta device, then for real ------------------------------------

# Bounds on a recipe's sizes: far above every registered dataset (at most 3x64x64, 200 classes), far below
# what would exhaust a machine. The weights themselves are capped by models.MAX_PARAMETERS.
MAX_CHANNELS = 64
MAX_IMAGE_SIZE = 1024
MAX_CLASSES = 100_000
_SIZES = (("in_channels", MAX_CHANNELS), ("image_size", MAX_IMAGE_SIZE), ("num_classes", MAX_CLASSES))
_SOFTMAX = {"name": "softmax", "params": {}}


def _describe(value: Any) -> str:
    """A short, printable rendering of an untrusted value (never the repr of a deep container)."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)[:40]
    if isinstance(value, str):
        return repr(value[:40])
    return type(value).__name__


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    errors = getattr(exc, "errors", None)  # pydantic: the first failing field, not a multi-line report
    if callable(errors):
        try:
            first = errors()[0]
            text = f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
        except Exception:  # noqa: BLE001 - keep the message
            pass
    line = text.splitlines()[0][:200] if text else type(exc).__name__
    return "".join(ch if ch.isprintable() else "?" for ch in line)  # messages may quote the file's bytes


def _real_numbers(values: Any, count: int) -> bool:
    return (isinstance(values, (list, tuple)) and len(values) == count
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values))


def _check_normalize(norm: Any, channels: int, path) -> None:
    if norm is None:
        return
    if not (isinstance(norm, dict) and set(norm) == {"mean", "std"}
            and _real_numbers(norm["mean"], channels) and _real_numbers(norm["std"], channels)):
        raise WorkbenchError(f"{path}: model recipe normalize must be null or {{mean, std}} with {channels} "
                             "finite numbers each")
    if any(s <= 0 for s in norm["std"]):
        raise WorkbenchError(f"{path}: model recipe normalize.std must be positive")


def _check_defense(spec: Any, path) -> None:
    if spec is None:
        return
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str)
            and isinstance(spec.get("params", {}), dict)):
        raise WorkbenchError(f"{path}: model recipe defense must be {{name: str, params: mapping}}")


def check_recipe(recipe: Any, path: str | Path = "model recipe") -> None:
    """The recipe has the fields a build needs, of the right types and in range; else one line naming the first
    bad one. Option values are checked by building on the meta device (`meta_model`)."""
    from .models import MODELS

    if not isinstance(recipe, dict):
        raise WorkbenchError(f"{path}: its model recipe is a {type(recipe).__name__}, not a mapping")
    name = recipe.get("name")
    if not isinstance(name, str) or name not in MODELS:
        raise WorkbenchError(f"{path}: model recipe names unknown model {_describe(name)}; "
                             f"choose one of: {', '.join(MODELS.names())}")
    for key, limit in _SIZES:
        value = recipe.get(key)
        if type(value) is not int or not 1 <= value <= limit:
            raise WorkbenchError(f"{path}: model recipe {key} must be an integer from 1 to {limit} "
                                 f"(got {_describe(value)})")
    options = recipe.get("options", {})
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise WorkbenchError(f"{path}: model recipe options must be a mapping of option names to values")
    _check_normalize(recipe.get("normalize"), recipe["in_channels"], path)
    _check_defense(recipe.get("defense"), path)


def _defense_spec(recipe: dict[str, Any]) -> tuple[str, dict]:
    spec = recipe.get("defense") or _SOFTMAX
    return spec["name"], spec.get("params", {})


def _create_defense(recipe: dict[str, Any], path):
    from defenses import create_defense

    name, params = _defense_spec(recipe)
    try:
        return create_defense(name, params, recipe["num_classes"])
    except WorkbenchError as exc:
        raise WorkbenchError(f"{path}: {exc}") from None
    except Exception as exc:  # pydantic: params the defense does not accept
        raise WorkbenchError(f"{path}: defense {_describe(name)} params do not validate ({_first_line(exc)})") from None


def _construct(recipe: dict[str, Any], path) -> nn.Module:
    """The recipe's model, transformed by its defense, on the current default device; one line on failure."""
    from .models import create_model

    norm = recipe.get("normalize")
    try:
        model = create_model(recipe["name"], recipe["in_channels"], recipe["num_classes"], recipe["image_size"],
                             normalize=(norm["mean"], norm["std"]) if norm else None, **recipe.get("options", {}))
    except WorkbenchError as exc:
        raise WorkbenchError(f"{path}: {exc}") from None
    except Exception as exc:  # an option value the builder cannot use (a string width, a negative size)
        raise WorkbenchError(f"{path}: cannot build model {recipe['name']!r} from its recipe "
                             f"({_first_line(exc)})") from None
    defense = _create_defense(recipe, path)
    try:
        return defense.transform_model(model)
    except WorkbenchError as exc:
        raise WorkbenchError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a transform that cannot apply to this model
        raise WorkbenchError(f"{path}: defense {defense.name!r} cannot transform the model ({_first_line(exc)})") from None


def _check_size(path, what: str, *modules: nn.Module) -> None:
    """Counted on the meta device: the real build would allocate exactly this."""
    from .models import check_parameter_budget

    check_parameter_budget(*modules, what=f"{path}: its recipe's {what}")


def meta_model(recipe: dict[str, Any], path: str | Path = "model recipe") -> nn.Module:
    """The recipe's model on the meta device (shapes, no memory), within models.MAX_PARAMETERS. The recipe
    must have passed `check_recipe`."""
    with torch.device("meta"):
        model = _construct(recipe, path)
    _check_size(path, f"model {recipe['name']!r}", model)
    return model


def build_model(recipe: dict[str, Any], path: str | Path = "model recipe") -> nn.Module:
    """Rebuild the (untrained) architecture a checkpoint describes, after checking it on the meta device."""
    check_recipe(recipe, path)
    meta_model(recipe, path)
    return _construct(recipe, path)


def check_state(expected: dict[str, torch.Tensor], state: Any, path, what: str = "state_dict") -> None:
    """`state` has exactly the keys, shapes and dtypes of `expected` (a meta module's state_dict), each tensor
    backed by its own storage (no zero-stride view posing as a large tensor); else one line naming the key."""
    if not isinstance(state, dict):
        raise WorkbenchError(f"{path}: its {what} is a {type(state).__name__}, not a mapping")
    for key, want in expected.items():
        if key not in state:
            raise WorkbenchError(f"{path}: its {what} lacks {key} (its model recipe has it)")
        got = state[key]
        if not isinstance(got, torch.Tensor) or got.layout != torch.strided or got.device.type == "meta":
            raise WorkbenchError(f"{path}: {what} entry {key} is not a dense tensor ({type(got).__name__})")
        if got.shape != want.shape or got.dtype != want.dtype:
            raise WorkbenchError(f"{path}: {what} entry {key} is {got.dtype} {tuple(got.shape)} but its model recipe "
                                 f"gives {want.dtype} {tuple(want.shape)}")
        if got.numel() * got.element_size() > got.untyped_storage().nbytes():
            raise WorkbenchError(f"{path}: {what} entry {key} is larger than the storage it views")
    for key in state:
        if key not in expected:
            raise WorkbenchError(f"{path}: its {what} has {_describe(key)}, which its model recipe does not")


def check_recipe_fits_dataset(data: dict[str, Any], path: str | Path) -> None:
    """The checkpoint names a known dataset whose images and classes its recipe's model takes: a mismatch
    would fail deep inside an attack (or start a download of the wrong dataset)."""
    from .data import DATASETS

    recipe = data.get("model") if isinstance(data, dict) else None
    check_recipe(recipe, path)
    name = data.get("dataset")
    if not isinstance(name, str):
        raise WorkbenchError(f"{path}: checkpoint does not name its dataset")
    if name not in DATASETS:
        raise WorkbenchError(f"{path}: checkpoint says dataset {_describe(name)}, which this workbench does not "
                             f"know; choose one of: {', '.join(DATASETS.names())}")
    spec = DATASETS.get(name)
    want = (spec.channels, spec.image_size, spec.num_classes)
    got = tuple(recipe[k] for k in ("in_channels", "image_size", "num_classes"))
    if want != got:
        raise WorkbenchError(f"{path}: checkpoint says dataset {name} ({want[0]}x{want[1]}x{want[1]}, {want[2]} "
                             f"classes) but its model takes {got[0]}x{got[1]}x{got[1]} inputs and {got[2]} classes")


HEADS = ("softmax", "prototype")


def _attach(defense, model: nn.Module, recipe: dict[str, Any], path):
    shape = (recipe["in_channels"], recipe["image_size"], recipe["image_size"])
    try:
        return defense.attach(model, shape)
    except WorkbenchError as exc:
        raise WorkbenchError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - heads that cannot fit this model
        raise WorkbenchError(f"{path}: defense {defense.name!r} cannot attach its state ({_first_line(exc)})") from None


def defense_from_checkpoint(data: dict[str, Any], model: nn.Module, path: str | Path):
    """The run's defense, with its auxiliary state (heads, prototypes, centers) attached to `model` and loaded.
    The state is sized on the meta device first, so a recipe never allocates more than its checkpoint holds."""
    recipe = data.get("model")
    check_recipe(recipe, path)
    with torch.device("meta"):
        meta = _construct(recipe, path)
        meta_aux = _attach(_create_defense(recipe, path), meta, recipe, path)
    name = _defense_spec(recipe)[0]
    if meta_aux is not None:
        _check_size(path, f"model {recipe['name']!r} with its {name} auxiliary state", meta, meta_aux)
        state = data.get("auxiliary")
        if not isinstance(state, dict):
            raise WorkbenchError(f"{path}: checkpoint lacks the auxiliary state of defense {name!r}")
        check_state(meta_aux.state_dict(), state, path, "auxiliary state")
    defense = _create_defense(recipe, path)
    aux = _attach(defense, model, recipe, path)
    if aux is not None:
        try:
            aux.load_state_dict(data["auxiliary"])
        except Exception as exc:  # untrusted file: a mismatch is its fault
            raise WorkbenchError(f"{path}: auxiliary state does not match defense {name!r} ({_first_line(exc)})") from None
    return defense


def model_from_checkpoint(data: dict[str, Any], path: str | Path, device: str | torch.device = "cpu",
                          head: str = "softmax") -> nn.Module:
    """The eval-mode classifier described by an already-read checkpoint. `head="prototype"` predicts the
    nearest class prototype of the defense's last supervised feature instead of the softmax ([P0] Eq. 6).
    The recipe is checked against the dataset and, built on the meta device, against the state_dict before
    anything is allocated."""
    if head not in HEADS:
        raise WorkbenchError(f"unknown head {head!r}; choose one of: {', '.join(HEADS)}")
    if not isinstance(data, dict):
        raise WorkbenchError(f"{path}: a checkpoint is a mapping, not a {type(data).__name__}")
    check_recipe_fits_dataset(data, path)
    recipe = data["model"]
    check_state(meta_model(recipe, path).state_dict(), data.get("state_dict"), path)
    model = _construct(recipe, path)
    try:
        model.load_state_dict(data["state_dict"])
    except Exception as exc:  # untrusted recipe: any mismatch is the file's fault
        raise WorkbenchError(f"{path}: checkpoint does not match its model recipe ({_first_line(exc)})") from None
    if head == "prototype":
        defense = defense_from_checkpoint(data, model, path)
        if not hasattr(defense, "prototype_classifier"):
            raise WorkbenchError(f"{path}: defense {defense.name!r} has no class prototypes (--head prototype "
                                 "needs pcl or a ds_* defense)")
        model = defense.prototype_classifier(model)
    return model.to(device).eval()


def load_model(path: str | Path, device: str | torch.device = "cpu", head: str = "softmax") -> nn.Module:
    """The classifier stored in a checkpoint, in eval mode: [0, 1] inputs in, logits out.
    Auxiliary heads of deeply supervised defenses are never part of it."""
    return model_from_checkpoint(read_checkpoint(path), path, device, head)
