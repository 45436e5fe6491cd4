"""C&W-L2 and DeepFool (minimum-norm attacks): contract, semantics, and cross-checks against torchattacks."""

from __future__ import annotations

import pytest
import torch

from attacks import ATTACKS
from attacks.cw import CW, other_max
from attacks.deepfool import DeepFool, residue_ratio, rho_adv
from workbench import create_model


def predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def l2(a, b):
    return (a - b).flatten(1).norm(dim=1)


FAST_CW = dict(steps=60, lr=0.05, c=1.0, search_steps=1)


@pytest.mark.parametrize("make", [
    lambda m: CW(m, **FAST_CW),
    lambda m: CW(m, steps=40, lr=0.05, c=0.1, search_steps=3),
    lambda m: DeepFool(m),
    lambda m: DeepFool(m, num_classes=3, max_ratio=0.3),
], ids=["cw", "cw-search", "deepfool", "deepfool-top3-ratio"])
def test_contract(model_and_data, make):
    model, x, y = model_and_data
    x, y = x[:100], y[:100]
    attack = make(model)
    assert type(attack) is ATTACKS.get(attack.name) and not attack.bounded
    res = attack.run(x, y)
    assert res.x_adv.shape == x.shape
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert res.robust_accuracy < res.clean_accuracy - 0.3
    assert torch.equal(res.adv_correct, res.clean_correct & ~res.success)
    # failures come back as the clean input (norm 0); successes really are misclassified
    assert torch.all(res.norm[~res.success] == 0)
    assert torch.equal(predict(model, res.x_adv) != y, res.success)
    assert torch.allclose(res.norm, l2(res.x_adv, x))
    # deterministic
    assert torch.equal(make(model)(x, y), res.x_adv)


# A random-init model's logits barely depend on the input: C&W needs a large c to move it.
@pytest.mark.parametrize("make", [lambda m: CW(m, **{**FAST_CW, "c": 100.0}), lambda m: DeepFool(m)],
                         ids=["cw", "deepfool"])
def test_three_channels_batch_of_one_and_all_fooled(make):
    torch.manual_seed(0)
    model = create_model("tiny", 3, 10, 8).eval()
    x = torch.rand(12, 3, 8, 8)
    pred = predict(model, x)
    res = make(model).run(x, pred)  # labels = clean predictions: everything starts correct
    assert res.clean_accuracy == 1.0 and res.success.any()
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    one = make(model).run(x[:1], pred[:1])
    assert one.x_adv.shape == (1, 3, 8, 8)
    wrong = (pred + 1) % 10  # every sample misclassified already: returned unchanged
    res = make(model).run(x, wrong)
    assert torch.equal(res.x_adv, x) and res.success.all() and torch.all(res.norm == 0)


def test_bad_parameters_are_rejected(model_and_data):
    model = model_and_data[0]
    for kwargs in (dict(c=0), dict(kappa=-1), dict(steps=0), dict(search_steps=0), dict(lr=float("nan")),
                   dict(target_mode="third"), dict(target_mode="second", targeted=True), dict(loss="ce"),
                   dict(norm="linf")):
        with pytest.raises(ValueError):
            CW(model, **kwargs)
    for kwargs in (dict(steps=0), dict(overshoot=-0.1), dict(num_classes=1), dict(max_ratio=-0.1),
                   dict(eps=0.3), dict(targeted=True)):
        with pytest.raises(ValueError):
            DeepFool(model, **kwargs)


# -- C&W --------------------------------------------------------------------------------------------

def test_cw_other_logit_uses_minus_inf_masking():
    logits = torch.tensor([[-5.0, -1.0, -3.0]])
    value, cls = other_max(logits, torch.tensor([1]))
    assert value.item() == -3.0 and cls.item() == 2  # masking the true logit with 0 would pick class 1


