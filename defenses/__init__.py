"""Training-time defenses. Importing this package registers them all."""

from . import activations, adr, ccn, deep_supervision, ds_variants, normalization, pc_loss, pcl, softmax, trades  # noqa: F401  (registration)
from .base import AttackLoss, BatchContext, Defense, LossOutput, NoParams
from .registry import DEFENSES, create_defense, register_defense

__all__ = ["DEFENSES", "AttackLoss", "BatchContext", "Defense", "LossOutput", "NoParams", "create_defense", "register_defense"]
