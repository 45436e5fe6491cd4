"""One source of truth for the attack surface: every attack declares its metadata, and the CLI (`--attack`,
shorthand flags, `workbench attacks`), the custom protocol and the TUI catalog all read it -- a plugin attack
in a throwaway module included."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import fields

import pytest
from torch import nn

from attacks import ATTACKS, all_meta, attack_meta
from attacks.registry import PLUGIN_ENV, load_plugins
from workbench.attack_meta import SHARED_OPTIONS, AttackMeta, Param, parse_floats, split_choice
from workbench.errors import WorkbenchError
from workbench.evaluation import AttackOptions, custom_protocol, parse_choice


def _tiny_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()


def _sample(p: Param):
    """A valid value for a parameter without a default."""
    value = {int: max(1, int(p.minimum or 1)), float: 0.01, bool: True, str: (p.choices or ("x",))[0]}[p.type]
    return (value,) if p.many else value


# -- every registered attack ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_declares_metadata_its_constructor_accepts(name):
    cls = ATTACKS.get(name)
    own = vars(cls)
    assert "label" in own and "params" in own, f"{name} must declare its own label and params"
    meta = attack_meta(name)
    assert meta.summary and meta.title and meta.norms
    kwargs = {p.name: p.default if p.default is not None else _sample(p) for p in meta.params}
    sweep = kwargs.pop(meta.sweep_param, None)  # the engine passes one swept value at a time
    if sweep is not None:
        kwargs[meta.sweep_param] = sweep[0]
    attack = cls(_tiny_model(), eps=0.1 if meta.bounded else None, **kwargs)  # a name it lacks: TypeError
    for key, value in kwargs.items():
        if key in vars(attack):
            assert getattr(attack, key) == value, f"{name}.{key}"


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_builds_from_the_generic_option(name):
    # autoattack, apgd_t and fab_t have no shorthand flag: --attack NAME is how the CLI reaches them.
    meta = attack_meta(name)
    norm = meta.norms[0]
    protocol = custom_protocol([parse_choice(name)], AttackOptions(eps=[0.1, 0.2], norm=norm))
    (spec,) = protocol.specs
    assert spec.attack == name and spec.label == meta.title
    value = spec.sweep[0] if spec.sweep else None
    assert isinstance(spec.build(_tiny_model(), value), ATTACKS.get(name))


def test_shorthand_flags_are_unique_and_clash_with_no_option_of_the_attack_command():
    import typer

    from workbench.cli import app

    command = typer.main.get_command(app).commands["attack"]
    own = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    flags = [m.flag for m in all_meta() if m.flag]
    assert len(flags) == len(set(flags)) and not own & set(flags)
    assert {"--fgsm", "--bim", "--mim", "--pgd", "--apgd", "--square", "--autoattack", "--multitarget", "--spsa",
            "--cw", "--deepfool"} <= set(flags)  # the flags users have scripts with


def test_metadata_travels_as_json_unchanged():
    for meta in all_meta():
        assert AttackMeta.from_json(json.loads(json.dumps(meta.to_json()))) == meta


def test_settings_object_holds_exactly_the_attack_commands_options():
    from workbench.cli import AttackSettings, attack

    names = [f.name for f in fields(AttackSettings)]
    assert names == list(inspect.signature(attack).parameters)
    assert set(SHARED_OPTIONS) <= set(names)  # each shared option an attack parameter may follow exists


# -- the custom protocol keeps the command line's meaning -----------------------------------------

def _specs(*choices: str, norm: str = "linf", eps=(0.1, 0.2), **shared):
    protocol = custom_protocol([parse_choice(c) for c in choices], AttackOptions(list(eps), norm, shared))
    return {s.label: s for s in protocol.specs}


def test_shared_options_reach_only_the_attacks_that_follow_them():
    specs = _specs("pgd", "cw", "deepfool", "square", norm="l2", eps=(0.5, 1.0), steps=20, cw_steps=30,
                   queries=50, d=[0.2, 0.1])
    assert specs["PGD-l2"].params == {"steps": 20, "restarts": 1, "random_start": True, "loss": "ce", "norm": "l2"}
    assert specs["C&W-L2"].params["steps"] == 30 and specs["C&W-L2"].thresholds == [0.5, 1.0]  # min-norm at eps
    assert specs["DeepFool"].params["steps"] == 30 and specs["DeepFool"].sweep == [0.1, 0.2]  # --d is its sweep
    assert specs["Square"].params["queries"] == 50 and "steps" not in specs["Square"].params


def test_defaults_and_labels_follow_the_declarations():
    specs = _specs("pgd", "apgd:loss=dlr", "autoattack:version=fast", "cw", "deepfool")
    assert specs["PGD"].params["steps"] == 40  # the command line's PGD-40, not the constructor's 10
    assert specs["PGD"].sweep == [0.1, 0.2]
    assert specs["APGD-DLR"].params["loss"] == "dlr" and specs["AutoAttack-fast"].params["version"] == "fast"
    assert specs["C&W-L2"].thresholds is None  # --norm linf: no L2 thresholds from L-inf eps
    assert specs["DeepFool"].sweep == [0.1, 0.2, 0.3, 0.4, 0.5]


def test_an_attack_value_beats_the_shared_option_and_repeats_are_told_apart():
    specs = _specs("pgd", "pgd:steps=5", "pgd", steps=20)
    assert list(specs) == ["PGD", "PGD steps=5"]  # the exact repeat runs once
    assert specs["PGD"].params["steps"] == 20 and specs["PGD steps=5"].params["steps"] == 5


def test_an_attack_outside_the_norm_or_a_bad_shared_value_is_refused():
    with pytest.raises(WorkbenchError, match="--fgsm supports --norm linf only"):
        _specs("fgsm", norm="l2")
    with pytest.raises(WorkbenchError, match="--kappa: C&W-L2 kappa: must be >= 0"):
        _specs("cw", norm="l2", kappa=-1.0)


# -- parsing --attack -------------------------------------------------------------------------------

def test_attack_text_splits_into_keys_and_list_values():
    assert split_choice("pgd") == ("pgd", {})
    assert split_choice("deepfool:max_ratio=0.1,0.2,steps=20") == ("deepfool", {"max_ratio": "0.1,0.2", "steps": "20"})
    choice = parse_choice("deepfool:max_ratio=0.1, 8/255,steps=20")
    assert choice.values == {"max_ratio": (0.1, 8 / 255), "steps": 20}
    assert parse_choice("pgd:random_start=no,step_size=2/255").values == {"random_start": False,
                                                                          "step_size": 2 / 255}


@pytest.mark.parametrize("text, message", [
    ("nope", "unknown attack 'nope'; choose one of: apgd, apgd_ce"),
    ("pgd:stepz=3", "pgd has no parameter 'stepz'; its parameters: steps, step_size, restarts"),
    ("pgd:steps=ten", "steps: 'ten' is not a whole number"),
    ("pgd:steps=0", "steps: must be >= 1 (got 0)"),
    ("autoattack:version=slow", "version: must be one of standard, fast (got 'slow')"),
    ("pgd:loss=hinge", "loss: must be one of ce, cw, dlr"),
    ("pgd:steps", "'steps' is not key=value"),
    ("pgd:steps=1,steps=2", "steps is given twice"),
    ("cw:c=nan", "c: nan is not a finite number"),
    (":steps=1", "give NAME or NAME:key=value"),
])
def test_bad_attack_text_is_one_line_naming_the_valid_choices(text, message):
    with pytest.raises(WorkbenchError) as err:
        parse_choice(text)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_eps_text_is_parsed_once_for_every_caller():
    assert parse_floats("0.1, 8/255", "--eps") == [0.1, 8 / 255]
    for text, reason in (("abc", "is not a number"), ("1/0", "is not a number"), ("-0.1", ">= 0"), ("inf", ">= 0")):
        with pytest.raises(WorkbenchError, match=reason):
            parse_floats(text, "--eps")


def test_a_plugin_module_that_does_not_import_is_one_line(monkeypatch):
    monkeypatch.setenv(PLUGIN_ENV, "workbench_no_such_attack_module")
    with pytest.raises(WorkbenchError) as err:
        load_plugins()
    assert str(err.value).startswith(f"{PLUGIN_ENV}: cannot import attack module 'workbench_no_such_attack_module'")
    assert "\n" not in str(err.value)


# -- a throwaway attack in a temporary module ------------------------------------------------------

PLUGIN = '''
"""A throwaway attack: one signed-gradient step of `scale` * eps."""
from attacks import Attack, project_linf, register_attack
from attacks.base import as_eps
from workbench.attack_meta import Param


@register_attack
class HalfStep(Attack):
    name = "halfstep"
    label = "Half-step x{scale}"
    summary = "one signed-gradient step of scale * eps"
    params = (Param("scale", float, 0.5, "fraction of eps to step", positive=True),)

    def __init__(self, model, eps=0.1, scale=0.5, **kwargs):
        super().__init__(model, eps, **kwargs)
        self.scale = scale

    def perturb(self, x, y, target):
        eps = as_eps(self.eps, x)
        return project_linf(x + self.scale * eps * self.input_grad(x, y, target).sign(), x, eps), None
'''


@pytest.fixture
def plugin_env(tmp_path, monkeypatch):
    (tmp_path / "wb_throwaway_attack.py").write_text(textwrap.dedent(PLUGIN))
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)
    monkeypatch.setenv("PYTHONPATH", path)  # the TUI's backend inherits the environment
    monkeypatch.setenv(PLUGIN_ENV, "wb_throwaway_attack")
    return {**os.environ, "WORKBENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _workbench(env, *args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "workbench", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return proc


def test_a_throwaway_attack_is_listed_runnable_and_in_the_tui_catalog(plugin_env, quickstart_run):
    listed = json.loads(_workbench(plugin_env, "attacks", "--json").stdout)["attacks"]
    meta = AttackMeta.from_json(next(a for a in listed if a["name"] == "halfstep"))
    assert meta.summary == "one signed-gradient step of scale * eps" and meta.flag is None
    assert meta.params == (Param("scale", float, 0.5, "fraction of eps to step", positive=True),)

    report = json.loads(_workbench(plugin_env, "attack", str(quickstart_run.best), "--attack", "halfstep",
                                   "--attack", "halfstep:scale=1", "--eps", "0.1", "--n", "40", "--device", "cpu",
                                   "--json", "--quiet").stdout)
    rows = {r["label"]: r for r in report["results"]}
    assert set(rows) == {"Half-step x0.5", "Half-step x1"} and {r["attack"] for r in rows.values()} == {"halfstep"}
    assert rows["Half-step x1"]["robust_accuracy"] <= report["clean_accuracy"]

    from workbench.tui.model.backend_client import BackendClient

    backend = BackendClient()  # a real backend process, started with this environment
    try:
        catalog = backend.attack_catalog()
    finally:
        backend.close()
    assert meta in catalog and [m.name for m in catalog if m.name != "halfstep"] == ATTACKS.names()


@pytest.mark.parametrize("args, message", [
    (["--pgdd"], "no such option: --pgdd (attack flags: --apgd --autoattack"),
    (["--attack", "nope"], "unknown attack 'nope'"),
    (["--attack", "fab_t:eta=2"], "fab_t has no parameter 'eta'; its parameters: steps, restarts, n_target_classes"),
    (["--pgd", "--attack", "pgd:steps=-1"], "steps: must be >= 1"),
])
def test_the_attack_command_refuses_bad_attack_choices_before_loading_anything(args, message, tmp_path):
    from typer.testing import CliRunner

    from workbench.cli import app

    result = CliRunner().invoke(app, ["attack", str(tmp_path / "missing.pt"), *args])
    assert isinstance(result.exception, WorkbenchError), result.output
    assert message in str(result.exception)