def test_cw_as_good_as_torchattacks(model_and_data):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = model_and_data
    # torchattacks: fixed c, no binary search; ours with the same c and budget (single search step).
    theirs = torchattacks.CW(model, c=1.0, kappa=0, steps=100, lr=0.01)(x, y)
    t_succ = predict(model, theirs) != y
    ours = CW(model, c=1.0, steps=100, lr=0.01, search_steps=1).run(x, y)
    assert ours.success.float().mean() >= t_succ.float().mean()
    both = ours.success & t_succ
    assert both.sum() > 50
    assert ours.norm[both].mean() <= 1.1 * l2(theirs, x)[both].mean()


def test_cw_binary_search_shrinks_perturbations(model_and_data):
    model, x, y = model_and_data
    x, y = x[:100], y[:100]
    fixed = CW(model, c=10.0, steps=60, lr=0.05, search_steps=1).run(x, y)
    search = CW(model, c=10.0, steps=60, lr=0.05, search_steps=4).run(x, y)
    # The first search step is the fixed-c run; later steps only keep smaller successes.
    assert (search.success | ~fixed.success).all()
    both = search.success & fixed.success
    assert (search.norm[both] <= fixed.norm[both] + 1e-6).all()
    assert search.norm[both].mean() < 0.9 * fixed.norm[both].mean()


def test_cw_kappa_gives_larger_margins(model_and_data):
    model, x, y = model_and_data
    kappa = 2.0
    results = [CW(model, c=10.0, steps=60, lr=0.05, search_steps=1, kappa=k).run(x, y) for k in (0.0, kappa)]
    margins = []
    for res in results:
        with torch.no_grad():
            logits = model(res.x_adv)
        sel = res.success & res.clean_correct
        margins.append(other_max(logits, y).values[sel] - logits.gather(1, y[:, None]).squeeze(1)[sel])
    assert (margins[1] > kappa - 1e-4).all()
    assert margins[1].mean() > margins[0].mean() + 1.0


def test_cw_targeted_and_second_class_targets(model_and_data):
    model, x, y = model_and_data
    x, y = x[:100], y[:100]
    target = (y + 1) % 10
    res = CW(model, c=10.0, steps=100, lr=0.05, search_steps=2, targeted=True).run(x, y, target)
    assert res.success.float().mean() > 0.8
    assert torch.equal(res.success, predict(model, res.x_adv) == target)

    with torch.no_grad():
        logits = model(x)
    second = other_max(logits, y).indices
    res = CW(model, c=10.0, steps=100, lr=0.05, search_steps=2, target_mode="second").run(x, y)
    hit = res.success & res.clean_correct
    assert hit.float().mean() > 0.8
    assert torch.equal(predict(model, res.x_adv)[hit], second[hit])


def test_cw_eps_caps_the_norm(model_and_data):
    model, x, y = model_and_data
    free = CW(model, **FAST_CW).run(x, y)
    cap = float(free.norm[free.success].median())
    capped = CW(model, eps=cap, **FAST_CW).run(x, y)
    assert (capped.norm <= cap + 1e-6).all()
    # the same optimisation: successes within the cap are kept, the others become failures
    assert torch.equal(capped.success, free.success & (free.norm <= cap + 1e-6))


def _sample_steps(attack, x, y):
    """Run the attack; return its result and the number of (sample, Adam step) pairs it computed."""
    seen = []
    attack.on_step = lambda p: seen.append(p.active)
    return attack.run(x, y), sum(seen)


