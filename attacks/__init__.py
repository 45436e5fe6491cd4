"""Adversarial attacks in the torchattacks call convention: `PGD(model, eps=0.3)(x, y) -> x_adv`."""

from .base import Attack, AttackResult, model_mode, project_linf
from .bim import BIM
from .fgsm import FGSM
from .losses import ATTACK_LOSSES
from .mim import MIM
from .pgd import PGD
from .registry import ATTACKS, create_attack, register_attack

__all__ = ["ATTACKS", "ATTACK_LOSSES", "Attack", "AttackResult", "BIM", "FGSM", "MIM", "PGD", "create_attack", "model_mode",
           "project_linf", "register_attack"]
