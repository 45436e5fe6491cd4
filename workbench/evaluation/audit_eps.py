"""Which eps the gradient-masking audit attacks at, and where that number came from.

An audit is only informative at an eps where the model keeps some accuracy: at 0.3 a model trained at
0.1 is at ~0% under every attack, and every comparison is between zeros. So the default comes from the
checkpoint itself: the eps it was adversarially trained at, else the eps its training-time robust
evaluation used, else the dataset's convention. No torch here: it reads the checkpoint's stored config.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from ..config.schema import MAX_PIXEL_EPS, EvalConfig
from .presets import family

# The stored config is the full resolved dump, so an eval.eps left at the schema's default cannot be told
# from one set on purpose; that default is the MNIST convention, not a choice made for this run.
_EVAL_DEFAULT = EvalConfig.model_fields["eps"].default


def audit_eps(dataset: str) -> tuple[float, float]:
    """(reference eps, very large eps) for a dataset family, L-inf."""
    return (0.3, 0.6) if family(dataset) == "gray" else (8 / 255, 64 / 255)


def _radius(value: Any, zero: bool = False) -> float | None:
    """A usable L-inf radius from untrusted config data (0 too when `zero`), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and (0 < value or zero and value == 0) and value <= MAX_PIXEL_EPS else None


def _block(config: Any, key: str) -> Mapping:
    block = config.get(key) if isinstance(config, Mapping) else None
    return block if isinstance(block, Mapping) else {}


def choose_audit_eps(checkpoint: Mapping | None, dataset: str, given: float | None = None) -> tuple[float, str]:
    """(eps, where it came from) for auditing a checkpoint; `checkpoint` is the dict read_checkpoint returns.

    The source reads after "from": "audit eps 0.1 (from the checkpoint's adv_train.eps)".
    """
    if given is not None:
        return given, "--eps"
    config = checkpoint.get("config") if isinstance(checkpoint, Mapping) else None
    default = audit_eps(dataset)[0]
    if not isinstance(config, Mapping):
        return default, f"the {dataset} default: the checkpoint stores no config"
    adv = _block(config, "adv_train")
    ratio = _radius(adv.get("ratio", 1.0), zero=True)
    if adv.get("attack") not in (None, "none") and ratio != 0:
        eps = adv.get("eps")
        if isinstance(eps, list) and len(eps) == 2:
            lo, hi = _radius(eps[0], zero=True), _radius(eps[1])
            if lo is not None and hi is not None:
                # A range (PCL's U[lo, hi]): the largest radius the model was trained to resist.
                return hi, f"the upper end of the checkpoint's adv_train.eps range [{lo:g}, {hi:g}]"
        elif _radius(eps) is not None:
            return _radius(eps), "the checkpoint's adv_train.eps"
    eval_eps = _radius(_block(config, "eval").get("eps"))
    if eval_eps is not None and eval_eps != _EVAL_DEFAULT:
        return eval_eps, "the checkpoint's eval.eps"
    return default, (f"the {dataset} default: the checkpoint's config has no adversarial-training eps "
                     "and no eval.eps other than the schema default")