# Costs measured on the quickstart model: fixed c 13.7k vs 18.9k (sample, step) pairs, search 10.1k vs 20.2k,
# capped 14.7k vs 16.5k. The PCL papers' setting (1000 steps, fooled within ~100) saves far more.
@pytest.mark.parametrize("settings, most", [
    (dict(c=1.0, steps=100, lr=0.01, search_steps=1), 0.9),
    (dict(c=0.1, steps=40, lr=0.05, search_steps=3), 0.6),
    (dict(c=10.0, steps=100, lr=0.01, search_steps=1, eps=1.0), 0.95),
], ids=["fixed-c", "search", "capped"])
def test_cw_first_success_fools_the_same_samples_for_less(model_and_data, settings, most):
    model, x, y = model_and_data
    full, full_cost = _sample_steps(CW(model, **settings), x, y)
    first, first_cost = _sample_steps(CW(model, first_success=True, **settings), x, y)
    assert 0 < int(full.success.sum()) < len(y)
    assert torch.equal(first.success, full.success)
    assert torch.equal(predict(model, first.x_adv) != y, first.success)
    # the first success is no smaller than the smallest one
    assert (first.norm[first.success] >= full.norm[full.success] - 1e-5).all()
    if "eps" in settings:
        assert (first.norm <= settings["eps"] + 1e-6).all()
    assert first_cost < most * full_cost


# -- DeepFool ---------------------------------------------------------------------------------------

def test_deepfool_as_good_as_torchattacks(model_and_data):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = model_and_data
    x, y = x[:60], y[:60]  # torchattacks' DeepFool loops over samples: slow
    theirs = torchattacks.DeepFool(model, steps=50, overshoot=0.02)(x, y)
    t_succ = predict(model, theirs) != y
    ours = DeepFool(model, steps=50, overshoot=0.02).run(x, y)
    assert ours.success.float().mean() >= t_succ.float().mean()
    both = ours.success & t_succ
    assert both.sum() > 20
    assert ours.norm[both].mean() <= 1.1 * l2(theirs, x)[both].mean()


def test_deepfool_max_ratio(model_and_data):
    model, x, y = model_and_data
    x, y = x[:120], y[:120]
    accs = []
    for d in (0.05, 0.15, 0.4, None):
        attack = DeepFool(model, max_ratio=d)
        res = attack.run(x, y)
        accs.append(res.robust_accuracy)
        assert torch.allclose(attack.last_ratio, residue_ratio(res.x_adv, x))
        if d is not None:
            # stopped once the ratio reached d, so a success overshoots d by at most its last step
            assert (attack.last_ratio <= d + attack.last_step_ratio + 1e-6).all()
            strict = DeepFool(model, max_ratio=d, strict_ratio=True)
            s = strict.run(x, y)
            assert (strict.last_ratio <= d + 1e-6).all()
            assert s.robust_accuracy >= res.robust_accuracy
    assert accs == sorted(accs, reverse=True) and accs[0] > accs[-1] + 0.2
    # rho_adv: mean ratio over clean-correct fooled samples
    sel = res.clean_correct & res.success
    assert rho_adv(res, x) == pytest.approx(float((res.norm[sel] / x[sel].flatten(1).norm(dim=1)).mean()))


def test_deepfool_per_sample_max_ratio_matches_scalar_runs(model_and_data):
    model, x, y = model_and_data
    x, y = x[:60], y[:60]
    d = torch.tensor([0.1, 0.3]).repeat_interleave(len(y))
    both = DeepFool(model, max_ratio=d).run(torch.cat([x, x]), torch.cat([y, y]))
    for i, value in enumerate((0.1, 0.3)):
        single = DeepFool(model, max_ratio=value).run(x, y)
        rows = slice(i * len(y), (i + 1) * len(y))
        part = both.success[rows]
        # Rows are independent. Only a point DeepFool left on the decision boundary (margin within float
        # rounding) may flip with the batch's rounding.
        flipped = (part != single.success).nonzero().flatten()
        assert len(flipped) <= 3
        for r in flipped.tolist():
            winner = both.x_adv[rows][r] if part[r] else single.x_adv[r]
            with torch.no_grad():
                logits = model(winner[None])[0]
            assert (logits.max() - logits[y[r]]).abs() < 1e-4
        same = part & single.success
        assert torch.allclose(both.norm[i * len(y):(i + 1) * len(y)][same], single.norm[same], atol=1e-5)
    assert both.success[:len(y)].sum() < both.success[len(y):].sum()
