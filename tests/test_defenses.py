"""Defenses as a user relies on them: compact layers compute what the paper defines, every defense
trains, losses match hand computation, adversarial training uses the configured eps, and the
trainer switches phases where the paper does."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from defenses import DEFENSES, BatchContext, create_defense
from defenses.compact_layers import CompactConv2d, CompactLinear, l2_softmax_alpha
from defenses.cross_entropy import soft_cross_entropy
from defenses.pc_loss import logit_constraint, pc_hinge
from workbench import load_data
from workbench.checkpoint import read_checkpoint
from workbench.config import load_profile
from workbench.config.schema import AdvTrainConfig
from workbench.errors import WorkbenchError
from workbench.evaluation import adaptive_loss, adaptive_protocol, evaluate_checkpoint
from workbench.models import MODELS, create_model
from workbench.runs import read_metrics
from workbench.training import prepare_run, run_training
from workbench.training.adversarial import AdversarialBatcher

from stopping import train_stopped_at


# -- compact convolution against its definition ----------------------------------------------------------------------
def per_patch_compact_conv(x, weight, bias, alpha, delta, stride, padding, dilation=1):
    """The definition: unfold every patch, L2-normalize it, scale by alpha, matmul with the kernel."""
    b, _, h, w = x.shape
    out_c, _, kh, kw = weight.shape
    patches = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # (B, C*k*k, L)
    normed = alpha * patches / (patches.norm(dim=1, keepdim=True) + delta)
    out = weight.view(out_c, -1) @ normed + bias.view(1, -1, 1)
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    return out.view(b, out_c, oh, ow)


@pytest.mark.parametrize("stride,padding,dilation,kernel", [(1, 0, 1, 3), (2, 1, 1, 3), (1, 2, 1, 5), (2, 0, 1, 4),
                                                            (1, 1, 2, 3)])
def test_compact_conv_matches_per_patch_definition_values_and_gradients(stride, padding, dilation, kernel):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, kernel, stride=stride, padding=padding, dilation=dilation).double()
    layer = CompactConv2d.from_conv(conv, alpha=2.5, delta=0.01, learn_alpha=True).double()
    x = torch.rand(2, 3, 11, 11, dtype=torch.float64)
    x[0, :, :4, :4] = 0  # all-zero patches: the norm is delta there, and nothing is nan
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    got = layer(x1)
    w = layer.weight.detach().clone().requires_grad_(True)
    a = layer.alpha.detach().clone().requires_grad_(True)
    bias = layer.bias.detach().clone().requires_grad_(True)
    want = per_patch_compact_conv(x2, w, bias, a, 0.01, stride, padding, dilation)
    assert got.shape == want.shape == conv(x).shape
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    g = torch.randn_like(got)
    (got * g).sum().backward()
    (want * g).sum().backward()
    for ours, ref in ((x1.grad, x2.grad), (layer.weight.grad, w.grad), (layer.alpha.grad, a.grad),
                      (layer.bias.grad, bias.grad)):
        assert torch.isfinite(ours).all()
        assert torch.allclose(ours, ref, atol=1e-5, rtol=0)


def test_compact_conv_float32_matches_definition():
    torch.manual_seed(1)
    layer = CompactConv2d(4, 6, 3, stride=2, padding=1, alpha=1.7)
    x = torch.rand(3, 4, 9, 9)
    want = per_patch_compact_conv(x, layer.weight, layer.bias, layer.alpha, 0.01, 2, 1)
    assert torch.allclose(layer(x), want, atol=1e-5)


def test_compact_output_is_bounded_by_alpha_times_kernel_norm():
    # Compactness: a patch of any scale gives at most alpha * ||w|| (+ bias), so scaling the input does not
    # scale the output as it does for a plain conv.
    torch.manual_seed(2)
    layer = CompactConv2d(1, 2, 3, alpha=3.0, bias=False)
    x = torch.rand(1, 1, 8, 8)
    bound = 3.0 * layer.weight.flatten(1).norm(dim=1).view(1, -1, 1, 1)
    for scale in (1.0, 100.0):
        assert (layer(scale * x).abs() <= bound + 1e-5).all()
    assert torch.allclose(layer(100 * x), layer(x), atol=1e-2)


def test_compact_linear_is_alpha_times_normalized_input():
    torch.manual_seed(3)
    linear = nn.Linear(7, 3)
    layer = CompactLinear.from_linear(linear, alpha=4.0, delta=0.01, learn_alpha=True)
    x = torch.randn(5, 7)
    want = linear(4.0 * x / (x.norm(dim=1, keepdim=True) + 0.01))
    assert torch.allclose(layer(x), want, atol=1e-5)
    zero = torch.zeros(1, 7, requires_grad=True)
    layer(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()


def _input_for(spec):
    channels = spec.channels[0]
    size = max(spec.min_image_size, 28 if channels == 1 else 32)
    return channels, size


@pytest.mark.parametrize("model_name", MODELS.names())
def test_ccn_transform_keeps_output_shapes_for_every_model(model_name):
    spec = MODELS.get(model_name)
    channels, size = _input_for(spec)
    torch.manual_seed(0)
    model = create_model(model_name, channels, 10, size)
    plain_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    x = torch.rand(2, channels, size, size)
    with torch.no_grad():
        want = model.eval()(x).shape
    defense = create_defense("ccn", {}, 10)
    compact = defense.transform_model(model).eval()
    assert sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in compact.modules()) == 0
    assert sum(isinstance(m, (CompactConv2d, CompactLinear)) for m in compact.modules()) == plain_layers
    with torch.no_grad():
        out = compact(x)
    assert out.shape == want and torch.isfinite(out).all()
    assert set(defense.epoch_metrics(compact)) == {f"alpha_{n}" for n, _ in defense.compact_layers}


def test_named_layers_make_only_those_compact_and_alpha_init():
    model = create_model("small_cnn", 1, 10, 28)
    defense = create_defense("ccn", {"layers": ["conv1", "fc2"]}, 10)
    defense.transform_model(model)
    compact = [type(m).__name__ for m in model.modules() if isinstance(m, (CompactConv2d, CompactLinear))]
    assert compact == ["CompactConv2d", "CompactLinear"]
    assert model.stages["features"][0].alpha.item() == pytest.approx(3.0)  # sqrt(1 * 3 * 3)
    assert isinstance(model.stages["features"][2], nn.Conv2d)

    l2sm = create_defense("l2_softmax", {}, 10).transform_model(create_model("small_cnn", 1, 10, 28))
    assert isinstance(l2sm.stages["logits"], CompactLinear)
    assert l2sm.stages["logits"].alpha.item() == pytest.approx(math.log(0.99 * 8 / 0.01), rel=1e-5)
    assert sum(isinstance(m, (CompactConv2d, CompactLinear)) for m in l2sm.modules()) == 1
    assert l2_softmax_alpha(10) == pytest.approx(6.6746, abs=1e-3)

    with pytest.raises(WorkbenchError, match="unknown layer 'conv9'.*conv1, conv2, conv3, conv4, fc1, fc2, fc3"):
        create_defense("ccn", {"layers": ["conv9"]}, 10).transform_model(create_model("small_cnn", 1, 10, 28))
    # module paths work too
    model = create_model("small_cnn", 1, 10, 28)
    create_defense("ccn", {"layers": ["stages.fc1.0"]}, 10).transform_model(model)
    assert isinstance(model.stages["fc1"][0], CompactLinear)


def test_brelu_bounds_every_activation_and_norm_variants_insert_layers():
    torch.manual_seed(0)
    model = create_defense("brelu", {}, 10).transform_model(create_model("small_cnn", 1, 10, 28)).eval()
    seen = []
    for m in model.modules():
        if isinstance(m, nn.Hardtanh):
            m.register_forward_hook(lambda mod, inp, out: seen.append(out.max().item()))
    assert not any(type(m) is nn.ReLU for m in model.modules())
    model(torch.rand(4, 1, 28, 28) * 50)
    assert len(seen) == 6 and max(seen) <= 1.0
    lrn = create_defense("lrn", {}, 10).transform_model(create_model("small_cnn", 1, 10, 28))
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in lrn.modules()) == 4
    bn = create_defense("bn", {}, 10).transform_model(create_model("small_cnn", 1, 10, 28))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 4


# -- losses against hand computation ---------------------------------------------------------------------------------
def test_label_smoothing_targets_are_the_papers_one_ninetieth():
    logits = torch.tensor([[2.0, 0.5, -1.0] + [0.0] * 7])
    y = torch.tensor([0])
    logp = F.log_softmax(logits, 1)[0]
    want = -(0.9 * logp[0] + sum(logp[k] / 90 for k in range(1, 10)))
    assert soft_cross_entropy(logits, y, 0.1).item() == pytest.approx(want.item(), rel=1e-6)
    assert soft_cross_entropy(logits, y, 0.0).item() == pytest.approx(F.cross_entropy(logits, y).item())


def test_pc_loss_matches_hand_computation():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([0, 1])
    xi = 0.5

    def softmax(row):
        e = [math.exp(v) for v in row]
        return [v / sum(e) for v in e]

    p0, p1 = softmax([2.0, 1.0, 0.0]), softmax([0.0, 0.0, 3.0])
    # sample 0: true 0; false classes 1, 2
    h0 = [max(0.0, p0[1] + xi - p0[0]), max(0.0, p0[2] + xi - p0[0])]
    # sample 1: true 1; false classes 0, 2
    h1 = [max(0.0, p1[0] + xi - p1[1]), max(0.0, p1[2] + xi - p1[1])]
    got = pc_hinge(logits, y, xi, "mean")
    assert got.tolist() == pytest.approx([sum(h0) / 2, sum(h1) / 2], rel=1e-6)
    assert pc_hinge(logits, y, xi, "sum").tolist() == pytest.approx([sum(h0), sum(h1)], rel=1e-6)

    # LC: positive gap a_y - a_k to the most probable false class (hard) or softmax-weighted over false classes.
    assert logit_constraint(logits, y, "hard").tolist() == pytest.approx([1.0, 0.0])
    w = softmax([1.0, 0.0])  # sample 0's false logits
    assert logit_constraint(logits, y, "soft").tolist() == pytest.approx([w[0] * 1.0 + w[1] * 2.0, 0.0], rel=1e-6)

    defense = create_defense("pc_loss", {"xi": xi, "lam": 0.05, "warmup_epochs": 0}, 3)

    class Fixed(nn.Module):
        def forward(self, x):
            return logits

    out = defense.training_loss(Fixed(), torch.zeros(2, 1), y, BatchContext(epoch=0, epochs=2, step=0))
    lc_soft = (w[0] * 1.0 + w[1] * 2.0) / 2
    assert out.loss.item() == pytest.approx((sum(h0) / 2 + sum(h1) / 2) / 2 + 0.05 * lc_soft, rel=1e-6)
    loss, _ = defense.attack_loss()(Fixed(), torch.zeros(2, 1), y)
    assert loss.shape == (2,)
    assert loss.mean().item() == pytest.approx(out.loss.item(), rel=1e-6)  # adaptive = the training objective


# -- every defense trains --------------------------------------------------------------------------------------------
# Per-defense settings for a quick test (the phase that matters, a short inner attack).
# Deeply supervised losses start after a CE warm-up, as the papers train them (from scratch the pull toward
# class means of still-indistinct features collapses them, SPEC 1.8): epoch 0 of train_steps is the warm-up.
TINY_HEADS = {"heads": ["features", "fc1"], "warmup_epochs": 1}
WARMED_UP = {"pcl", "ds_softmax", "ds_center", "ds_contrastive", "ds_triplet"}
QUICK = {"pc_loss": {"warmup_epochs": 0}, "trades": {"steps": 3, "step_size": 0.05, "eps": 0.1},
         "adr": {"steps": 3, "step_size": 0.05, "eps": 0.1},
         **{name: TINY_HEADS for name in ("pcl", "ds_softmax", "ds_center", "ds_contrastive", "ds_triplet")}}


def generated_batches(n_batches=40, batch=32, classes=4, size=12, seed=0):
    """Learnable generated data: each class is a fixed random template plus noise."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(classes, 1, size, size, generator=g)
    out = []
    for _ in range(n_batches):
        y = torch.randint(0, classes, (batch,), generator=g)
        x = (templates[y] + 0.25 * torch.randn(batch, 1, size, size, generator=g)).clamp(0, 1)
        out.append((x, y))
    return out


