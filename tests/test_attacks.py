"""Attacks keep their contract: inside the eps-ball and [0, 1], lower accuracy, leave the model alone."""

from __future__ import annotations

import pytest
import torch

from attacks import ATTACK_LOSSES, ATTACKS, BIM, FGSM, MIM, PGD


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("make", [
    lambda m, e: FGSM(m, eps=e),
    lambda m, e: PGD(m, eps=e, steps=10),
    lambda m, e: PGD(m, eps=e, steps=10, random_start=False),
    lambda m, e: PGD(m, eps=e, steps=10, loss="cw"),
    lambda m, e: PGD(m, eps=e, steps=10, loss="dlr", restarts=2),
    lambda m, e: BIM(m, eps=e),
    lambda m, e: MIM(m, eps=e),
    lambda m, e: MIM(m, eps=e, loss="cw", decay=0.5),
], ids=["fgsm", "pgd", "pgd-no-start", "pgd-cw", "pgd-dlr-restarts", "bim", "mim", "mim-cw"])
def test_attack_stays_in_ball_and_lowers_accuracy(model_and_data, make):
    model, x, y = model_and_data
    eps = 0.15
    attack = make(model, eps)
    x_adv = attack(x, y)
    assert x_adv.shape == x.shape
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert accuracy(model, x_adv, y) < accuracy(model, x, y) - 0.05
    res = attack.run(x, y)
    assert res.clean_accuracy == pytest.approx(accuracy(model, x, y))
    assert res.robust_accuracy <= res.clean_accuracy
    # robust = correct on clean AND on adversarial; success = misclassified after the attack
    assert torch.equal(res.adv_correct, res.clean_correct & ~res.success)
    assert (res.norm <= eps + 1e-6).all()


def test_pgd_is_stronger_than_fgsm(model_and_data):
    model, x, y = model_and_data
    for eps in (0.1, 0.2):
        fgsm = FGSM(model, eps=eps).run(x, y).robust_accuracy
        pgd = PGD(model, eps=eps, steps=20).run(x, y).robust_accuracy
        assert pgd <= fgsm + 1e-9


def test_restarts_keep_the_worst_case(model_and_data):
    model, x, y = model_and_data
    one = PGD(model, eps=0.12, steps=5, seed=3).run(x, y)
    many = PGD(model, eps=0.12, steps=5, restarts=4, seed=3).run(x, y)
    assert many.robust_accuracy <= one.robust_accuracy
    assert ((many.restart >= 0) == many.success).all()
    assert many.restart.max() < 4


def test_same_seed_same_result_different_seed_differs(model_and_data):
    model, x, y = model_and_data
    a = PGD(model, eps=0.1, steps=2, seed=1)(x, y)
    b = PGD(model, eps=0.1, steps=2, seed=1)(x, y)
    c = PGD(model, eps=0.1, steps=2, seed=2)(x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_targeted_pgd_reaches_targets(model_and_data):
    model, x, y = model_and_data
    target = (y + 1) % 10
    attack = PGD(model, eps=0.5, steps=30, targeted=True)
    res = attack.run(x, y, target)
    assert res.success.float().mean() > 0.8
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred == target)
    with pytest.raises(ValueError):
        attack(x, y)  # a targeted attack needs targets


def test_per_sample_eps(model_and_data):
    model, x, y = model_and_data
    eps = torch.linspace(0.0, 0.3, len(y))
    x_adv = PGD(model, eps=eps, steps=5)(x, y)
    dist = (x_adv - x).flatten(1).abs().amax(1)
    assert (dist <= eps + 1e-6).all()
    assert dist[0] == 0


def test_bad_inputs_are_rejected(model_and_data):
    model, x, y = model_and_data
    with pytest.raises(ValueError):
        PGD(model, eps=-0.1)
    with pytest.raises(ValueError):
        PGD(model, eps=float("nan"))
    with pytest.raises(ValueError):
        FGSM(model, eps=0.1)(x * 2 - 0.5, y)  # not pixels in [0, 1]


