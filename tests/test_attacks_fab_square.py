"""FAB / FAB-T (minimum-norm, used eps-bounded) and Square (black-box) keep the attack contract and match references."""

from __future__ import annotations

import pytest
import torch

from attacks.fab import FAB, FABT, project_hyperplane_box
from attacks.registry import ATTACKS
from attacks.square import Square
from workbench import WorkbenchError, create_model

TA_NORM = {"linf": "Linf", "l2": "L2"}


@pytest.fixture(scope="module")
def model_and_data(model_and_data):
    model, x, y = model_and_data  # the shared fixture, cut to 100 samples (FAB and Square are costly)
    return model, x[:100], y[:100]


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def norms(delta, norm):
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


CASES = [
    pytest.param(lambda m, e, n, **k: FAB(m, eps=e, norm=n, steps=20, **k), "linf", 0.15, id="fab-linf"),
    pytest.param(lambda m, e, n, **k: FAB(m, eps=e, norm=n, steps=20, **k), "l2", 1.0, id="fab-l2"),
    pytest.param(lambda m, e, n, **k: FABT(m, eps=e, norm=n, steps=20, n_target_classes=3, **k), "linf", 0.15,
                 id="fab_t-linf"),
    pytest.param(lambda m, e, n, **k: Square(m, eps=e, norm=n, queries=100, **k), "linf", 0.15, id="square-linf"),
    pytest.param(lambda m, e, n, **k: Square(m, eps=e, norm=n, queries=150, **k), "l2", 1.0, id="square-l2"),
]


@pytest.mark.parametrize("make,norm,eps", CASES)
def test_in_ball_lowers_accuracy_and_deterministic(model_and_data, make, norm, eps):
    model, x, y = model_and_data
    res = make(model, eps, norm, seed=5).run(x, y)
    assert res.x_adv.shape == x.shape
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert (norms(res.x_adv - x, norm) <= eps + 1e-5).all()
    assert res.robust_accuracy < res.clean_accuracy - 0.05
    assert res.clean_accuracy == pytest.approx(accuracy(model, x, y))
    assert torch.equal(res.adv_correct, res.clean_correct & ~res.success)
    assert ((res.restart >= 0) == res.success).all()
    # failures return the clean input (FAB) or a point in the ball (Square); successes are verified
    with torch.no_grad():
        assert torch.equal(res.success, model(res.x_adv).argmax(1) != y)
    again = make(model, eps, norm, seed=5)(x, y)
    assert torch.equal(again, res.x_adv)


@pytest.mark.parametrize("make,norm,eps", CASES)
def test_three_channels_batch_of_one_and_all_misclassified(make, norm, eps):
    torch.manual_seed(0)
    model = create_model("tiny", 3, 10, 8).eval()
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pred = model(x).argmax(1)
    attack = make(model, eps, norm)
    out = attack(x[:1], pred[:1])
    assert out.shape == (1, 3, 8, 8) and (norms(out - x[:1], norm) <= eps + 1e-5).all()
    wrong = (pred + 1) % 10  # every sample already misclassified: nothing to do
    res = attack.run(x, wrong)
    assert torch.equal(res.x_adv, x) and res.success.all() and (res.restart == 0).all()
    if isinstance(attack, Square):
        assert (attack.last_queries == 0).all()


def test_registry_names():
    assert ATTACKS.get("fab") is FAB and ATTACKS.get("fab_t") is FABT and ATTACKS.get("square") is Square
    assert FABT(torch.nn.Linear(2, 2)).targeted_search and not FAB(torch.nn.Linear(2, 2)).targeted_search


def test_bad_parameters_are_rejected():
    m = torch.nn.Linear(2, 2)
    for kwargs in ({"steps": 0}, {"alpha_max": 1.5}, {"beta": 0.0}, {"eta": -1.0}, {"norm": "l1"}):
        with pytest.raises(ValueError):
            FAB(m, **kwargs)
    for kwargs in ({"queries": 0}, {"p_init": 0.0}, {"restarts": 0}, {"loss": "nope"}):
        with pytest.raises((ValueError, WorkbenchError)):
            Square(m, **kwargs)


