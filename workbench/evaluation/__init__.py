"""Evaluating checkpoints under attacks."""

from .attack_eval import AttackPlan, check_eps_list, evaluate_checkpoint, resolve_checkpoint, save_evaluation

__all__ = ["AttackPlan", "check_eps_list", "evaluate_checkpoint", "resolve_checkpoint", "save_evaluation"]
