"""SPSA (gradient-free) and multi-targeted PGD: contract and semantics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import ATTACKS, PGD
from attacks.multitarget import MultiTargeted
from attacks.spsa import SPSA
from workbench import create_model


def predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


class ForwardOnly(nn.Module):
    """Fails if anything could take a gradient through the model."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        assert not torch.is_grad_enabled(), "the model ran with autograd on"
        return self.model(x)


def fast_spsa(m, eps, **kw):
    return SPSA(m, eps=eps, steps=8, samples=32, lr=0.03, **kw)


def fast_mt(m, eps, **kw):
    return MultiTargeted(m, eps=eps, steps=8, step_size=0.05, **kw)


@pytest.mark.parametrize("make", [fast_spsa, fast_mt, lambda m, e, **kw: fast_mt(m, e, loss="cw", norm="linf", **kw)],
                         ids=["spsa", "multitarget", "multitarget-cw"])
def test_contract(model_and_data, make):
    model, x, y = model_and_data
    x, y = x[:100], y[:100]
    eps = 0.2
    attack = make(model, eps)
    assert type(attack) is ATTACKS.get(attack.name)
    res = attack.run(x, y)
    assert res.x_adv.shape == x.shape
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert (res.norm <= eps + 1e-6).all()
    assert res.robust_accuracy < res.clean_accuracy - 0.2
    assert torch.equal(res.adv_correct, res.clean_correct & ~res.success)
    # same seed, same output; another seed differs
    assert torch.equal(make(model, eps)(x, y), res.x_adv)
    assert not torch.equal(make(model, eps, seed=1)(x, y), res.x_adv)


@pytest.mark.parametrize("make", [fast_spsa, fast_mt], ids=["spsa", "multitarget"])
def test_three_channels_per_sample_eps_batch_of_one_and_all_fooled(make):
    torch.manual_seed(0)
    model = create_model("tiny", 3, 10, 8).eval()
    x = torch.rand(10, 3, 8, 8)
    pred = predict(model, x)
    eps = torch.linspace(0.0, 0.3, 10)
    res = make(model, eps).run(x, pred)
    dist = (res.x_adv - x).flatten(1).abs().amax(1)
    assert (dist <= eps + 1e-6).all() and dist[0] == 0
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    assert make(model, 0.1)(x[:1], pred[:1]).shape == (1, 3, 8, 8)
    wrong = (pred + 1) % 10  # every sample misclassified already: returned unchanged
    res = make(model, 0.1).run(x, wrong)
    assert torch.equal(res.x_adv, x) and res.success.all()


def test_bad_parameters_are_rejected(model_and_data):
    model = model_and_data[0]
    for kwargs in (dict(steps=0), dict(samples=0), dict(delta=0), dict(lr=-1), dict(max_batch=1), dict(norm="l2")):
        with pytest.raises(ValueError):
            SPSA(model, eps=0.1, **kwargs)
    for kwargs in (dict(steps=0), dict(step_size=0), dict(n_target_classes=0), dict(targeted=True),
                   dict(loss=lambda m, x, y: m(x).sum(1))):
        with pytest.raises(ValueError):
            MultiTargeted(model, eps=0.1, **kwargs)


# -- SPSA -------------------------------------------------------------------------------------------

def test_spsa_uses_no_gradients_and_lowers_accuracy(model_and_data):
    model, x, y = model_and_data
    x, y = x[:100], y[:100]
    res = fast_spsa(ForwardOnly(model), 0.3).run(x, y)  # ForwardOnly asserts inside every forward
    assert res.robust_accuracy < res.clean_accuracy - 0.3
    assert (res.norm <= 0.3 + 1e-6).all()
    # a small budget (5 iterations of 16 directions; Adam moves a pixel ~lr per step) still lowers accuracy
    small = SPSA(model, eps=0.3, steps=5, samples=16, lr=0.05).run(x, y)
    assert small.robust_accuracy < small.clean_accuracy - 0.1


def test_spsa_chunking_only_changes_the_random_draws(model_and_data):
    model, x, y = model_and_data
    x, y = x[:50], y[:50]
    a = SPSA(model, eps=0.3, steps=5, samples=32, lr=0.03, max_batch=16).run(x, y)
    b = SPSA(model, eps=0.3, steps=5, samples=32, lr=0.03, max_batch=4096).run(x, y)
    assert abs(a.robust_accuracy - b.robust_accuracy) < 0.15


# -- multi-targeted ---------------------------------------------------------------------------------

def test_multitarget_at_least_as_strong_as_pgd(model_and_data):
    model, x, y = model_and_data
    for eps in (0.1, 0.15):
        pgd = PGD(model, eps=eps, steps=10, step_size=eps / 4).run(x, y).robust_accuracy
        mt = MultiTargeted(model, eps=eps, steps=10, step_size=eps / 4).run(x, y).robust_accuracy
        assert mt <= pgd + 0.01


def test_multitarget_counts_a_sample_broken_by_any_run(model_and_data):
    model, x, y = model_and_data
    first = MultiTargeted(model, eps=0.15, steps=8, step_size=0.04, n_target_classes=1).run(x, y)
    every = MultiTargeted(model, eps=0.15, steps=8, step_size=0.04).run(x, y)
    # Run 0 is identical in both (same seed); later runs only add broken samples.
    assert (every.success | ~first.success).all()
    assert every.success.sum() > first.success.sum()
    later = every.restart > 0
    assert (later & every.clean_correct).any()
    assert (every.success[later]).all() and (predict(model, every.x_adv)[later] != y[later]).all()
    assert ((every.restart >= 0) == every.success).all() and every.restart.max() < 9