def digits(split="train"):
    return load_data("digits", split)


def digits_batches(n_batches=40, batch=32):
    x, y = digits()
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n_batches):
        idx = torch.randint(0, len(y), (batch,), generator=g)
        out.append((x[idx], y[idx]))
    return out


def train_steps(defense_name: str, batches, classes: int):
    torch.manual_seed(0)
    defense = create_defense(defense_name, QUICK.get(defense_name, {}), classes)
    model = defense.transform_model(create_model("tiny", 1, classes, batches[0][0].shape[-1]))
    aux = defense.attach(model, tuple(batches[0][0].shape[1:]))
    own = {id(p) for p in defense.self_updated()}
    aux_params = [p for p in aux.parameters() if id(p) not in own] if aux is not None else []
    opt = torch.optim.Adam([*model.parameters(), *aux_params], lr=3e-3)
    losses = []
    model.train()
    warmup = batches if defense_name in WARMED_UP else []
    for step, (x, y) in enumerate([*warmup, *batches]):
        ctx = BatchContext(epoch=0 if step < len(warmup) else 1, epochs=2, step=step)
        out = defense.training_loss(model, x, y, ctx)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        defense.after_step(ctx)
        assert torch.isfinite(out.loss)
        if ctx.epoch == 1:
            losses.append(out.loss.item())
    return losses


