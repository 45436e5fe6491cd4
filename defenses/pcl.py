"""`pcl`: Prototype Conformity Loss with deep supervision [P0, P1] (Mustafa et al., ICCV'19 / TPAMI).

Each head has trainable class prototypes on their own SGD (no momentum, no weight decay); the
model trains on CE + tau * sum over heads of the PC loss after a CE-only warm-up. Two modes:

- `code` (default, the authors' released loss, SPEC 1.3): per head,
  w_p * mean ||f - c_y||^2 - w_c * mean_{j != y} ||f - c'_j||^2 with two independent prototype sets:
  the pull set c (lr 0.5) and the push set c' (lr 1e-4); before each prototype step its gradient is
  divided by its loss weight, so prototypes follow the unweighted term (push prototypes move away
  from other-class features). No prototype-prototype term, w_c = 1e-4 (1e-5 in the AT scripts).
- `paper` (Eq. 5 of [P1]): shared prototypes, ||f - w_y||^2 - 1/(k-1) sum_{j != y}(||f - w_j||^2 +
  ||w_y - w_j||^2). At weight 1 it is unbounded below, so the repel part has a weight (default 1e-4)
  or, with `repel_margin`, becomes a hinge max(0, m - d^2) that stops pushing beyond m.

[I] `proto_init: class_mean` (default) starts each head's prototypes at the class means of the first
PC batch's features instead of randn: randn prototypes in 512-d sit ~22 away from the features, and
the pull term then swamps CE (code-mode PCL after one warm-up epoch collapsed to chance here, SPEC 1.8).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from .base import BatchContext
from .deep_supervision import DeeplySupervised, DSParams, init_new_classes, sq_distances
from .registry import register_defense


class PCLParams(DSParams):
    warmup_epochs: Annotated[int, Field(ge=0)] | None = Field(
        None, description="CE-only epochs T' before PCL (null: a quarter of the run, e.g. 10 + 30)")
    reset_optimizer: bool = Field(True, description="fresh model-optimizer state when PCL starts (phase-2 script)")
    mode: Literal["code", "paper"] = Field("code", description="released loss (code) or Eq. 5 (paper)")
    proto_init: Literal["class_mean", "randn"] = Field(
        "class_mean", description="prototypes start at the first PC batch's class means, or randn (code)")
    pull_weight: Annotated[float, Field(gt=0)] = Field(1.0, description="code: weight w_p of the pull term")
    push_weight: Annotated[float, Field(gt=0)] = Field(1e-4, description="code: weight w_c of the push term")
    pull_lr: Annotated[float, Field(gt=0)] = Field(0.5, description="code: SGD lr of the pull prototypes")
    push_lr: Annotated[float, Field(gt=0)] = Field(1e-4, description="code: SGD lr of the push prototypes")
    proto_lr: Annotated[float, Field(gt=0)] = Field(0.5, description="paper: SGD lr of the shared prototypes")
    repel_weight: Annotated[float, Field(gt=0)] = Field(1e-4, description="paper: weight of the repel part")
    repel_margin: Annotated[float, Field(gt=0)] | None = Field(
        None, description="paper: hinge max(0, m - d^2) on repel distances instead of -d^2 (null: off); "
                          "still times repel_weight, so raise that too")


@register_defense
class PCL(DeeplySupervised):
    name = "pcl"
    paper = "Prototype Conformity Loss with deep supervision [P0, P1] (Mustafa et al., ICCV'19 / TPAMI'20)"
    Params = PCLParams

    def build_state(self, aux: nn.Module, dims: list[int], device: torch.device) -> None:
        p, k = self.params, self.num_classes

        def protos() -> nn.ParameterList:
            return nn.ParameterList([nn.Parameter(torch.randn(k, d, device=device)) for d in dims])

        # (prototype sets, lr, loss weight the gradient is divided by): the sets follow the unweighted term.
        if p.mode == "code":
            aux.pull, aux.push = protos(), protos()
            self.sets = [(aux.pull, p.pull_lr, p.pull_weight), (aux.push, p.push_lr, p.push_weight)]
        else:
            aux.protos = protos()
            self.sets = [(aux.protos, p.proto_lr, 1.0)]
        aux.register_buffer("ready", torch.zeros(len(dims), k, dtype=torch.bool, device=device))  # per head, class
        self.complete = [False] * len(dims)  # a host-side cache of ready[i].all(): no device sync once done
        self.optimizers = [torch.optim.SGD(list(s), lr=lr, momentum=0.0, weight_decay=0.0) for s, lr, _ in self.sets]

    def self_updated(self) -> list[nn.Parameter]:
        return [q for s, _, _ in self.sets for q in s]

    def head_loss(self, i: int, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = self.params
        if self.in_training and p.proto_init == "class_mean" and not self.complete[i]:
            init_new_classes([s[i] for s, _, _ in self.sets], self.aux.ready[i], f, y)
            self.complete[i] = bool(self.aux.ready[i].all())
        others = torch.ones(f.shape[0], self.num_classes, device=f.device).scatter(1, y[:, None], 0.0)
        k1 = self.num_classes - 1
        if p.mode == "code":
            # Squared distances clamped to [1e-12, 1e12] as the released Proximity / ConProximity losses.
            pull = sq_distances(f, self.aux.pull[i]).gather(1, y[:, None]).squeeze(1).clamp(1e-12, 1e12)
            push = (sq_distances(f, self.aux.push[i]).clamp(1e-12, 1e12) * others).sum(1) / k1
            return p.pull_weight * pull - p.push_weight * push
        w = self.aux.protos[i]
        d = sq_distances(f, w)
        between = sq_distances(w, w)[y]  # ||w_y - w_j||^2 per sample
        pull = d.gather(1, y[:, None]).squeeze(1)
        if p.repel_margin is None:
            return pull - p.repel_weight * ((d + between) * others).sum(1) / k1
        hinge = (p.repel_margin - d).clamp_min(0) + (p.repel_margin - between).clamp_min(0)
        return pull + p.repel_weight * (hinge * others).sum(1) / k1

    def after_step(self, ctx: BatchContext) -> None:
        scale = self.params.tau
        for (s, _, weight), opt in zip(self.sets, self.optimizers):
            for q in s:
                if q.grad is not None:
                    q.grad.div_(scale * weight)
            opt.step()
            opt.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {"prototype_optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for opt, s in zip(self.optimizers, state.get("prototype_optimizers", [])):
            opt.load_state_dict(s)

    def class_prototypes(self) -> torch.Tensor:
        return (self.aux.pull if self.params.mode == "code" else self.aux.protos)[-1]

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        if self.aux is None:
            return {}
        out = {}
        for i, h in enumerate(self.params.heads):
            w = (self.aux.pull if self.params.mode == "code" else self.aux.protos)[i].detach()
            eye = torch.eye(len(w), dtype=torch.bool, device=w.device)
            d = sq_distances(w, w).sqrt().masked_fill(eye, float("inf"))
            out[f"proto_norm_{i}_{h.tap}"] = float(w.norm(dim=1).mean())
            out[f"proto_min_dist_{i}_{h.tap}"] = float(d.min())
        return out
