"""Profiles: the bundled ones validate, YAML floats, `--set` overrides, and one-line schema errors."""

from __future__ import annotations


import pytest

from workbench.config import RunConfig, apply_overrides, list_profiles, load_profile, parse_yaml
from workbench.errors import WorkbenchError

BUNDLED = list_profiles()


# -- bundled profiles -----------------------------------------------------------------------


def test_bundled_profiles_exist():
    # The quickstart is the documented offline entry point; the MNIST recipes ship with it.
    assert {"quickstart", "pgd_at_mnist", "sm_mnist"} <= set(BUNDLED)
    for name, path in BUNDLED.items():
        assert path.is_file() and path.suffix == ".yaml" and path.stem == name


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_profile_validates(name):
    cfg, path = load_profile(name)
    assert isinstance(cfg, RunConfig)
    assert path == BUNDLED[name]
    assert cfg.name == name  # default run name is the profile's file name
    # The same profile given as a path resolves identically.
    cfg2, path2 = load_profile(str(BUNDLED[name]))
    assert path2 == BUNDLED[name]
    assert cfg2.model_dump() == cfg.model_dump()


def test_bundled_profile_values_are_the_documented_recipe():
    cfg, _ = load_profile("quickstart")
    assert cfg.dataset == "digits"
    assert cfg.model.name == "tiny" and cfg.model.options == {"width": 16, "hidden": 64}
    assert cfg.optimizer.name == "adam"
    assert isinstance(cfg.optimizer.lr, float) and cfg.optimizer.lr == pytest.approx(3e-3)
    assert cfg.adv_train.attack == "pgd" and cfg.adv_train.eps == pytest.approx(0.1)
    sm, _ = load_profile("sm_mnist")
    assert sm.optimizer.weight_decay == pytest.approx(5e-4)  # written `5e-4` in the file
    assert sm.model.options == {"dropout": 0.5}
    assert sm.model.normalize == {"mean": [0.5], "std": [1.0]}
    pgd, _ = load_profile("pgd_at_mnist")
    assert pgd.model.name == "small_cnn" and pgd.model.options == {}
    assert pgd.schedule.milestones == [55, 75, 90]


# -- YAML floats -----------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("1e-3", 1e-3), ("1E5", 1e5), ("-2e-4", -2e-4), ("+1e3", 1e3), ("5e-4", 5e-4),
    ("1.0e3", 1e3), ("1.5e-3", 1.5e-3), ("6.02e+23", 6.02e23), ("0.1", 0.1),
    ("-.5", -0.5),  # YAML 1.2 float (the loader's docstring promises YAML 1.2 floats)
])
def test_yaml_exponent_floats_parse_as_floats(text, value):
    parsed = parse_yaml(f"x: {text}")["x"]
    assert isinstance(parsed, float), f"{text!r} parsed as {parsed!r}"
    assert parsed == pytest.approx(value)


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("-3", -3), ("eps/4", "eps/4"), ("2.5*eps/steps", "2.5*eps/steps"), ("1e", "1e"),
    ("e3", "e3"), ("true", True), ("small_cnn", "small_cnn"),
])
def test_yaml_non_floats_keep_their_type(text, value):
    parsed = parse_yaml(f"x: {text}")["x"]
    assert parsed == value and type(parsed) is type(value)