@pytest.mark.parametrize("name", DEFENSES.names())
@pytest.mark.parametrize("data", ["generated", "digits"])
def test_every_defense_reduces_its_loss(name, data):
    batches = generated_batches() if data == "generated" else digits_batches()
    classes = 4 if data == "generated" else 10
    losses = train_steps(name, batches, classes)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (name, data, first, last)


def test_trades_crafts_inside_the_ball_without_touching_parameters():
    torch.manual_seed(0)
    defense = create_defense("trades", {"eps": 0.1, "steps": 5, "step_size": 0.05}, 10)
    model = create_model("tiny", 1, 10, 8).train()
    x, _ = digits_batches(1, 16)[0]
    x_adv = defense.craft(model, x)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        p = F.softmax(model.eval()(x), 1)
        kl_adv = F.kl_div(F.log_softmax(model(x_adv), 1), p, reduction="sum")
        kl_noise = F.kl_div(F.log_softmax(model((x + 0.1 * torch.randn_like(x)).clamp(0, 1)), 1), p,
                            reduction="sum")
    assert kl_adv > kl_noise  # the inner maximization found a worse point than random noise


# -- adversarial training: the configured eps range ------------------------------------------------------------------
@pytest.mark.parametrize("sampling", ["batch", "sample"])
def test_adversarial_training_draws_eps_from_the_configured_range(sampling):
    # The PC-LC recipe: clean + FGSM copies 1:1, eps ~ U[0.1, 0.3].
    cfg = AdvTrainConfig(attack="fgsm", eps=[0.1, 0.3], eps_sampling=sampling, pairing="concat", ratio=0.5)
    model = create_model("tiny", 1, 10, 8).eval()
    batcher = AdversarialBatcher(cfg, model, seed=0)
    x, y = digits_batches(1, 64)[0]
    x = x.clamp(0.35, 0.65)  # no pixel clips at [0, 1] within 0.3, so |x_adv - x| is the eps used
    used = []
    for _ in range(30):
        x_in, y_in, mask = batcher.make_batch(x, y)
        assert x_in.shape[0] == 128 and torch.equal(x_in[:64], x) and torch.equal(y_in[64:], y)
        assert mask.tolist() == [False] * 64 + [True] * 64
        per_sample = (x_in[64:] - x).flatten(1).abs().max(1).values
        used.extend(per_sample.tolist())
        if sampling == "batch":
            assert per_sample.max() - per_sample.min() < 1e-6  # one eps for the whole batch
    assert min(used) >= 0.1 - 1e-6 and max(used) <= 0.3 + 1e-6
    assert min(used) < 0.14 and max(used) > 0.26  # it really spans the range


