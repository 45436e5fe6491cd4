"""The evaluation engine: no wasted work, honest worst cases, intervals, transfer, saved outputs."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from workbench import load_data, load_model
from workbench.evaluation import AttackSpec, Evaluator, Protocol, evaluate
from workbench.evaluation.attack_eval import save_evaluation


class Counting(nn.Module):
    """Counts the images the wrapped model sees (forward passes, with or without grad)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.images = 0

    def forward(self, x):
        self.images += x.shape[0]
        return self.model(x)


@pytest.fixture(scope="module")
def setup(quickstart_run):
    model = load_model(quickstart_run.best)
    x, y = load_data("digits", "test")
    return model, x[:240], y[:240]


def test_rows_report_robust_accuracy_with_intervals_and_worst_case(setup):
    model, x, y = setup
    eps = [0.05, 0.1, 0.2]
    protocol = Protocol("custom", [AttackSpec("fgsm", {}, eps, "FGSM"), AttackSpec("pgd", {"steps": 10}, eps, "PGD")])
    report, outcomes = evaluate(model, x, y, [protocol], batch_size=100)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y)
    assert report["clean_accuracy"] == pytest.approx(clean.float().mean().item())
    rows = {(r["label"], r["eps"]): r for r in report["results"]}
    for label in ("FGSM", "PGD"):
        accs = [rows[(label, e)]["robust_accuracy"] for e in eps]
        assert accs == sorted(accs, reverse=True), "robust accuracy must not rise with eps"
        for e in eps:
            r = rows[(label, e)]
            lo, hi = r["ci95"]
            assert lo <= r["robust_accuracy"] <= hi and hi - lo < 0.2
            assert r["attacked"] <= int(clean.sum())  # misclassified samples are never attacked
    worst = {w["eps"]: w for w in report["worst_case"]}
    for e in eps:
        assert worst[e]["robust_accuracy"] <= min(rows[("FGSM", e)]["robust_accuracy"],
                                                  rows[("PGD", e)]["robust_accuracy"]) + 1e-9
    # the worst case is per sample: at least one eps where it is strictly below both attacks is allowed,
    # and it equals the fraction robust to both
    both = outcomes[0].fooled | outcomes[1].fooled
    assert worst[0.2]["robust_accuracy"] == pytest.approx(float((clean & ~both[2]).float().mean()))


def test_carry_sweep_does_less_work_than_separate_runs(setup):
    model, x, y = setup
    eps = [0.05, 0.1, 0.15, 0.2]
    counting = Counting(model)
    ev = Evaluator(counting, x, y, batch_size=120)
    start = counting.images
    sweep = ev.run_spec(AttackSpec("pgd", {"steps": 10}, eps, "PGD"), "t")
    sweep_cost = counting.images - start
    separate_cost, separate = 0, []
    for e in eps:
        start = counting.images
        out = ev.run_spec(AttackSpec("pgd", {"steps": 10}, [e], "PGD"), "t")
        separate_cost += counting.images - start
        separate.append(float((ev.clean_correct & ~out.fooled[0]).float().mean()))
    assert sweep_cost < separate_cost
    swept = [float((ev.clean_correct & ~sweep.fooled[i]).float().mean()) for i in range(len(eps))]
    for a, b in zip(swept, separate):
        assert a <= b + 0.03  # as strong as separate runs (different random starts)


def test_joint_sweep_matches_carry(setup):
    model, x, y = setup
    spec = AttackSpec("pgd", {"steps": 10}, [0.05, 0.1, 0.2], "PGD")
    carry = Evaluator(model, x, y, batch_size=100).run_spec(spec, "t")
    joint = Evaluator(model, x, y, batch_size=100, sweep="joint").run_spec(spec, "t")
    for i in range(3):
        a, b = carry.fooled[i].float().mean().item(), joint.fooled[i].float().mean().item()
        assert abs(a - b) <= 0.04
        assert torch.equal(joint.fooled[i] & ~joint.fooled[min(i + 1, 2)], torch.zeros_like(joint.fooled[i]))