def test_exponent_float_in_profile_file_validates(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("dataset: mnist\nmodel: small_cnn\noptimizer: {name: adam, lr: 1e-3, weight_decay: 5e-4}\n")
    cfg, _ = load_profile(str(path))
    assert cfg.optimizer.lr == pytest.approx(1e-3)
    assert cfg.optimizer.weight_decay == pytest.approx(5e-4)


# -- --set overrides -------------------------------------------------------------------------


def test_set_nested_key_keeps_siblings():
    base, _ = load_profile("quickstart")
    cfg, _ = load_profile("quickstart", ["eval.steps=7", "epochs=2", "optimizer.lr=5e-4"])
    assert cfg.eval.steps == 7
    assert cfg.epochs == 2
    assert isinstance(cfg.optimizer.lr, float) and cfg.optimizer.lr == pytest.approx(5e-4)
    # Only the named key changed: the rest of the eval / optimizer blocks is the profile's.
    assert cfg.eval.robust_subset == base.eval.robust_subset == 359
    assert cfg.eval.eps == base.eval.eps
    assert cfg.optimizer.name == "adam"
    assert cfg.model_dump(exclude={"eval", "epochs", "optimizer"}) == base.model_dump(exclude={"eval", "epochs", "optimizer"})


def test_set_list_value():
    cfg, _ = load_profile("quickstart", ["adv_train.eps=[0.1, 0.3]"])
    assert cfg.adv_train.eps == [pytest.approx(0.1), pytest.approx(0.3)]


def test_set_boolean_and_string_values():
    cfg, _ = load_profile("quickstart", ["adv_train.random_start=false", "description=a=b c"])
    assert cfg.adv_train.random_start is False
    assert cfg.description == "a=b c"  # only the first '=' separates key and value


def test_set_model_option_on_plain_string_model():
    path = BUNDLED["pgd_at_mnist"]
    assert isinstance(parse_yaml(path.read_text())["model"], str)  # `model: small_cnn`
    cfg, _ = load_profile("pgd_at_mnist", ["model.width=64"])
    assert cfg.model.name == "small_cnn"
    assert cfg.model.options == {"width": 64}


def test_set_on_plain_string_defense_and_schedule(tmp_path):
    path = tmp_path / "strings.yaml"
    path.write_text("dataset: mnist\nmodel: small_cnn\ndefense: softmax\nschedule: cosine\n")
    cfg, _ = load_profile(str(path), ["schedule.warmup_epochs=2", "defense.name=softmax"])
    assert cfg.schedule.name == "cosine" and cfg.schedule.warmup_epochs == 2
    assert cfg.defense.name == "softmax" and cfg.defense.params == {}


def test_set_does_not_touch_the_profile_file():
    before = BUNDLED["quickstart"].read_text()
    load_profile("quickstart", ["epochs=1"])
    assert BUNDLED["quickstart"].read_text() == before


def test_apply_overrides_creates_missing_blocks():
    data = apply_overrides({"dataset": "mnist"}, ["adv_train.attack=fgsm", "adv_train.eps=0.2"])
    assert data == {"dataset": "mnist", "adv_train": {"attack": "fgsm", "eps": 0.2}}


@pytest.mark.parametrize("item", ["foo", "=3", "a..b=1", ".a=1", "a.=1"])
def test_set_bad_syntax(item):
    with pytest.raises(WorkbenchError) as exc:
        load_profile("quickstart", [item])
    msg = str(exc.value)
    assert "\n" not in msg and "--set" in msg


def test_set_into_a_scalar_is_an_error():
    with pytest.raises(WorkbenchError) as exc:
        load_profile("quickstart", ["epochs.x=1"])
    assert "epochs" in str(exc.value) and "\n" not in str(exc.value)


def test_set_invalid_yaml_value():
    with pytest.raises(WorkbenchError) as exc:
        load_profile("quickstart", ["adv_train.eps=[0.1, 0.3"])
    assert "adv_train.eps" in str(exc.value) and "\n" not in str(exc.value)


def test_set_unknown_key_is_schema_checked():
    with pytest.raises(WorkbenchError) as exc:
        load_profile("quickstart", ["adv_train.epz=0.2"])
    msg = str(exc.value)
    assert "adv_train.epz" in msg and str(BUNDLED["quickstart"]) in msg and "\n" not in msg


def test_set_wrong_type_names_key():
    with pytest.raises(WorkbenchError) as exc:
        load_profile("quickstart", ["epochs=zero"])
    msg = str(exc.value)
    assert "epochs" in msg and "zero" in msg and "\n" not in msg


# -- schema errors: one line naming the file and the key ---------------------------------------

BASE = "dataset: mnist\nmodel: small_cnn\n"

BAD_PROFILES = {
    # id: (profile text, text the message must contain to name the offending key)
    "unknown_top_level_key": (BASE + "epochz: 3\n", "epochz"),
    "unknown_nested_key": (BASE + "adv_train:\n  attack: pgd\n  epz: 0.3\n", "adv_train.epz"),
    "wrong_type": (BASE + 'epochs: "ten"\n', "epochs"),
    "wrong_type_nested": (BASE + "eval: {steps: many}\n", "eval.steps"),
    "wrong_type_union": (BASE + "adv_train: {eps: abc}\n", "adv_train.eps:"),
    "missing_required": ("model: small_cnn\nepochs: 3\n", "dataset"),
    "bad_eps_range": (BASE + "adv_train:\n  attack: pgd\n  eps: [0.5, 0.1]\n", "adv_train.eps"),
    "negative_eps": (BASE + "adv_train: {attack: pgd, eps: -0.1}\n", "adv_train.eps"),
    "unknown_dataset": ("dataset: mnistt\nmodel: small_cnn\n", "dataset"),
    "unknown_model": ("dataset: mnist\nmodel: small_cnnn\n", "model"),
    "unknown_defense": (BASE + "defense: softmaxx\n", "defense"),
    "unknown_model_option": ("dataset: mnist\nmodel: {name: small_cnn, widht: 64}\n", "widht"),
    "model_option_wrong_type": ("dataset: digits\nmodel: {name: tiny, width: abc}\n", "width"),
    "model_does_not_fit_dataset": ("dataset: mnist\nmodel: vgg13\n", "model"),
    "concat_pairing_ratio": (BASE + "adv_train: {attack: pgd, pairing: concat, ratio: 0.8}\n", "ratio"),
    "unknown_optimizer": (BASE + "optimizer: {name: rmsprop}\n", "optimizer"),
    "bad_step_size_expression": (BASE + "adv_train: {attack: pgd, step_size: eps/x}\n", "adv_train.step_size"),
}

# Extra words the message must carry so the user knows which value is wrong.
MENTIONS = {
    "unknown_dataset": "mnistt",
    "unknown_model": "small_cnnn",
    "unknown_defense": "softmaxx",
    "model_does_not_fit_dataset": "vgg13",
    "concat_pairing_ratio": "concat",
    "unknown_optimizer": "rmsprop",
}


@pytest.mark.parametrize("case", sorted(BAD_PROFILES))
def test_bad_profile_is_one_line_naming_file_and_key(tmp_path, case):
    text, key = BAD_PROFILES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    with pytest.raises(WorkbenchError) as exc:
        load_profile(str(path))
    msg = str(exc.value)
    assert msg.strip() and "\n" not in msg and "\r" not in msg, msg
    assert str(path) in msg, msg
    assert key in msg, msg
    if case in MENTIONS:
        assert MENTIONS[case] in msg, msg


@pytest.mark.parametrize("text", [
    BASE + "adv_train: {eps: [0.1\n",
    BASE + "epochs: 3\n  foo: : bar\n",
    BASE + "eval:\n\tsteps: 3\n",
])
def test_invalid_yaml_is_one_line_naming_file_and_line(tmp_path, text):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(WorkbenchError) as exc:
        load_profile(str(path))
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg and "YAML" in msg, msg
    line = msg.split(str(path), 1)[1]
    assert line.startswith(":") and line[1].isdigit(), msg  # path:LINE


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n"])
def test_profile_that_is_not_a_mapping(tmp_path, text):
    path = tmp_path / "notmap.yaml"
    path.write_text(text)
    with pytest.raises(WorkbenchError) as exc:
        load_profile(str(path))
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_missing_profile_file_and_unknown_name(tmp_path):
    with pytest.raises(WorkbenchError) as exc:
        load_profile(str(tmp_path / "nope.yaml"))
    assert "nope.yaml" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(WorkbenchError) as exc:
        load_profile("nosuchprofile")
    msg = str(exc.value)
    assert "nosuchprofile" in msg and "quickstart" in msg and "\n" not in msg


def test_profile_path_without_yaml_suffix(tmp_path):
    path = tmp_path / "myprofile.txt"
    path.write_text(BASE)
    cfg, found = load_profile(str(path))
    assert found == path and cfg.dataset == "mnist" and cfg.name == "myprofile"


def test_valid_minimal_profile_gets_defaults(tmp_path):
    path = tmp_path / "mini.yaml"
    path.write_text(BASE)
    cfg, _ = load_profile(str(path))
    assert cfg.name == "mini"
    assert cfg.defense.name == "softmax" and cfg.adv_train.attack == "none" and not cfg.adv_train.enabled
    assert cfg.optimizer.name == "sgd"


@pytest.mark.parametrize("override, key", [
    ("adv_train.step_size=eps/0", "adv_train.step_size"),
    ("adv_train.step_size=0*eps", "adv_train.step_size"),
    ("adv_train.step_size=0", "adv_train.step_size"),
    ("optimizer.betas=[0.9]", "optimizer.betas"),
    ("optimizer.betas=[1.5, 0.9]", "optimizer.betas"),
    ("eval.eps=.inf", "eval.eps"),
    ("optimizer.lr=.nan", "optimizer.lr"),
    ("adv_train.eps=[0.1, .inf]", "adv_train.eps"),
])
def test_values_that_would_crash_training_are_rejected_up_front(override, key):
    """Each of these once validated and then crashed (or silently did nothing) at train time."""
    with pytest.raises(WorkbenchError) as err:
        load_profile("quickstart", ["optimizer.name=adam", override])
    assert key in str(err.value) and "\n" not in str(err.value)


def test_concat_pairing_checks_the_default_ratio_too():
    with pytest.raises(WorkbenchError, match="adv_train.ratio"):
        load_profile("quickstart", ["adv_train.attack=fgsm", "adv_train.pairing=concat", "adv_train.ratio=1.0"])
    data = {"dataset": "digits", "model": "tiny", "adv_train": {"attack": "fgsm", "pairing": "concat"}}
    from workbench.config import validate_config

    with pytest.raises(WorkbenchError, match="adv_train.ratio"):
        validate_config(data, "inline")