# -- FAB --------------------------------------------------------------------------------------------------------
def _bisect(t, w, c, norm):
    """Reference for the box-constrained projection: bisection on the KKT parameter (float64, one row)."""
    room = torch.where(w > 0, 1 - t, t)
    rate = torch.ones_like(w) if norm == "linf" else w.abs()

    def gain(v):
        return (w.abs() * torch.minimum(v * rate, room)).sum()

    if gain(torch.tensor(1e9, dtype=w.dtype)) < c:
        return None
    lo, hi = 0.0, 1e9
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gain(torch.tensor(mid, dtype=w.dtype)) < c else (lo, mid)
    return w.sign() * torch.minimum(hi * rate, room)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_box_hyperplane_projection_is_minimal(norm):
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(64, 20, generator=gen, dtype=torch.float64)
    w = torch.randn(64, 20, generator=gen, dtype=torch.float64)
    w[:, :3] = 0  # coordinates that cannot move w.z stay put
    b = (w * t).sum(1) + torch.randn(64, generator=gen, dtype=torch.float64)
    d = project_hyperplane_box(t, w, b, norm)
    assert ((t + d) >= -1e-12).all() and ((t + d) <= 1 + 1e-12).all() and (d[:, :3] == 0).all()
    n_feasible = 0
    for i in range(64):
        c = b[i] - (w[i] * t[i]).sum()
        ref = _bisect(t[i], w[i] * c.sign(), c.abs(), norm)
        if ref is None:  # the hyperplane misses the box: the closest corner, on the near side of it
            assert ((w[i] * (t[i] + d[i])).sum() - b[i]) * c <= 0
            continue
        n_feasible += 1
        assert (w[i] * (t[i] + d[i])).sum() == pytest.approx(b[i].item(), abs=1e-9)
        assert norms(d[i:i + 1], norm).item() == pytest.approx(norms(ref[None], norm).item(), abs=1e-7)
    assert n_feasible > 20


def test_fab_targeted_with_user_targets(model_and_data):
    model, x, y = model_and_data
    target = (y + 1) % 10
    res = FAB(model, eps=0.5, steps=30, targeted=True).run(x, y, target)
    with torch.no_grad():
        assert torch.equal(res.success, model(res.x_adv).argmax(1) == target)
    assert res.success.float().mean() > 0.8


def test_fab_per_sample_eps_and_restarts(model_and_data):
    model, x, y = model_and_data
    eps = torch.linspace(0.0, 0.3, len(y))
    res = FAB(model, eps=eps, steps=10, restarts=2).run(x, y)
    dist = norms(res.x_adv - x, "linf")
    assert (dist <= eps + 1e-6).all() and dist[0] == 0
    assert res.restart.max() <= 1 and res.success[-20:].float().mean() > 0.5


@pytest.mark.parametrize("targeted,norm,eps", [(False, "linf", 0.3), (False, "l2", 2.0), (True, "linf", 0.3)],
                         ids=["fab-linf", "fab-l2", "fab_t-linf"])