def test_cw_loss_handles_negative_logits():
    logits = torch.tensor([[-5.0, -1.0, -3.0]])
    y = torch.tensor([1])
    # margin = best other (-3) - true (-1) = -2; a masked-with-zero implementation would give +1
    assert ATTACK_LOSSES.get("cw")(logits, y).item() == pytest.approx(-2.0)


def test_as_strong_as_torchattacks_pgd(model_and_data):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = model_and_data
    ours, theirs = [], []
    for seed in range(3):
        ours.append(PGD(model, eps=0.15, steps=20, step_size=0.02, seed=seed).run(x, y).robust_accuracy)
        with torch.random.fork_rng():  # torchattacks draws its random start from the global RNG
            torch.manual_seed(seed)  # the same uniform draws as our generator with this seed
            theirs_adv = torchattacks.PGD(model, eps=0.15, alpha=0.02, steps=20, random_start=True)(x, y)
        theirs.append(accuracy(model, theirs_adv, y))
    # Same algorithm and the same random starts: never more than one point above theirs.
    assert sum(ours) / 3 <= sum(theirs) / 3 + 0.01, (ours, theirs)


def test_per_sample_step_size_with_restarts(model_and_data):
    model, x, y = model_and_data
    eps = torch.linspace(0.05, 0.3, len(y))
    attack = PGD(model, eps=eps, steps=5, step_size=eps / 4, restarts=3)
    res = attack.run(x, y)
    assert ((x_adv_dist := (res.x_adv - x).flatten(1).abs().amax(1)) <= eps + 1e-6).all()
    assert x_adv_dist.max() > 0.2  # large-eps samples really moved
    assert res.restart.max() < 3


def test_iterative_attacks_beat_single_step(model_and_data):
    model, x, y = model_and_data
    fgsm = FGSM(model, eps=0.15).run(x, y).robust_accuracy
    for attack in (BIM(model, eps=0.15), MIM(model, eps=0.15)):
        assert attack.run(x, y).robust_accuracy <= fgsm + 0.02, attack


def test_bim_is_deterministic_pgd_from_the_clean_input(model_and_data):
    model, x, y = model_and_data
    bim = BIM(model, eps=0.1, steps=5)(x, y)
    assert torch.equal(bim, PGD(model, eps=0.1, steps=5, step_size=0.01, random_start=False)(x, y))
    assert ATTACKS.get("bim") is BIM and ATTACKS.get("mim") is MIM


def test_bim_and_mim_as_strong_as_torchattacks(model_and_data):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = model_and_data
    for ours, theirs in (
        (BIM(model, eps=0.15, steps=10, step_size=0.015), torchattacks.BIM(model, eps=0.15, alpha=0.015, steps=10)),
        (MIM(model, eps=0.15, steps=10, step_size=0.015), torchattacks.MIFGSM(model, eps=0.15, alpha=0.015, steps=10,
                                                                             decay=1.0)),
    ):
        assert ours.run(x, y).robust_accuracy <= accuracy(model, theirs(x, y), y) + 0.01, ours


def test_gpu_retirement_keeps_every_active_row_and_halves_to_repeatable_sizes():
    from attacks.base import Retirement

    r = Retirement(torch.device("cpu"))
    r.cuda = True  # the GPU policy's bookkeeping is plain tensor logic; check it here
    frozen = torch.zeros(500, dtype=torch.bool)
    frozen[::3] = True
    frozen[1::3] = True  # 334 frozen, 166 active
    keep = r.keep(frozen.clone())
    assert keep[~frozen].all(), "an active row was dropped"
    assert int(keep.sum()) == 250  # 500 -> 250: 166 active + 84 frozen padding
    assert r.keep(torch.ones(8, dtype=torch.bool)).sum() == 0  # nothing left to attack
