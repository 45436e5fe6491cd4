"""Every registered attack keeps the same contract, whatever its algorithm.

In the ball and [0, 1]; same seed, same output; the model's train/eval flags and its
parameters' gradients untouched; the global RNG untouched; 1- and 3-channel inputs; a batch
of one; a batch the model already gets wrong. A new attack must add its small budget here.
"""

from __future__ import annotations

import pytest
import torch

from attacks import ATTACKS
from workbench import create_model

# Small budgets: these tests check the contract, not strength.
BUDGETS = {
    "fgsm": {"eps": 0.1},
    "bim": {"eps": 0.1, "steps": 3},
    "mim": {"eps": 0.1, "steps": 3},
    "pgd": {"eps": 0.1, "steps": 3, "restarts": 2},
    "apgd": {"eps": 0.1, "steps": 5},
    "apgd_ce": {"eps": 0.1, "steps": 5},
    "apgd_dlr": {"eps": 0.1, "steps": 5},
    "apgd_t": {"eps": 0.1, "steps": 5, "n_target_classes": 2},
    "fab": {"eps": 0.1, "steps": 5},
    "fab_t": {"eps": 0.1, "steps": 5, "n_target_classes": 2},
    "square": {"eps": 0.1, "queries": 30},
    "autoattack": {"eps": 0.1, "version": "fast"},
    "multitarget": {"eps": 0.1, "steps": 3, "n_target_classes": 2},
    "spsa": {"eps": 0.1, "steps": 2, "samples": 8},
    "cw": {"steps": 10, "search_steps": 2},
    "deepfool": {"steps": 5},
}


def test_every_attack_has_a_contract_budget():
    assert set(ATTACKS.names()) == set(BUDGETS), "every registered attack needs a budget here, and only those"


@pytest.fixture(scope="module")
def digits(model_and_data):
    model, x, y = model_and_data
    return model, x[:24], y[:24]


def in_ball(name, x_adv, x, params):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    cls = ATTACKS.get(name)
    if cls.bounded and "eps" in params:
        delta = (x_adv - x).flatten(1)
        size = delta.abs().amax(1) if params.get("norm", cls.norms[0]) == "linf" else delta.norm(dim=1)
        assert float(size.max()) <= params["eps"] + 1e-5


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_contract(digits, name):
    model, x, y = digits
    params = BUDGETS[name]
    model.train()  # the attack runs in eval mode and must hand the model back in train mode
    flags = [m.training for m in model.modules()]
    fired = []
    hooks = [p.register_hook(lambda g: fired.append(1)) for p in model.parameters()]
    first = next(model.parameters())
    first.grad = torch.ones_like(first)  # a caller's accumulated gradient must survive the attack
    rng = torch.random.get_rng_state()
    try:
        a = ATTACKS.get(name)(model, seed=3, **params)(x, y)
        b = ATTACKS.get(name)(model, seed=3, **params)(x, y)
        assert torch.equal(first.grad, torch.ones_like(first))
    finally:
        for h in hooks:
            h.remove()
        first.grad = None
        model.eval()
    assert not fired, "attacks must not compute parameter gradients"
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(rng, torch.random.get_rng_state()), "the global RNG must not be touched"
    model.train()
    ATTACKS.get(name)(model, seed=3, **params)(x[:2], y[:2])
    assert [m.training for m in model.modules()] == flags
    model.eval()
    in_ball(name, a, x, params)
    assert torch.equal(a, b), "same seed, same output"

    # batch of one; a batch the model already gets wrong (labels shifted)
    one = ATTACKS.get(name)(model, **params)(x[:1], y[:1])
    in_ball(name, one, x[:1], params)
    with torch.no_grad():
        wrong = (model(x).argmax(1) + 1) % 10
    res = ATTACKS.get(name)(model, **params).run(x, wrong)
    assert not res.clean_correct.any() and not res.adv_correct.any()
    in_ball(name, res.x_adv, x, params)


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_three_channels(name):
    torch.manual_seed(0)
    model = create_model("tiny", 3, 10, 8).eval()
    x = torch.rand(6, 3, 8, 8)
    y = torch.arange(6)
    params = BUDGETS[name]
    x_adv = ATTACKS.get(name)(model, **params)(x, y)
    in_ball(name, x_adv, x, params)