def test_fab_minimal_norm_vs_torchattacks(model_and_data, targeted, norm, eps):
    """Minimum-norm property: as many successes as torchattacks' FAB, with perturbations no more than 10% larger."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = model_and_data
    x, y = x[:48], y[:48]
    n_t = 3
    ours = FAB(model, eps=eps, norm=norm, steps=20, targeted_search=targeted, n_target_classes=n_t,
               early_stop=False).run(x, y)
    with torch.random.fork_rng():  # torchattacks reseeds the global RNG
        theirs_adv = torchattacks.FAB(model, norm=TA_NORM[norm], eps=eps, steps=20, n_restarts=1,
                                      multi_targeted=targeted, n_classes=n_t + 1)(x, y)
    with torch.no_grad():
        theirs_ok = (model(theirs_adv).argmax(1) != y) & ours.clean_correct
    ours_ok = ours.success & ours.clean_correct
    assert ours_ok.float().mean() >= theirs_ok.float().mean() - 0.02
    ours_norm = ours.norm[ours_ok].mean()
    assert ours_norm <= 1.1 * norms(theirs_adv - x, norm)[theirs_ok].mean()
    assert ours_norm < 0.8 * eps  # genuinely minimal, not just inside the ball


@pytest.fixture(autouse=True)
def _no_parameter_grads_left(request):
    """torchattacks' FAB backpropagates into the parameters of the session's shared model; clear them so
    that a later test (the attack contract checks `p.grad is None`) does not see them in another order."""
    yield
    if "model_and_data" in request.fixturenames:
        request.getfixturevalue("model_and_data")[0].zero_grad(set_to_none=True)


# -- Square -------------------------------------------------------------------------------------------------------
class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        return t.clone()

    @staticmethod
    def backward(ctx, grad):
        raise AssertionError("square must not backpropagate")


class _GradFree(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        assert not torch.is_grad_enabled(), "square must query the model under no_grad"
        return _NoBackward.apply(self.model(x))


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 1.0)])
def test_square_is_gradient_free(model_and_data, norm, eps):
    model, x, y = model_and_data
    wrapped = _GradFree(model)
    assert all(p.requires_grad for p in model.parameters())
    before = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    attack = Square(wrapped, eps=eps, norm=norm, queries=30)
    res = attack.run(x[:32], y[:32])
    with torch.no_grad():  # also works when the caller already disabled autograd
        out = attack(x[:32], y[:32])
    assert not out.requires_grad and not res.x_adv.requires_grad
    after = [p.grad for p in model.parameters()]
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(before, after))


def test_square_query_accounting_and_schedule(model_and_data):
    model, x, y = model_and_data
    attack = Square(model, eps=0.12, queries=100, restarts=2)
    res = attack.run(x, y)
    q = attack.last_queries
    assert q.shape == y.shape and q.dtype == torch.long
    assert (q[~res.clean_correct] == 0).all()
    robust = res.adv_correct
    assert (q[robust] == 200).all()  # unbroken samples used the whole budget of both restarts
    first = res.success & res.clean_correct & (res.restart == 0)
    assert (q[first] >= 1).all() and (q[first] <= 100).all() and q[first].float().mean() < 100
    assert attack.settings()["queries"] == 100 and attack.settings()["loss"] == "margin"
    sched = Square(model, queries=10000, p_init=0.8)
    assert [sched._p(i) for i in (0, 10, 11, 50, 51, 9000)] == pytest.approx([0.8, 0.8, 0.4, 0.4, 0.2, 0.8 / 512])
    assert Square(model, queries=1000)._p(100) == pytest.approx(0.8 / 16)  # rescaled to the budget


def test_square_seed_changes_the_search(model_and_data):
    model, x, y = model_and_data
    a = Square(model, eps=0.1, queries=20, seed=1)(x, y)
    b = Square(model, eps=0.1, queries=20, seed=2)(x, y)
    assert not torch.equal(a, b)


def test_square_targeted_and_per_sample_eps(model_and_data):
    model, x, y = model_and_data
    target = (y + 1) % 10
    res = Square(model, eps=0.4, queries=150, targeted=True).run(x, y, target)
    with torch.no_grad():
        assert torch.equal(res.success, model(res.x_adv).argmax(1) == target)
    assert res.success.float().mean() > 0.3
    for norm in ("linf", "l2"):
        eps = torch.linspace(0.0, 0.3 if norm == "linf" else 1.5, len(y))
        out = Square(model, eps=eps, norm=norm, queries=20)(x, y)
        dist = norms(out - x, norm)
        assert (dist <= eps + 1e-5).all() and dist[0] == 0


@pytest.mark.parametrize("norm,eps,queries", [
    ("linf", 0.1, 300),
    pytest.param("l2", 0.5, 300, marks=pytest.mark.slow),
    pytest.param("linf", 0.1, 1000, marks=pytest.mark.slow),
])
def test_square_as_strong_as_torchattacks(model_and_data, norm, eps, queries):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = model_and_data
    ours = Square(model, eps=eps, norm=norm, queries=queries).run(x, y).robust_accuracy
    with torch.random.fork_rng():  # torchattacks reseeds the global RNG
        theirs_adv = torchattacks.Square(model, norm=TA_NORM[norm], eps=eps, n_queries=queries)(x, y)
    assert ours <= accuracy(model, theirs_adv, y) + 0.02


@pytest.mark.slow
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_fab_full_budget_vs_torchattacks(model_and_data, norm, eps):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = model_and_data
    ours = FAB(model, eps=eps, norm=norm, steps=100).run(x, y).robust_accuracy
    with torch.random.fork_rng():
        theirs_adv = torchattacks.FAB(model, norm=TA_NORM[norm], eps=eps, steps=100, n_restarts=1)(x, y)
    assert ours <= accuracy(model, theirs_adv, y) + 0.01
