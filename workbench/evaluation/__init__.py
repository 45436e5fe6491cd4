"""Evaluating checkpoints under attacks: protocols, presets, the engine, reports and the audit."""

from .attack_eval import (
    adaptive_loss,
    adaptive_protocol,
    check_eps_list,
    check_linf_eps,
    evaluate_checkpoint,
    resolve_checkpoint,
    save_evaluation,
)
from .custom import AttackChoice, AttackOptions, custom_protocol, parse_choice
from .engine import Evaluator, evaluate
from .presets import PRESETS, build_protocol, default_eps
from .protocol import AttackSpec, Protocol

__all__ = ["PRESETS", "AttackChoice", "AttackOptions", "AttackSpec", "Evaluator", "Protocol", "adaptive_loss",
           "adaptive_protocol", "build_protocol", "check_eps_list", "check_linf_eps", "custom_protocol", "default_eps", "evaluate",
           "evaluate_checkpoint", "parse_choice", "resolve_checkpoint", "save_evaluation"]
