"""The TPAMI paper's deeply supervised baselines [P1] §4 / Tables 9-10, on the same heads as `pcl`.

- `ds_softmax`: CE at every head, through a branch ending in FC(K) (Table 10, left column).
- `ds_center`: CE + lambda * 1/2 ||f - c_y||^2 per head (averaged over the batch), centers updated by
  Wen et al.'s rule c_j <- c_j - alpha * sum_{i: y_i = j}(c_j - f_i) / (1 + n_j), not by gradient.
- `ds_contrastive`: over all pairs of the batch, 1/2 D^2 for same-class pairs and
  1/2 max(0, m - D)^2 otherwise, D = ||f_i - f_j||.
- `ds_triplet`: max(0, m + ||f_a - f_p||^2 - ||f_a - f_n||^2), batch-hard or all triplets of the batch.

The papers train contrastive and triplet models with no final FC(10) and leave the classification
rule unstated (SPEC 1.7). [I] Here the representation is trained by the head losses alone and the
layers after the last head learn from its *detached* features (a linear probe), so the checkpoint
is an ordinary classifier that every attack can target; nearest-class-mean prediction on the last
head (means tracked during training) is the `--head prototype` evaluation option.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .base import BatchContext
from .deep_supervision import DeeplySupervised, DSParams, class_means, init_new_classes, sq_distances
from .registry import register_defense


@register_defense
class DSSoftmax(DeeplySupervised):
    name = "ds_softmax"
    paper = "deeply supervised softmax: CE at every head [P1] Table 10"

    def __init__(self, params, num_classes: int):
        super().__init__(params, num_classes)
        self.head_out = num_classes  # every branch ends in its own FC(K)

    def head_loss(self, i: int, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(f.float(), y, reduction="none")


class CenterParams(DSParams):
    alpha: Annotated[float, Field(gt=0, le=1)] = Field(0.5, description="center update rate alpha")


@register_defense
class DSCenter(DeeplySupervised):
    name = "ds_center"
    paper = "deeply supervised center loss (Wen et al. ECCV'16) [P1] Table 9"
    Params = CenterParams

    def build_state(self, aux: nn.Module, dims: list[int], device: torch.device) -> None:
        for i, d in enumerate(dims):
            aux.register_buffer(f"centers_{i}", torch.zeros(self.num_classes, d, device=device))
        aux.register_buffer("ready", torch.zeros(len(dims), self.num_classes, dtype=torch.bool, device=device))
        self.complete = [False] * len(dims)

    def centers(self, i: int) -> torch.Tensor:
        return getattr(self.aux, f"centers_{i}")

    def head_loss(self, i: int, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.in_training and not self.complete[i]:  # [I] centers start at the class means, not at zero
            init_new_classes([self.centers(i)], self.aux.ready[i], f, y)
            self.complete[i] = bool(self.aux.ready[i].all())
        return 0.5 * (f.float() - self.centers(i)[y]).pow(2).sum(1)

    def after_step(self, ctx: BatchContext) -> None:
        if self._batch is None:
            return
        feats, y = self._batch
        for i, f in enumerate(feats):
            c = self.centers(i)
            means, counts = class_means(f, y, self.num_classes)
            # sum_{i: y_i = j}(c_j - f_i) = n_j (c_j - mean_j); divided by 1 + n_j.
            delta = counts[:, None] * (c - means) / (1 + counts[:, None])
            c.sub_(self.params.alpha * delta)

    def class_prototypes(self) -> torch.Tensor:
        return self.centers(len(self.params.heads) - 1)


class TrackedMeansMixin:
    """Class means of the last head's features, tracked during training (exponential moving average)."""

    momentum = 0.1

    def build_state(self, aux: nn.Module, dims: list[int], device: torch.device) -> None:
        aux.register_buffer("class_means", torch.zeros(self.num_classes, dims[-1], device=device))
        aux.register_buffer("seen", torch.zeros(self.num_classes, dtype=torch.bool, device=device))

    def after_step(self, ctx: BatchContext) -> None:
        if self._batch is None:
            return
        feats, y = self._batch
        means, counts = class_means(feats[-1], y, self.num_classes)
        present = (counts > 0)[:, None]
        first = present & ~self.aux.seen[:, None]
        old = self.aux.class_means
        # Masks as arithmetic, not boolean indexing (which reads the mask back to the host every step).
        moved = (1 - self.momentum) * old + self.momentum * means
        old.copy_(torch.where(first, means, torch.where(present, moved, old)))
        self.aux.seen |= present[:, 0]

    def class_prototypes(self) -> torch.Tensor:
        return self.aux.class_means

    def attack_loss(self):
        """The adaptive loss of the probe variants: CE of the classifier plus tau times the nearest-class-mean
        margin of the last head, d^2(f, mu_y) - min_{j != y} d^2(f, mu_j). The training terms compare samples
        within a batch; an attack loss must be per sample (no dependence on what else shares the batch)."""
        def ce_plus_mean_margin(model, x, y):
            logits, feats, _ = self.head_features(model, x)
            d = sq_distances(feats[-1], self.aux.class_means)
            own = d.gather(1, y[:, None]).squeeze(1)
            nearest_other = d.scatter(1, y[:, None], float("inf")).amin(1)
            return F.cross_entropy(logits.float(), y, reduction="none") + self.params.tau * (own - nearest_other), logits

        return ce_plus_mean_margin


