"""Compact learning [P4]: `ccn` (every conv/FC layer compact), `ccn_ls` (+ label smoothing) and
`l2_softmax` (L2SM: only the classifier's input normalized and scaled by alpha).

The compact transform works on any registered model: it swaps `nn.Conv2d` / `nn.Linear` layers
for `CompactConv2d` / `CompactLinear`, all of them or the named ones (`layers: [fc2]`, the
paper's Table 13 ablation applies one layer at a time). Alpha initialization is unspecified by
the paper (SPEC §4.2 [I]): the classifier starts at the L2-softmax bound log(p(K-2)/(1-p)),
p = 0.99 (6.7 for 10 classes); inner layers at sqrt(fan_in), which gives a Kaiming-initialized
kernel on a unit-norm patch the output scale of a standard conv on unit-RMS inputs. Both are
learned by default and logged after every epoch (`alpha_<layer>` in the epoch records).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field
from torch import nn

from workbench.errors import WorkbenchError

from .compact_layers import CompactConv2d, CompactLinear, fan_in, l2_softmax_alpha
from .cross_entropy import SmoothingParams
from .registry import register_defense
from .softmax import Softmax
from .surgery import named_layers, replace_module, resolve_layers


def _alpha(value: Any) -> Any:
    ok = value == "auto" or (isinstance(value, (int, float)) and not isinstance(value, bool)
                             and math.isfinite(value) and value > 0)
    if not ok:
        raise ValueError("must be 'auto' or a number > 0")
    return value if value == "auto" else float(value)


PositiveAlpha = Annotated[float | str, BeforeValidator(_alpha)]


class CompactParams(SmoothingParams):
    layers: Literal["all"] | Annotated[list[str], Field(min_length=1)] = Field(
        "all", description="'all', or layer names (conv1.., fc1.., or module paths) to make compact")
    delta: Annotated[float, Field(gt=0)] = Field(0.01, description="added to every patch norm")
    alpha_inner: PositiveAlpha = Field("auto", description="initial alpha of inner layers ('auto': sqrt(fan_in))")
    alpha_final: PositiveAlpha = Field("auto", description="initial alpha of the classifier ('auto': L2-softmax bound)")
    learn_alpha: bool = True


def make_compact(model: nn.Module, layers: list[str] | None, *, delta: float, alpha_inner: float | str,
                 alpha_final: float | str, learn_alpha: bool, num_classes: int) -> list[tuple[str, nn.Module]]:
    """Swap the chosen layers (None: all) for compact ones, in place; returns [(short name, new module)]."""
    table = named_layers(model)
    if not table:
        raise WorkbenchError("this model has no conv or linear layers to make compact")
    chosen = resolve_layers(model, layers) if layers is not None else [(n, p) for n, (p, _) in table.items()]
    final_path = [p for n, (p, _) in table.items() if n.startswith("fc")][-1:]  # the classifier
    swapped = []
    for short, path in chosen:
        old = model.get_submodule(path)
        is_final = [path] == final_path
        if is_final:
            alpha = l2_softmax_alpha(num_classes) if alpha_final == "auto" else float(alpha_final)
        else:
            alpha = math.sqrt(fan_in(old)) if alpha_inner == "auto" else float(alpha_inner)
        kw = {"alpha": alpha, "delta": delta, "learn_alpha": learn_alpha}
        try:
            new = CompactConv2d.from_conv(old, **kw) if isinstance(old, nn.Conv2d) else CompactLinear.from_linear(old, **kw)
        except ValueError as exc:
            raise WorkbenchError(f"layer {short} ({path}): {exc}") from None
        replace_module(model, path, new)
        swapped.append((short, new))
    return swapped


class _CompactBase(Softmax):
    """Cross-entropy (optionally smoothed, Softmax's loss) on a model with compact layers."""

    Params = CompactParams

    def layer_choice(self) -> list[str] | None:
        layers = self.params.layers
        return None if layers == "all" else list(layers)

    def transform_model(self, model: nn.Module) -> nn.Module:
        p = self.params
        self.compact_layers = make_compact(model, self.layer_choice(), delta=p.delta, alpha_inner=p.alpha_inner,
                                           alpha_final=p.alpha_final, learn_alpha=p.learn_alpha,
                                           num_classes=self.num_classes)
        return model

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        return {f"alpha_{name}": float(m.alpha.detach()) for name, m in getattr(self, "compact_layers", [])}


@register_defense
class CCN(_CompactBase):
    name = "ccn"
    paper = "Compact Convolutional Networks [P4]: every conv and FC layer compact"


class _CCNLSParams(CompactParams):
    smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1


@register_defense
class CCNLabelSmoothing(CCN):
    name = "ccn_ls"
    paper = "CCN + label smoothing {1/90, 0.9} [P4]"
    Params = _CCNLSParams


class L2SoftmaxParams(SmoothingParams):
    alpha: PositiveAlpha = Field("auto", description="feature norm ('auto': L2-softmax bound, 6.7 for 10 classes)")
    learn_alpha: bool = True
    delta: Annotated[float, Field(gt=0)] = 0.01


@register_defense
class L2Softmax(_CompactBase):
    """Only the classifier compact: its input feature normalized and scaled by alpha (CCN Table 13 'fc3')."""

    name = "l2_softmax"
    paper = "L2-softmax (L2SM) [P4 §3.2], Ranjan et al."
    Params = L2SoftmaxParams

    def transform_model(self, model: nn.Module) -> nn.Module:
        p = self.params
        fcs = [n for n in named_layers(model) if n.startswith("fc")]
        if not fcs:
            raise WorkbenchError("l2_softmax needs a model whose classifier is a linear layer")
        self.compact_layers = make_compact(model, fcs[-1:], delta=p.delta, alpha_inner="auto", alpha_final=p.alpha,
                                           learn_alpha=p.learn_alpha, num_classes=self.num_classes)
        return model
