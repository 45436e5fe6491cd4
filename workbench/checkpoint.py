"""Checkpoints: tensors and plain data only, written atomically, loaded without unpickling objects.

A checkpoint is a dict: format/version markers, the model's build recipe (registry name,
input shape, classes, normalization, options, defense), its state_dict, and for resuming
the optimizer state, position, RNG states and metrics. `torch.load(..., weights_only=True)`
reads it; anything else (an arbitrary pickle, a truncated file) is rejected with one line.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_write_bytes
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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about legacy/pickle formats on stderr
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # untrusted input: every failure to load is the file's fault
        blocked = _BLOCKED_GLOBAL.search(str(exc))
        if blocked:
            what = re.sub(r"[^\w.]", "", blocked.group(1))[:80]
            raise WorkbenchError(f"{path} is not a safe checkpoint: it asks to run Python code ({what}), "
                                 "which is never unpickled") from None
        raise WorkbenchError(f"{path} is not a readable checkpoint (not a tensors-only torch file, "
                             f"or truncated/corrupt: {type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise WorkbenchError(f"{path} is not a workbench checkpoint (no '{FORMAT}' marker)")
    if data.get("version") != VERSION:
        raise WorkbenchError(f"{path} has checkpoint version {data.get('version')!r}; this workbench reads {VERSION}")
    for key in ("model", "state_dict"):
        if key not in data:
            raise WorkbenchError(f"{path} is an incomplete checkpoint (missing {key!r})")
    return data


def build_model(recipe: dict[str, Any]) -> nn.Module:
    """Rebuild the (untrained) architecture a checkpoint describes."""
    from defenses import create_defense

    from .models import create_model

    norm = recipe.get("normalize")
    model = create_model(
        recipe["name"], recipe["in_channels"], recipe["num_classes"], recipe["image_size"],
        normalize=(norm["mean"], norm["std"]) if norm else None, **recipe.get("options", {}),
    )
    defense = recipe.get("defense") or {"name": "softmax", "params": {}}
    return create_defense(defense["name"], defense["params"], recipe["num_classes"]).transform_model(model)


HEADS = ("softmax", "prototype")


def defense_from_checkpoint(data: dict[str, Any], model: nn.Module, path: str | Path):
    """The run's defense, with its auxiliary state (heads, prototypes, centers) attached to `model` and loaded."""
    from defenses import create_defense

    recipe = data["model"]
    spec = recipe.get("defense") or {"name": "softmax", "params": {}}
    defense = create_defense(spec["name"], spec.get("params", {}), recipe["num_classes"])
    aux = defense.attach(model, (recipe["in_channels"], recipe["image_size"], recipe["image_size"]))
    if aux is not None:
        state = data.get("auxiliary")
        if not isinstance(state, dict):
            raise WorkbenchError(f"{path}: checkpoint lacks the auxiliary state of defense {spec['name']!r}")
        try:
            aux.load_state_dict(state)
        except Exception as exc:  # untrusted file: a mismatch is its fault
            msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise WorkbenchError(f"{path}: auxiliary state does not match defense {spec['name']!r} ({msg})") from None
    return defense


def model_from_checkpoint(data: dict[str, Any], path: str | Path, device: str | torch.device = "cpu",
                          head: str = "softmax") -> nn.Module:
    """The eval-mode classifier described by an already-read checkpoint. `head="prototype"` predicts the
    nearest class prototype of the defense's last supervised feature instead of the softmax ([P0] Eq. 6)."""
    if head not in HEADS:
        raise WorkbenchError(f"unknown head {head!r}; choose one of: {', '.join(HEADS)}")
    try:
        model = build_model(data["model"])
        model.load_state_dict(data["state_dict"])
    except WorkbenchError:
        raise
    except Exception as exc:  # untrusted recipe: any mismatch is the file's fault
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(f"{path}: checkpoint does not match its model recipe ({msg})") from None
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
