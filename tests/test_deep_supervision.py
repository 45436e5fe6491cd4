"""Deep supervision, PCL and the TPAMI distance-loss variants: loss values by hand, gradient routing,
own-optimizer prototype steps, center updates, phases, checkpoints and nearest-prototype prediction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from defenses import BatchContext, create_defense
from workbench import load_data, load_model
from workbench.checkpoint import read_checkpoint
from workbench.config import load_profile
from workbench.evaluation import AttackSpec, Protocol, adaptive_loss, adaptive_protocol, evaluate_checkpoint
from workbench.models import create_model
from workbench.runs import read_metrics
from workbench.training import prepare_run, run_training

from stopping import train_stopped_at

F3 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
Y3 = torch.tensor([0, 1, 0])
P3 = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])  # pull / shared prototypes, K = 3, d = 2
Q3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # push prototypes


def with_state(name: str, params: dict, dims=(2,), k: int = 3):
    """A defense whose loss state (prototypes, centers) is built for features of the given dims."""
    d = create_defense(name, {"heads": ["fc1"] * len(dims), **params}, k)
    d.aux = nn.Module()
    d.build_state(d.aux, list(dims), torch.device("cpu"))
    return d


def sq(a, b):
    return float(((a - b) ** 2).sum())


def test_pcl_code_mode_matches_hand_computation():
    d = with_state("pcl", {"push_weight": 0.1, "proto_init": "randn"})
    d.aux.pull[0].data.copy_(P3)
    d.aux.push[0].data.copy_(Q3)
    loss = d.head_loss(0, F3, Y3)
    # pull: 1, 2, 10; push (mean over the two false classes): (2+1)/2, (5+2)/2, (9+4)/2
    assert loss.tolist() == pytest.approx([1 - 0.1 * 1.5, 2 - 0.1 * 3.5, 10 - 0.1 * 6.5])


@pytest.mark.parametrize("margin", [None, 3.0])
def test_pcl_paper_mode_matches_eq5_by_hand(margin):
    r = 0.01
    d = with_state("pcl", {"mode": "paper", "repel_weight": r, "repel_margin": margin, "proto_init": "randn"})
    d.aux.protos[0].data.copy_(P3)
    loss = d.head_loss(0, F3, Y3)
    expected = []
    for f, y in zip(F3, Y3.tolist()):
        pull = sq(f, P3[y])
        terms = [(sq(f, P3[j]), sq(P3[y], P3[j])) for j in range(3) if j != y]
        if margin is None:
            expected.append(pull - r * sum(a + b for a, b in terms) / 2)
        else:
            expected.append(pull + r * sum(max(0, margin - a) + max(0, margin - b) for a, b in terms) / 2)
    assert loss.tolist() == pytest.approx(expected)
    if margin is None:  # sample 0 written out: pull 1; repel ((1 + 2) + (5 + 8)) / 2 = 8
        assert loss[0].item() == pytest.approx(1 - r * 8)


def test_center_loss_value_and_update_rule_by_hand():
    d = with_state("ds_center", {"alpha": 0.5})
    d.centers(0).copy_(P3)
    d.aux.ready[0] = True
    assert d.head_loss(0, F3, Y3).tolist() == pytest.approx([0.5, 1.0, 5.0])  # 1/2 ||f - c_y||^2
    d._batch = ([F3], Y3)
    d.after_step(BatchContext(0, 1, 0))
    # class 0: n=2, sum(c - f) = (-4, -1), delta = (-4, -1)/3; class 1: n=1, (1, -1)/2; class 2 absent: unchanged
    expected = torch.tensor([[2 / 3, 1 / 6], [0.75, 1.25], [2.0, 2.0]])
    assert torch.allclose(d.centers(0), expected)


def test_contrastive_and_triplet_losses_by_hand():
    f = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [0.0, 3.0]])
    y = torch.tensor([0, 0, 1, 1])
    con = with_state("ds_contrastive", {"margin": 2.0}).head_loss(0, f, y)
    pair = {}
    for i in range(4):
        for j in range(4):
            dist = sq(f[i], f[j]) ** 0.5
            pair[i, j] = 0.5 * dist**2 if y[i] == y[j] else 0.5 * max(0.0, 2.0 - dist) ** 2
    assert con.tolist() == pytest.approx([sum(pair[i, j] for j in range(4) if j != i) / 3 for i in range(4)])
    # squared distances: d01 = 25, d02 = 1, d03 = 9, d12 = 18, d13 = 10, d23 = 4; margin 0.2
    hard = with_state("ds_triplet", {"margin": 0.2}).head_loss(0, f, y)
    assert hard.tolist() == pytest.approx([0.2 + 25 - 1, 0.2 + 25 - 10, 0.2 + 4 - 1, 0.0])
    every = with_state("ds_triplet", {"margin": 0.2, "mining": "batch_all"}).head_loss(0, f, y)
    assert every.tolist() == pytest.approx([(24.2 + 16.2) / 2, (7.2 + 15.2) / 2, (3.2 + 0) / 2, 0.0])


def test_single_class_batch_is_finite_for_every_loss():
    f = torch.randn(6, 4, requires_grad=True)
    y = torch.zeros(6, dtype=torch.long)
    for name in ("pcl", "ds_center", "ds_contrastive", "ds_triplet"):
        loss = with_state(name, {}, dims=(4,)).head_loss(0, f, y)
        assert torch.isfinite(loss).all(), name
        loss.sum().backward()
        assert torch.isfinite(f.grad).all(), name


def tiny_with(name: str, params: dict):
    torch.manual_seed(0)
    model = create_model("tiny", 1, 10, 8)
    d = create_defense(name, params, 10)
    aux = d.attach(model, (1, 8, 8))
    return model, d, aux


def test_gradients_reach_prototypes_and_branches_but_branches_never_touch_inference():
    heads = [{"tap": "features", "fc": [16, 8], "act": "prelu"}, "fc1"]
    model, d, aux = tiny_with("pcl", {"heads": heads, "warmup_epochs": 0, "proto_init": "randn"})
    x, y = load_data("digits", "test")
    x, y = x[:64], y[:64]
    out = d.training_loss(model, x, y, BatchContext(0, 1, 0))
    out.loss.backward()
    for group in (aux.pull, aux.push, aux.branches[0]):
        grads = [p.grad for p in group.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads)
    # The run's optimizer must not own the prototypes (they have their own SGD); the branches it does train.
    own = {id(p) for p in d.self_updated()}
    assert own == {id(p) for p in [*aux.pull, *aux.push]}
    assert not own & {id(p) for p in aux.branches.parameters()}


def test_prototype_step_follows_the_unweighted_term_with_its_own_lr():
    """tau * w_p scales the pull term for the model; the pull prototypes step on the unweighted gradient."""
    model, d, aux = tiny_with("pcl", {"heads": ["fc1"], "tau": 2.0, "pull_weight": 3.0, "pull_lr": 0.5,
                                      "warmup_epochs": 0, "proto_init": "randn"})
    x, y = load_data("digits", "test")
    x, y = x[:32], y[:32]
    c0 = aux.pull[0].detach().clone()
    with torch.no_grad():
        f = model(x, taps=["fc1"])[1]["fc1"]
    c = c0.clone().requires_grad_(True)
    unweighted = ((f - c[y]) ** 2).sum(1).mean()
    (expected_grad,) = torch.autograd.grad(unweighted, c)
    d.training_loss(model, x, y, BatchContext(0, 1, 0)).loss.backward()
    d.after_step(BatchContext(0, 1, 0))
    assert torch.allclose(aux.pull[0].detach(), c0 - 0.5 * expected_grad, atol=1e-5)
    assert aux.pull[0].grad is None  # zeroed for the next batch


def test_class_mean_init_starts_prototypes_at_the_first_batch_means():
    model, d, aux = tiny_with("pcl", {"heads": ["fc1"], "warmup_epochs": 0})
    x, y = load_data("digits", "test")
    x, y = x[:200], y[:200]
    with torch.no_grad():
        f = model(x, taps=["fc1"])[1]["fc1"]
    d.in_training = True
    d.head_loss(0, f, y)
    means = torch.stack([f[y == k].mean(0) for k in range(10)])
    assert torch.allclose(aux.pull[0], means, atol=1e-5) and torch.allclose(aux.push[0], means, atol=1e-5)
    assert bool(aux.ready[0].all())


def test_a_class_missing_from_the_first_batch_is_initialized_when_it_appears():
    model, d, aux = tiny_with("ds_center", {"heads": ["fc1"], "warmup_epochs": 0})
    x, y = load_data("digits", "test")
    with torch.no_grad():
        f = model(x, taps=["fc1"])[1]["fc1"]
    d.in_training = True
    first = y != 7
    d.head_loss(0, f[first], y[first])
    assert not bool(aux.ready[0, 7]) and d.centers(0)[7].abs().sum() == 0
    d.head_loss(0, f, y)
    assert bool(aux.ready[0].all()) and torch.allclose(d.centers(0)[7], f[y == 7].mean(0), atol=1e-5)


def test_push_prototypes_move_away_from_other_class_features():
    model, d, aux = tiny_with("pcl", {"heads": ["fc1"], "warmup_epochs": 0, "push_lr": 0.05})
    x, y = load_data("digits", "test")
    x, y = x[:128], y[:128]
    with torch.no_grad():
        f = model(x, taps=["fc1"])[1]["fc1"]
    others = torch.ones(len(y), 10).scatter(1, y[:, None], 0.0).bool()

    def push_distance():
        return torch.cdist(f, aux.push[0].detach()).pow(2)[others].mean().item()

    d.in_training = True
    d.head_loss(0, f, y)  # class-mean init
    d.in_training = False
    start = push_distance()
    for _ in range(5):
        d.head_loss(0, f, y).mean().backward()
        d.after_step(BatchContext(0, 1, 0))
    assert push_distance() > start


def test_heads_must_be_listed_input_to_output():
    from workbench.errors import WorkbenchError

    d = create_defense("pcl", {"heads": ["fc1", "features"]}, 10)
    with pytest.raises(WorkbenchError, match="input to output"):
        d.attach(create_model("tiny", 1, 10, 8), (1, 8, 8))


def test_probe_variants_adaptive_loss_is_per_sample_and_reaches_the_input():
    model, d, aux = tiny_with("ds_triplet", {"heads": ["features", "fc1"], "warmup_epochs": 0})
    x, y = load_data("digits", "test")
    d.aux.class_means.copy_(torch.randn(10, aux.class_means.shape[1]))
    loss = d.attack_loss()
    x = x[:16].clone().requires_grad_(True)
    value, _ = loss(model, x, y[:16])
    (grad,) = torch.autograd.grad(value.sum(), x)
    assert grad.abs().sum() > 0
    assert torch.allclose(loss(model, x[:4], y[:4])[0], value[:4], atol=1e-5)  # independent of the batch


PCL_RUN = ["epochs=4", "eval.robust_every=0", "adv_train.attack=none", "defense=pcl",
           "defense.heads=[{tap: features, fc: [32]}, fc1]", "defense.warmup_epochs=2",
           "schedule={name: multistep, milestones: [1], gamma: 0.5, per_phase: true}"]


@pytest.fixture(scope="module")
def pcl_run(tmp_path_factory):
    cfg, path = load_profile("quickstart", PCL_RUN)
    run = prepare_run(cfg, tmp_path_factory.mktemp("pcl"), path)
    assert run_training(run.root, device="cpu") == "finished"
    return cfg, run


def test_pcl_warms_up_then_switches_at_t_prime_with_fresh_optimizer(pcl_run):
    cfg, run = pcl_run
    records = [r for r in read_metrics(run.metrics) if r["kind"] == "epoch"]
    assert [r["phase"] for r in records] == ["warmup", "warmup", "pcl", "pcl"]
    heads = ["loss_pcl_0_features", "loss_pcl_1_fc1"]
    assert all(h not in r for r in records[:2] for h in heads) and all(h in r for r in records[2:] for h in heads)
    assert "proto_norm_1_fc1" in records[-1] and records[-1]["proto_min_dist_1_fc1"] > 0
    ckpt = read_checkpoint(run.last)
    steps = {int(s["step"]) for s in ckpt["optimizer"]["state"].values()}
    assert steps == {2 * records[0]["step"]}  # Adam restarted at T' = 2
    model_and_branch = len(ckpt["state_dict"]) - sum(k.endswith(("running_mean", "running_var", "num_batches_tracked"))
                                                     for k in ckpt["state_dict"]) + 2  # + the branch's weight, bias
    assert len(ckpt["optimizer"]["param_groups"][0]["params"]) == model_and_branch  # prototypes are not in it
    assert bool(ckpt["auxiliary"]["ready"].all())
    assert records[-1]["test_clean_acc"] > 0.7  # no collapse after the switch


def test_checkpoint_classifier_has_no_branches_and_prototype_head_predicts_nearest(pcl_run):
    _, run = pcl_run
    ckpt = read_checkpoint(run.best)
    assert not any("branches" in k for k in ckpt["state_dict"]) and "branches.0.1.weight" in ckpt["auxiliary"]
    model = load_model(run.best)
    assert type(model).__name__ == "TapNet"
    x, y = load_data("digits", "test")
    proto = load_model(run.best, head="prototype")
    with torch.no_grad():
        f = model(x, taps=["fc1"])[1]["fc1"]
        nearest = torch.cdist(f, ckpt["auxiliary"]["pull.1"]).argmin(1)
        assert torch.equal(proto(x).argmax(1), nearest)
        softmax_acc = (model(x).argmax(1) == y).float().mean().item()
    nearest_acc = (nearest == y).float().mean().item()
    assert nearest_acc > 0.6 and softmax_acc > 0.7
    # Attacks run on the nearest-prototype classifier, and lower its accuracy.
    pgd = Protocol("custom", [AttackSpec("pgd", {"steps": 10}, [0.2], "PGD-10")])
    report, _ = evaluate_checkpoint(run.best, [pgd], n=100, head="prototype")
    assert report["head"] == "prototype" and report["results"][0]["robust_accuracy"] < report["clean_accuracy"]


def test_adaptive_attack_uses_the_runs_prototypes(pcl_run):
    _, run = pcl_run
    data = read_checkpoint(run.best)
    loss = adaptive_loss(data, run.best)
    x, y = load_data("digits", "test")
    model = load_model(run.best)
    value, logits = loss(model, x[:50], y[:50])
    # CE + tau * (pull - w_c push) at both heads, with the checkpoint's prototypes
    with torch.no_grad():
        _, taps = model(x[:50], taps=["features", "fc1"])
        aux = data["auxiliary"]
        f0 = taps["features"] @ aux["branches.0.1.weight"].t() + aux["branches.0.1.bias"]
        ce = torch.nn.functional.cross_entropy(logits, y[:50], reduction="none")
        total = ce.clone()
        for f, i in ((f0, 0), (taps["fc1"], 1)):
            pull = torch.cdist(f, aux[f"pull.{i}"]).pow(2).gather(1, y[:50, None]).squeeze(1)
            push = torch.cdist(f, aux[f"push.{i}"]).pow(2).scatter(1, y[:50, None], 0).sum(1) / 9
            total += pull - 1e-4 * push
    assert torch.allclose(value.detach(), total, rtol=1e-3, atol=1e-3)
    report, _ = evaluate_checkpoint(run.best, [adaptive_protocol(loss, [0.1], "linf")], n=40)
    assert [r["label"] for r in report["results"]] == ["PGD-100x2 ce_plus_heads", "APGD-100 ce_plus_heads"]


def test_resume_across_the_pcl_switch_is_exact(tmp_path):
    """Stopped right after T' (prototypes initialized, optimizer reset), then resumed == straight run."""

    overrides = [*PCL_RUN[:-2], "epochs=3", "defense.warmup_epochs=1"]
    cfg, path = load_profile("quickstart", overrides)
    straight = prepare_run(cfg, tmp_path / "a", path)
    run_training(straight.root, device="cpu")
    cfg, path = load_profile("quickstart", overrides)
    split = prepare_run(cfg, tmp_path / "b", path)

    assert train_stopped_at(split, epoch=1, batch=3) == "stopped"
    assert run_training(split.root, device="cpu") == "finished"
    a, b = read_checkpoint(straight.last), read_checkpoint(split.last)
    for part in ("state_dict", "auxiliary"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for i, state in a["optimizer"]["state"].items():
        assert all(torch.equal(v, b["optimizer"]["state"][i][k]) for k, v in state.items() if torch.is_tensor(v))
    assert a["defense_state"] == b["defense_state"]


@pytest.mark.parametrize("name,params", [
    ("ds_softmax", {}), ("ds_center", {}), ("ds_contrastive", {"margin": 5.0}), ("ds_triplet", {"mining": "batch_all"})])
def test_ds_variants_train_a_real_run_and_expose_their_state(tmp_path, name, params):
    sets = [f"defense.{k}={v}" for k, v in params.items()]
    cfg, path = load_profile("quickstart", ["epochs=3", "eval.robust_every=0", "adv_train.attack=none",
                                            f"defense={name}", "defense.heads=[features, fc1]",
                                            "defense.warmup_epochs=1", *sets])
    run = prepare_run(cfg, tmp_path / name, path)
    assert run_training(run.root, device="cpu") == "finished"
    records = [r for r in read_metrics(run.metrics) if r["kind"] == "epoch"]
    assert records[-1]["phase"] == name and f"loss_{name}_1_fc1" in records[-1]
    assert records[-1]["test_clean_acc"] > 0.5
    model = load_model(run.best)
    x, y = load_data("digits", "test")
    if name == "ds_softmax":
        assert "branches.0.1.weight" in read_checkpoint(run.best)["auxiliary"]  # each head's own FC(K)
        return
    proto = load_model(run.best, head="prototype")  # centers, or class means tracked during training
    with torch.no_grad():
        assert (proto(x).argmax(1) == y).float().mean() > 0.5
        assert (model(x).argmax(1) == y).float().mean() > 0.5


def test_probe_classifier_does_not_train_the_representation():
    """Contrastive/triplet: CE reaches only the layers after the last head (the papers have no FC(10))."""
    model, d, aux = tiny_with("ds_triplet", {"heads": ["features"], "warmup_epochs": 0})
    x, y = load_data("digits", "test")
    d.in_training = True  # as inside training_loss; attacks (in_training False) get the full gradient
    logits, feats, taps = d.head_features(model, x[:64])
    ce = torch.nn.functional.cross_entropy(d.classifier_logits(model, logits, taps), y[:64])
    ce.backward()
    assert all(p.grad is None for p in model.stages["features"].parameters())
    assert all(p.grad is not None for p in model.stages["fc1"].parameters())


def test_collapse_to_chance_after_the_warmup_is_detected():
    d = create_defense("pcl", {}, 10)
    warm = [{"phase": "warmup", "train_acc": 0.9}]
    assert d.check_epoch({"phase": "pcl", "train_acc": 0.85}, warm) is None
    assert d.check_epoch({"phase": "warmup", "train_acc": 0.1}, []) is None
    message = d.check_epoch({"phase": "pcl", "train_acc": 0.11}, warm)
    assert "collapsed" in message and "warmup_epochs" in message and "\n" not in message


def test_a_failed_epoch_check_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import workbench.training.trainer as trainer_module
    from workbench.runs import Status

    real = trainer_module.create_defense

    def with_check(name, params, k):
        defense = real(name, params, k)
        defense.check_epoch = lambda record, history: "collapsed (test)" if record["epoch"] == 3 else None
        return defense

    monkeypatch.setattr(trainer_module, "create_defense", with_check)
    cfg, path = load_profile("quickstart", PCL_RUN)
    run = prepare_run(cfg, tmp_path / "r", path)
    assert run_training(run.root, device="cpu") == "failed"
    status = Status.read(run.status)
    assert status.state == "failed" and "collapsed (test)" in status.message
    assert read_checkpoint(run.last)["position"]["epoch"] == 2  # epoch 3's state was not written
    assert [r["epoch"] for r in read_metrics(run.metrics) if r["kind"] == "epoch"] == [1, 2, 3]


def test_adversarial_training_can_start_after_the_warmup(tmp_path):
    """`adv_train.phases: last_phase` (PCL's Algorithm 1): no adversarial batch during the CE warm-up."""
    cfg, path = load_profile("quickstart", [*PCL_RUN[:-2], "epochs=3", "defense.warmup_epochs=2",
                                            "adv_train.attack=fgsm", "adv_train.eps=[0.1, 0.2]",
                                            "adv_train.pairing=concat", "adv_train.ratio=0.5",
                                            "adv_train.phases=last_phase"])
    run = prepare_run(cfg, tmp_path / "r", path)
    assert run_training(run.root, device="cpu") == "finished"
    batches = [r for r in read_metrics(run.metrics) if r["kind"] == "epoch"][0]["step"]
    g = torch.Generator().manual_seed(cfg.seed + 1)  # the eps generator: one draw per adversarial batch
    for _ in range(batches):
        torch.rand(1, generator=g)
    assert torch.equal(read_checkpoint(run.last)["rng"]["adversary"]["eps_generator"], g.get_state())


def test_adversarial_epochs_can_train_on_a_subset_and_resume_exactly(tmp_path):
    """`adv_train.train_subset`: the CE warm-up sees the whole split, the adversarial epochs only the first N
    (their cost is steps + 1 passes per sample); a run stopped inside an adversarial epoch resumes exactly."""
    from workbench.runs import Status

    overrides = [*PCL_RUN[:-2], "epochs=3", "defense.warmup_epochs=2", "adv_train.attack=fgsm",
                 "adv_train.eps=[0.1, 0.2]", "adv_train.pairing=concat", "adv_train.ratio=0.5",
                 "adv_train.phases=last_phase", "adv_train.train_subset=200"]
    cfg, path = load_profile("quickstart", overrides)
    straight = prepare_run(cfg, tmp_path / "a", path)
    assert run_training(straight.root, device="cpu") == "finished"
    ends = [r["step"] for r in read_metrics(straight.metrics) if r["kind"] == "epoch"]
    full = len(load_data("digits", "train")[1])
    assert ends == [-(-full // 64), 2 * -(-full // 64), 2 * -(-full // 64) + 4]  # 200 samples: 4 batches of 64
    assert Status.read(straight.status).batches == 4
    g = torch.Generator().manual_seed(cfg.seed + 1)  # one eps draw per adversarial batch: 4, not a whole epoch's
    for _ in range(4):
        torch.rand(1, generator=g)
    assert torch.equal(read_checkpoint(straight.last)["rng"]["adversary"]["eps_generator"], g.get_state())

    cfg, path = load_profile("quickstart", overrides)
    split = prepare_run(cfg, tmp_path / "b", path)

    assert train_stopped_at(split, epoch=2, batch=2) == "stopped"
    assert read_checkpoint(split.last)["position"]["batch"] == 2
    assert run_training(split.root, device="cpu") == "finished"
    a, b = read_checkpoint(straight.last), read_checkpoint(split.last)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k


# -- the warm-up gate (issue 19): PCL starts once the CE warm-up is accurate enough ------------------------------------
GATED_RUN = [*PCL_RUN[:-2], "defense.warmup_epochs=2", "defense.warmup_until_clean=0.85",
             "schedule={name: multistep, milestones: [1], gamma: 0.5, per_phase: true}"]


def gated(**params):
    return create_defense("pcl", {"warmup_epochs": 2, "warmup_until_clean": 0.9, **params}, 10)


def records(*accs):
    return [{"epoch": i + 1, "phase": "warmup", "test_clean_acc": a} for i, a in enumerate(accs)]


def test_gate_starts_pcl_after_the_first_warmup_epoch_that_reached_the_accuracy():
    d, epochs = gated(), 10
    history = records(0.95, 0.8, 0.85, 0.92, 0.5)  # epoch 1 is above it but inside the minimum of 2 epochs
    assert [d.phase(e, epochs, history) for e in range(7)] == ["warmup"] * 4 + ["pcl"] * 3
    assert [e for e in range(1, 7) if d.reset_optimizer_at(e, epochs, history)] == [4]
    # Each epoch's phase reads only the records before it: the same answers with the history cut there.
    assert all(d.phase(e, epochs, history[:e]) == d.phase(e, epochs, history) for e in range(7))
    # Not reached: the warm-up runs to warmup_max_epochs, or to the run's last epoch, which PCL always gets.
    low = records(*[0.5] * 9)
    assert [d.phase(e, epochs, low) for e in range(10)] == ["warmup"] * 9 + ["pcl"]
    assert [gated(warmup_max_epochs=3).phase(e, epochs, low) for e in range(5)] == ["warmup"] * 3 + ["pcl"] * 2
    # An epoch without a test clean accuracy (eval.clean_every > 1) does not open the gate.
    assert gated().phase(3, epochs, [*records(0.5), {"epoch": 2, "phase": "warmup", "test_clean_acc": None}]) \
        == "warmup"
    # Without the gate: warmup_epochs exactly, whatever the records say.
    plain = create_defense("pcl", {"warmup_epochs": 2}, 10)
    assert [plain.phase(e, epochs, low) for e in range(4)] == ["warmup", "warmup", "pcl", "pcl"]
    assert [e for e in range(1, 4) if plain.reset_optimizer_at(e, epochs)] == [2]


def test_gate_settings_are_checked():
    from pydantic import ValidationError

    from workbench.errors import WorkbenchError

    with pytest.raises(ValidationError, match="warmup_until_clean"):
        create_defense("pcl", {"warmup_max_epochs": 5}, 10)
    for sets, text in ((["defense.warmup_max_epochs=1"], "below warmup_epochs"),
                       (["eval.clean_every=0"], "eval.clean_every")):
        with pytest.raises(WorkbenchError, match=text):
            load_profile("quickstart", [*GATED_RUN, *sets])


def test_gated_run_and_its_resume_after_the_gate_fired_agree(tmp_path):
    """The gate extends the warm-up past its minimum (1 epoch, ~76% clean) until it reaches 85% (~88% after 2);
    stopped in the first PCL epoch and resumed, the run replays the same phases and weights."""

    overrides = [*GATED_RUN, "defense.warmup_epochs=1"]
    cfg, path = load_profile("quickstart", overrides)
    straight = prepare_run(cfg, tmp_path / "a", path)
    assert run_training(straight.root, device="cpu") == "finished"
    recs = [r for r in read_metrics(straight.metrics) if r["kind"] == "epoch"]
    assert recs[0]["test_clean_acc"] < 0.85 <= recs[1]["test_clean_acc"]
    assert [r["phase"] for r in recs] == ["warmup", "warmup", "pcl", "pcl"]

    split = prepare_run(cfg, tmp_path / "b", path)

    assert train_stopped_at(split, epoch=2, batch=3) == "stopped"
    assert run_training(split.root, device="cpu") == "finished"
    assert [r["phase"] for r in read_metrics(split.metrics) if r["kind"] == "epoch"] == [r["phase"] for r in recs]
    a, b = read_checkpoint(straight.last), read_checkpoint(split.last)
    for part in ("state_dict", "auxiliary"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    steps = {int(s["step"]) for s in a["optimizer"]["state"].values()}
    assert steps == {2 * recs[0]["step"]}  # Adam restarted when the gate opened (after epoch 2), not at epoch 1


def test_authors_training_attack_never_goes_past_20_over_255():
    """pcl_pgd_authors_mnist: 10 fixed steps of 2/255 from the clean image, so the eps drawn from U[0.1, 0.5] never
    binds: two draws give the same examples. The paper-text profile goes further, from a random start."""
    from workbench.training.adversarial import AdversarialBatcher

    x, y = load_data("digits", "test")
    x, y = x[:64], y[:64]
    torch.manual_seed(0)
    model = create_model("tiny", 1, 10, 8).eval()
    authors = AdversarialBatcher(load_profile("pcl_pgd_authors_mnist")[0].adv_train, model, seed=0)
    first, _, mask = authors.make_batch(x, y)
    second, _, _ = authors.make_batch(x, y)
    assert authors.attack.random_start is False and authors.attack.step_size == pytest.approx(2 / 255, rel=1e-5)
    delta = (first[mask] - x).abs().max().item()
    assert 2 / 255 < delta <= 20 / 255 + 1e-6 and torch.equal(first, second)
    paper = AdversarialBatcher(load_profile("pcl_pgd_mnist")[0].adv_train, model, seed=0)
    x_paper, _, mask = paper.make_batch(x, y)
    assert (x_paper[mask] - x).abs().max().item() > 0.1