class ContrastiveParams(DSParams):
    margin: Annotated[float, Field(gt=0)] = Field(1.0, description="margin m of dissimilar pairs [I]")


@register_defense
class DSContrastive(TrackedMeansMixin, DeeplySupervised):
    name = "ds_contrastive"
    paper = "deeply supervised contrastive loss (Hadsell et al.) [P1] Table 9"
    Params = ContrastiveParams
    classifier = "probe"

    def head_loss(self, i: int, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        peers, peer_y, own = self.batch_peers(f, y)
        n = peers.shape[0]
        d2 = sq_distances(f, peers)
        same = (y[:, None] == peer_y[None]).float()
        off_diag = (~own).float()
        dist = (d2 + 1e-12).sqrt()  # the epsilon keeps the gradient finite for coinciding features
        pair = 0.5 * same * d2 + 0.5 * (1 - same) * (self.params.margin - dist).clamp_min(0).pow(2)
        return (pair * off_diag).sum(1) / max(n - 1, 1)


class TripletParams(DSParams):
    margin: Annotated[float, Field(gt=0)] = Field(0.2, description="margin m on squared distances [I]")
    mining: Literal["batch_hard", "batch_all"] = Field(
        "batch_hard", description="hardest positive/negative per anchor, or every valid triplet of the batch")


@register_defense
class DSTriplet(TrackedMeansMixin, DeeplySupervised):
    name = "ds_triplet"
    paper = "deeply supervised triplet loss (Schroff et al.) [P1] Table 9"
    Params = TripletParams
    classifier = "probe"

    def head_loss(self, i: int, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        m = self.params.margin
        peers, peer_y, own = self.batch_peers(f, y)
        d2 = sq_distances(f, peers)
        pos = (y[:, None] == peer_y[None]) & ~own
        neg = y[:, None] != peer_y[None]
        valid = pos.any(1) & neg.any(1)  # anchors with at least one positive and one negative
        if self.params.mining == "batch_hard":
            hardest_pos = d2.masked_fill(~pos, float("-inf")).amax(1)
            hardest_neg = d2.masked_fill(~neg, float("inf")).amin(1)
            loss = (m + hardest_pos - hardest_neg).clamp_min(0)
            return torch.where(valid, loss, torch.zeros_like(loss))
        # All (a, p, n): loss[a, p, n] = max(0, m + d(a, p) - d(a, n)), averaged per anchor over its triplets.
        mask = pos[:, :, None] & neg[:, None, :]
        loss = (m + d2[:, :, None] - d2[:, None, :]).clamp_min(0) * mask
        return loss.sum((1, 2)) / mask.sum((1, 2)).clamp_min(1)