def test_cascade_attacks_only_survivors(setup):
    model, x, y = setup
    protocol = Protocol("strong-ish", [AttackSpec("fgsm", {}, [0.15], "FGSM"),
                                       AttackSpec("pgd", {"steps": 10}, [0.15], "PGD")], cascade=True)
    report, outcomes = evaluate(model, x, y, [protocol], batch_size=100)
    first, second = outcomes
    survivors = int((first.attacked[0] & ~first.fooled[0]).sum())
    assert int(second.attacked[0].sum()) == survivors
    rows = report["results"]
    assert rows[1]["robust_accuracy"] <= rows[0]["robust_accuracy"]
    assert report["worst_case"][0]["robust_accuracy"] == pytest.approx(rows[1]["robust_accuracy"])


def test_transfer_crafts_on_the_source_and_scores_the_target(setup, tmp_path):
    model, x, y = setup
    torch.manual_seed(0)
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))  # an unrelated (untrained) source
    spec = AttackSpec("pgd", {"steps": 10}, [0.1], "PGD")
    white = Evaluator(model, x, y).run_spec(spec, "t")
    transfer = Evaluator(model, x, y, craft_model=other).run_spec(spec, "t")
    assert transfer.fooled[0].sum() < white.fooled[0].sum()  # a useless source transfers poorly
    assert transfer.settings["early_stop"] is False


def test_saved_outputs_json_csv_and_examples(setup, tmp_path):
    model, x, y = setup
    protocol = Protocol("custom", [AttackSpec("pgd", {"steps": 5}, [0.1, 0.2], "PGD")])
    report, outcomes = evaluate(model, x, y, [protocol], batch_size=100, save_examples=3)
    report["checkpoint"] = str(tmp_path / "checkpoints" / "best.pt")
    path = save_evaluation(report, outcomes)
    assert path.parent == tmp_path / "evals"
    saved = json.loads(path.read_text())
    assert saved["results"][0]["label"] == "PGD"
    with open(saved["csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows][:3] == ["clean", "PGD", "PGD"]
    payload = torch.load(saved["examples"], weights_only=True)
    examples = payload["examples"]
    kinds = [(ex["value"], ex["fooled"]) for ex in examples]
    assert {v for v, _ in kinds} == {0.1, 0.2} and max(kinds.count(k) for k in kinds) <= 3  # K of each kind per eps
    for ex in examples:
        assert ex["clean"].shape == x.shape[1:]
        assert float((ex["adversarial"].float() - ex["clean"].float()).abs().max()) <= ex["value"] + 1e-2


def test_targeted_mode_reports_target_hits(setup):
    model, x, y = setup
    protocol = Protocol("t", [AttackSpec("pgd", {"steps": 20}, [0.3], "PGD")])
    report, _ = evaluate(model, x, y, [protocol], targeted=True)
    row = report["results"][0]
    assert row["settings"]["targeted"] is True
    assert 0.2 < row["target_hit_rate"] <= 1.0


def test_adaptive_loss_is_used_by_the_attacks(setup):
    from workbench.evaluation import adaptive_protocol

    model, x, y = setup
    calls = []

    def defense_objective(m, xb, yb):  # stands in for a defense's attack_loss(): CE through the model
        calls.append(len(xb))
        return torch.nn.functional.cross_entropy(m(xb), yb, reduction="none")

    protocol = adaptive_protocol(defense_objective, [0.15], "linf")
    protocol.specs[0].params.update(steps=10, restarts=1)
    protocol.specs[1].params.update(steps=10)
    report, _ = evaluate(model, x, y, [protocol])
    assert calls, "the defense's objective must drive the attack"
    assert report["results"][0]["settings"]["loss"] == "defense_objective"
    assert report["worst_case"][0]["robust_accuracy"] < report["clean_accuracy"] - 0.1


def test_cw_first_success_reports_the_same_accuracy_but_no_norms(setup):
    """The PCL preset's C&W stops each image at its first success: same accuracy, no minimum-norm statistics."""
    model, x, y = setup
    x, y = x[:100], y[:100]
    settings = {"c": 1.0, "steps": 100, "lr": 0.01, "search_steps": 1}
    rows = {}
    for first in (False, True):
        spec = AttackSpec("cw", {**settings, "first_success": first}, None, "C&W", thresholds=[0.5, 1.0])
        report, _ = evaluate(model, x, y, [Protocol("p", [spec])], batch_size=100)
        rows[first] = report["results"]
    full, first = rows[False], rows[True]
    assert [r["robust_accuracy"] for r in first] == [full[0]["robust_accuracy"]]  # no rows at the thresholds
    assert len(full) == 3 and full[0]["mean_norm"] is not None
    assert first[0]["mean_norm"] is None and first[0]["settings"]["first_success"] is True