def test_pgd_adversarial_training_with_the_pcl_eps_range():
    # The PCL recipe: PGD with eps ~ U[0.1, 0.5] per batch, step eps/4: every batch stays inside its own eps.
    cfg = AdvTrainConfig(attack="pgd", eps=[0.1, 0.5], steps=5, step_size="eps/4", pairing="concat", ratio=0.5)
    batcher = AdversarialBatcher(cfg, create_model("tiny", 1, 10, 8).eval(), seed=0)
    x, y = digits_batches(1, 64)[0]
    x = x.clamp(0.3, 0.7)
    reached = []
    for _ in range(30):
        x_in, _, _ = batcher.make_batch(x, y)
        reached.append((x_in[64:] - x).abs().max().item())  # PGD's sign steps reach the eps of the batch
    assert min(reached) >= 0.1 - 1e-6 and max(reached) <= 0.5 + 1e-6
    assert min(reached) < 0.2 and max(reached) > 0.4


# -- the trainer and defenses: phases, optimizer reset, alpha logging, checkpoint round trip --------------------------
def test_pc_loss_switches_phase_at_warmup_and_resets_optimizer(tmp_path):
    cfg, path = load_profile("quickstart", ["epochs=4", "eval.robust_every=0", "adv_train.attack=none",
                                            "defense=pc_loss", "defense.warmup_epochs=2",
                                            "schedule={name: multistep, milestones: [1], gamma: 0.5, per_phase: true}"])
    run = prepare_run(cfg, tmp_path / "pc", path)
    assert run_training(run.root, device="cpu") == "finished"
    records = [r for r in read_metrics(run.metrics) if r["kind"] == "epoch"]
    assert [r["phase"] for r in records] == ["warmup", "warmup", "pc_lc", "pc_lc"]
    lr = cfg.optimizer.lr  # the schedule restarts with the phase: milestone 1 counts from each phase's start
    assert [r["lr"] for r in records] == pytest.approx([lr, lr / 2, lr, lr / 2])
    assert all("loss_pc" not in r for r in records[:2]) and all("loss_pc" in r for r in records[2:])
    batches = records[0]["step"]
    ckpt = read_checkpoint(run.last)
    steps = {int(s["step"]) for s in ckpt["optimizer"]["state"].values()}
    assert steps == {2 * batches}  # Adam restarted at epoch 3: two epochs of steps, not four
    assert records[-1]["test_clean_acc"] > 0.8

    # The adaptive evaluation attacks the PC-LC objective itself.
    data = read_checkpoint(run.best)
    loss = adaptive_loss(data, run.best)
    assert loss.__name__ == "pc_lc"
    report, _ = evaluate_checkpoint(run.best, [adaptive_protocol(loss, [0.1], "linf")], n=60)
    rows = [r for r in report["results"] if r["protocol"] == "adaptive"]
    assert [r["label"] for r in rows] == ["PGD-100x2 pc_lc", "APGD-100 pc_lc"]
    assert rows[0]["attacked"] > 0


