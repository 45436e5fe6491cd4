"""Adversarial attacks in the torchattacks call convention: `PGD(model, eps=0.3)(x, y) -> x_adv`.

Importing the package registers every attack by name in `ATTACKS`, then the plugin attacks
(`registry.load_plugins`). A new attack is its module plus one import line here.
"""

from .apgd import APGD, APGDCE, APGDDLR, APGDT
from .autoattack import AutoAttack
from .base import Attack, AttackResult, StageStats, StepHook, StepProgress, model_mode, project_l2, project_linf
from .bim import BIM
from .cw import CW
from .deepfool import DeepFool
from .fab import FAB, FABT
from .fgsm import FGSM
from .losses import ATTACK_LOSSES
from .mim import MIM
from .multitarget import MultiTargeted
from .pgd import PGD
from .registry import ATTACKS, all_meta, attack_meta, create_attack, load_plugins, register_attack
from .spsa import SPSA
from .square import Square

__all__ = [
    "APGD", "APGDCE", "APGDDLR", "APGDT", "ATTACKS", "ATTACK_LOSSES", "BIM", "CW", "FAB", "FABT", "FGSM", "MIM",
    "PGD", "SPSA", "Attack", "AttackResult", "StageStats", "StepHook", "StepProgress", "AutoAttack", "DeepFool", "MultiTargeted", "Square", "create_attack",
    "all_meta", "attack_meta", "model_mode", "project_l2", "project_linf", "register_attack",
]

load_plugins()  # last: a plugin module imports this package for Attack and register_attack
