"""The gradient-masking audit passes an honest model, flags one with obfuscated gradients, and calls a
comparison of zeros inconclusive instead of passing it."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from workbench import load_data, load_model
from workbench.checkpoint import read_checkpoint
from workbench.cli import app
from workbench.evaluation.audit import FLOOR, audit_model, audit_protocol, run_checks, verdict
from workbench.evaluation.audit_eps import choose_audit_eps


class Quantized(nn.Module):
    """Input quantization: rounding has zero gradient almost everywhere (shattered gradients)."""

    def __init__(self, model: nn.Module, levels: int = 4):
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x):
        return self.model(torch.round(x * self.levels) / self.levels)


@pytest.fixture(scope="module")
def digits(quickstart_run):
    x, y = load_data("digits", "test")
    return load_model(quickstart_run.best), x[:120], y[:120]


def statuses(result):
    return {c["name"]: c["status"] for c in result["checks"]}


def test_plain_model_passes(digits):
    model, x, y = digits
    result = audit_model(model, x, y, dataset="digits", eps=0.1, large_eps=0.6, queries=300)
    st = statuses(result)
    assert result["verdict"] == "pass", result["checks"]
    assert st["white-box >= transfer"] == "skip"  # no source given
    assert set(st.values()) <= {"pass", "skip"}


def test_quantized_model_is_flagged(digits):
    model, x, y = digits
    masked = Quantized(model).eval()
    result = audit_model(masked, x, y, dataset="digits", eps=0.1, large_eps=0.6, queries=300)
    st = statuses(result)
    assert result["verdict"] == "warn"
    # gradients are zero, so a gradient-free attack beats every gradient attack
    assert st["white-box >= gradient-free"] == "warn", result["checks"]


def test_transfer_check_uses_the_source(digits):
    model, x, y = digits
    masked = Quantized(model).eval()
    # The unquantized model is a near-perfect surrogate: its transferred examples beat white-box attacks
    # on the quantized copy, which the transfer check must flag.
    result = audit_model(masked, x, y, dataset="digits", eps=0.1, large_eps=0.6, queries=100, source_model=model)
    assert statuses(result)["white-box >= transfer"] == "warn", result["checks"]


# -- the checks on crafted numbers -------------------------------------------------------------------


def crafted(eps=0.3, large=0.6, *, fgsm, pgd, square, many=None, apgd=None, curve=None, queries=100):
    """Rows as audit_model builds them: one per attack and eps, only the fields the checks read."""
    sweep = sorted({eps / 4, eps / 2, eps, large})
    curve = curve or {v: (pgd if v == eps else 0.0) for v in sweep}
    rows = [{"label": "PGD-20", "value": v, "robust_accuracy": curve[v]} for v in sweep]
    for label, acc in (("FGSM", fgsm), ("PGD-100x5", pgd if many is None else many),
                       ("APGD-CE-100", pgd if apgd is None else apgd), (f"Square-{queries}", square)):
        rows.append({"label": label, "value": eps, "robust_accuracy": acc})
    assert {s.label for s in audit_protocol(eps, large, queries).specs} <= {r["label"] for r in rows}
    return rows


def judge(rows, eps=0.3, large=0.6, transfer=None, clean=0.98, classes=10):
    checks = run_checks(rows, eps, large, 100, transfer, clean=clean, num_classes=classes)
    return {c.name: c.status for c in checks}, verdict(checks, rows, eps, clean, classes)


def test_all_near_zero_is_inconclusive_and_names_a_smaller_eps():
    # The quickstart case: a model trained at 0.1 attacked at 0.3 keeps nothing under any attack.
    rows = crafted(fgsm=0.005, pgd=0.0, square=0.0, curve={0.075: 0.91, 0.15: 0.495, 0.3: 0.0, 0.6: 0.0})
    st, (outcome, message, better) = judge(rows, transfer=0.01)
    assert st["iterative >= single-step"] == st["white-box >= gradient-free"] == "inconclusive"
    assert st["white-box >= transfer"] == st["converged"] == "inconclusive"
    assert st["monotone in eps"] == st["unbounded reaches 0"] == "pass"  # the curve itself is informative
    assert outcome == "inconclusive" and better == 0.15  # the largest swept eps that keeps > 10%
    assert "--eps 0.15" in message and "no sign" not in message


def test_a_curve_at_zero_from_the_smallest_eps_suggests_a_smaller_one():
    rows = crafted(fgsm=0.0, pgd=0.0, square=0.0, curve={0.075: 0.01, 0.15: 0.0, 0.3: 0.0, 0.6: 0.0})
    st, (outcome, message, better) = judge(rows)
    assert st["monotone in eps"] == "inconclusive"
    assert outcome == "inconclusive" and better == pytest.approx(0.0375)  # half the smallest swept eps
    assert "--eps 0.0375" in message


def test_informative_numbers_pass():
    rows = crafted(fgsm=0.90, pgd=0.84, square=0.86, curve={0.025: 0.97, 0.05: 0.95, 0.1: 0.84, 0.6: 0.0},
                   eps=0.1)
    st, (outcome, message, better) = judge(rows, eps=0.1, transfer=0.93)
    assert set(st.values()) == {"pass"}, st
    assert (outcome, better) == ("pass", None) and "no sign" in message


def test_masking_like_numbers_warn():
    # Gradient attacks stuck high while a gradient-free one gets through; accuracy rising with eps.
    rows = crafted(fgsm=0.70, pgd=0.75, square=0.20, many=0.60, apgd=0.40,
                   curve={0.075: 0.6, 0.15: 0.7, 0.3: 0.75, 0.6: 0.5})
    st, (outcome, _, _) = judge(rows)
    assert all(s == "warn" for name, s in st.items() if name != "white-box >= transfer"), st
    assert outcome == "warn"


def test_a_warn_beats_an_inconclusive_check():
    rows = crafted(fgsm=0.01, pgd=0.0, square=0.0, curve={0.075: 0.5, 0.15: 0.2, 0.3: 0.0, 0.6: 0.3})
    st, (outcome, _, _) = judge(rows)
    assert st["iterative >= single-step"] == "inconclusive" and st["unbounded reaches 0"] == "warn"
    assert outcome == "warn"


def test_near_floor_noise_is_not_a_warning():
    # PGD 4% vs FGSM 1% is "PGD weaker than FGSM" by 3 points, but among numbers this low it is noise.
    rows = crafted(fgsm=0.01, pgd=FLOOR - 0.01, square=0.0)
    assert judge(rows)[0]["iterative >= single-step"] == "inconclusive"


def test_clean_accuracy_near_chance_makes_every_check_inconclusive():
    rows = crafted(fgsm=0.12, pgd=0.10, square=0.11, curve={0.075: 0.15, 0.15: 0.12, 0.3: 0.10, 0.6: 0.0})
    st, (outcome, message, better) = judge(rows, clean=0.15, transfer=0.12)
    assert set(st.values()) == {"inconclusive"}, st  # even "reaches 0": there was little to start from
    assert outcome == "inconclusive" and better is None
    assert "clean accuracy 15.0%" in message and "no sign" not in message


# -- the default eps comes from the checkpoint ------------------------------------------------------


def config(adv=None, eval_eps=0.3):
    return {"config": {"adv_train": {"attack": "none", "eps": 0.3, "ratio": 1.0, **(adv or {})},
                       "eval": {"eps": eval_eps}}}


def test_eps_from_the_adversarial_training_eps():
    eps, source = choose_audit_eps(config({"attack": "pgd", "eps": 0.1}, eval_eps=0.2), "mnist")
    assert eps == 0.1 and "adv_train.eps" in source


def test_eps_from_the_upper_end_of_a_training_range():
    eps, source = choose_audit_eps(config({"attack": "pgd", "eps": [0.1, 0.5]}), "mnist")
    assert eps == 0.5 and "upper end" in source and "[0.1, 0.5]" in source


def test_eps_from_the_eval_eps_without_adversarial_training():
    for adv in (None, {"attack": "pgd", "eps": 0.1, "ratio": 0.0}):  # off, or on with no adversarial share
        eps, source = choose_audit_eps(config(adv, eval_eps=8 / 255), "cifar10")
        assert eps == 8 / 255 and "eval.eps" in source


def test_eps_from_the_dataset_default():
    # eval.eps at the schema's 0.3 is indistinguishable from unset: on CIFAR-10 it is not a choice.
    assert choose_audit_eps(config(), "cifar10")[0] == 8 / 255
    eps, source = choose_audit_eps(config(), "mnist")
    assert eps == 0.3 and "mnist default" in source
    assert choose_audit_eps({"dataset": "digits"}, "digits") == (0.3, "the digits default: the checkpoint "
                                                                       "stores no config")
    # A damaged config is not trusted: a string, a bool, a NaN, an out-of-range eps.
    for bad in ("0.1", True, float("nan"), 2.0, [0.5, "x"]):
        assert choose_audit_eps(config({"attack": "pgd", "eps": bad}), "cifar10")[0] == 8 / 255


def test_an_explicit_eps_wins():
    assert choose_audit_eps(config({"attack": "pgd", "eps": 0.1}), "mnist", 0.25) == (0.25, "--eps")


# -- the quickstart case, through the real command ----------------------------------------------------


def test_quickstart_audit_defaults_to_its_training_eps_and_is_not_vacuous_at_0_3(quickstart_run):
    ckpt = quickstart_run.best
    assert choose_audit_eps(read_checkpoint(ckpt), "digits") == (0.1, "the checkpoint's adv_train.eps")
    runner = CliRunner()
    small = ["--n", "40", "--queries", "50", "--device", "cpu"]
    default = runner.invoke(app, ["audit", str(ckpt), *small, "--json"])
    assert default.exit_code == 0, default.output
    report = json.loads(default.stdout)
    assert (report["eps"], report["eps_source"]) == (0.1, "the checkpoint's adv_train.eps")
    assert report["verdict"] == "pass", report["checks"]  # at its own eps the model keeps ~80%: informative

    forced = runner.invoke(app, ["audit", str(ckpt), *small, "--eps", "0.3"], env={"COLUMNS": "300"})
    assert forced.exit_code == 0, forced.output
    assert "audit eps 0.3 (from --eps)" in forced.stderr
    assert "inconclusive" in forced.stdout and "no sign" not in forced.stdout
    better = re.search(r"rerun with --eps ([0-9.]+)", forced.stdout)
    assert better is not None and float(better.group(1)) < 0.3, forced.stdout
