"""The `adv_train` block: turning a clean batch into the training batch.

Serves the papers' set-ups: Madry PGD-AT (ratio 1), clean + FGSM 1:1 (CCN, PC-LC:
pairing concat, ratio 0.5) and PCL's eps ~ U[lo, hi] per batch (or per sample).
"""

from __future__ import annotations

import torch
from torch import nn

from attacks import FGSM, PGD, Attack

from ..accel import FLOAT32, Precision
from ..config.schema import AdvTrainConfig, resolve_step_size

RANK_SEED_STRIDE = 7919  # under DDP each rank's attack draws its own random starts


class AdversarialBatcher:
    def __init__(self, cfg: AdvTrainConfig, model: nn.Module, seed: int, rank: int = 0,
                 precision: Precision = FLOAT32):
        self.cfg = cfg
        self.model = model
        # eps sampling has its own generator so resuming mid-epoch replays it exactly; it is the same on every
        # rank (one eps per global batch, as one process draws it).
        self.eps_generator = torch.Generator().manual_seed(seed + 1)
        self.rank = rank
        common = dict(loss=cfg.loss, seed=seed + 2 + RANK_SEED_STRIDE * rank, model_training=cfg.model_mode == "train")
        if cfg.attack == "pgd":
            self.attack: Attack | None = PGD(model, eps=0.0, steps=cfg.steps, random_start=cfg.random_start, **common)
        elif cfg.attack == "fgsm":
            self.attack = FGSM(model, eps=0.0, **common)
        else:
            self.attack = None
        if self.attack is not None:
            self.attack.precision = precision  # the model's forward autocast; the perturbation stays float32
            self.attack.validate_inputs = False
            self.attack.nhwc_on_cpu = False  # the trainer owns the layout (performance.channels_last)
            self.attack.early_stop = False  # train on the full-strength point, not the first fooling one

    @property
    def enabled(self) -> bool:
        return self.attack is not None and self.cfg.ratio > 0

    def adversarial_rows(self, n: int) -> int:
        """How many of a clean batch's n samples get an adversarial version."""
        if not self.enabled:
            return 0
        if self.cfg.pairing == "split":
            return n if self.cfg.ratio >= 1 else int(round(self.cfg.ratio * n))
        return min(n, int(round(n * self.cfg.ratio / (1 - self.cfg.ratio))))

    def output_size(self, n: int) -> int:
        """Rows of the training batch made from a clean batch of n."""
        return n + self.adversarial_rows(n) if self.cfg.pairing == "concat" else n

    def _eps(self, k: int, device: torch.device, shares: tuple[int, ...] | None) -> torch.Tensor | float:
        """eps for k adversarial rows. Per-sample draws cover the global batch (every rank's `shares` of clean
        samples) and each rank keeps its own rows, so N ranks draw what one process would."""
        eps = self.cfg.eps
        if not isinstance(eps, list):
            return float(eps)
        lo, hi = eps
        if self.cfg.eps_sampling != "sample":
            return float(lo + (hi - lo) * torch.rand(1, generator=self.eps_generator))
        counts = [self.adversarial_rows(n) for n in shares] if shares else [k]
        offset = sum(counts[: self.rank]) if shares else 0
        draw = lo + (hi - lo) * torch.rand(sum(counts), generator=self.eps_generator)
        return draw[offset: offset + k].to(device) if k > 1 else float(draw[offset])

    def make_batch(self, x: torch.Tensor, y: torch.Tensor, shares: tuple[int, ...] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(x_train, y_train, adversarial mask) for one clean batch (`shares`: every rank's clean batch size
        under DDP, this rank's being x's)."""
        if not self.enabled:
            return x, y, None
        cfg = self.cfg
        n = x.shape[0]
        k = self.adversarial_rows(n)
        if k == 0:
            return x, y, None
        eps = self._eps(k, x.device, shares)
        self.attack.eps = eps
        if isinstance(self.attack, PGD):
            if isinstance(cfg.step_size, str):  # an expression of eps: scale it per sample
                unit = resolve_step_size(cfg.step_size, 1.0, cfg.steps)
                self.attack.step_size = unit * (eps.view(-1, 1, 1, 1) if isinstance(eps, torch.Tensor) else eps)
            else:
                self.attack.step_size = float(cfg.step_size)
        x_adv = self.attack(x[:k], y[:k])
        mask = torch.zeros(n + (k if cfg.pairing == "concat" else 0), dtype=torch.bool, device=x.device)
        if cfg.pairing == "split":
            mask[:k] = True
            return torch.cat([x_adv, x[k:]]), y, mask
        mask[n:] = True
        return torch.cat([x, x_adv]), torch.cat([y, y[:k]]), mask

    def state(self) -> dict:
        gen = self.attack.get_rng_state() if self.attack is not None else None
        return {"eps_generator": self.eps_generator.get_state(), "attack_generator": gen,
                "attack_device": self.attack._generator.device.type if gen is not None else None}

    def load_state(self, state: dict, device: torch.device, step: int) -> bool:
        """Restore the generators; False if the attack's could not be (the run moved device)."""
        self.eps_generator.set_state(state["eps_generator"])
        gen = state.get("attack_generator")
        if self.attack is None or gen is None:
            return True
        if state.get("attack_device") == torch.device(device).type:
            self.attack.set_rng_state(gen, device)
            return True
        # CPU and CUDA generator states are not interchangeable: reseed deterministically.
        self.attack.generator(device).manual_seed(self.attack.seed + 1_000_003 * (step + 1))
        return False

    def reseed(self, state: dict, step: int) -> None:
        """Resume with another number of ranks: the shared eps draws continue, the attack's starts are reseeded."""
        self.eps_generator.set_state(state["eps_generator"])
        if self.attack is not None:
            self.attack._generator = None
            self.attack.seed = self.attack.seed + 1_000_003 * (step + 1)