def test_ccn_run_logs_alphas_and_checkpoint_reloads_same_outputs(tmp_path):
    from workbench import load_model

    cfg, path = load_profile("quickstart", ["epochs=2", "eval.robust_every=0", "adv_train.attack=none",
                                            "defense=ccn"])
    run = prepare_run(cfg, tmp_path / "ccn", path)
    assert run_training(run.root, device="cpu") == "finished"
    records = [r for r in read_metrics(run.metrics) if r["kind"] == "epoch"]
    assert {"alpha_conv1", "alpha_conv2", "alpha_fc1", "alpha_fc2"} <= set(records[-1])
    assert records[-1]["test_clean_acc"] > 0.6
    ckpt = read_checkpoint(run.last)
    assert "stages.logits.alpha" in ckpt["state_dict"] and not any(k.endswith(".ones") for k in ckpt["state_dict"])
    model = load_model(run.last)
    assert sum(isinstance(m, (CompactConv2d, CompactLinear)) for m in model.modules()) == 4
    x, y = digits("test")
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(records[-1]["test_clean_acc"], abs=1e-9)  # the reloaded model is the trained one


def test_resume_across_the_pc_phase_switch_is_exact(tmp_path):
    """Stopped mid-epoch right after the optimizer reset and the schedule restart, then resumed == straight."""

    overrides = ["epochs=3", "eval.robust_every=0", "adv_train.attack=none", "defense=pc_loss",
                 "defense.warmup_epochs=1", "schedule={name: multistep, milestones: [1], gamma: 0.5, per_phase: true}"]
    cfg, path = load_profile("quickstart", overrides)
    straight = prepare_run(cfg, tmp_path / "a", path)
    run_training(straight.root, device="cpu")

    cfg, path = load_profile("quickstart", overrides)
    split = prepare_run(cfg, tmp_path / "b", path)

    assert train_stopped_at(split, epoch=1, batch=3) == "stopped"
    assert run_training(split.root, device="cpu") == "finished"
    a, b = read_checkpoint(straight.last), read_checkpoint(split.last)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
