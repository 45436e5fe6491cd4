"""Property-based fuzzing of the profile parser: any file and any `--set` either loads or fails with one
`WorkbenchError` line, quickly and in bounded memory."""

from __future__ import annotations

import resource
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.config import apply_overrides, load_profile, parse_yaml
from workbench.config.schema import RunConfig
from workbench.errors import WorkbenchError

FAST = dict(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
MANY = {**FAST, "max_examples": 1500}


def _keys(model, prefix="") -> list[str]:
    """Every dotted key of the schema, so the fuzzer reaches deep into validation, not just the top level."""
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        sub = getattr(field.annotation, "model_fields", None)
        if sub is not None:
            out += _keys(field.annotation, f"{prefix}{name}.")
    return out


KEYS = _keys(RunConfig) + ["model.width", "model.hidden", "model.options.width", "defense.params.eps",
                           "defense.params.heads", "defense.params.steps", "defense.params.xi"]
NAMES = ["quickstart", "digits", "mnist", "tiny", "small_cnn", "resnet56", "pcl", "adr", "ccn", "pgd", "sgd", "adam",
         "cosine", "multistep", "off", "auto", "none", "gap", "fc1"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(NAMES), st.text(max_size=20), st.sampled_from(["eps/4", "2.5*eps/steps", "1e-3", "0x1f", "~"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=8)), inner,
                                                 max_size=4)), max_leaves=12)


def _nested(key: str, value):
    out = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


profiles = st.dictionaries(st.sampled_from(KEYS), values, max_size=8).map(
    lambda flat: {k: v for key, value in flat.items() for k, v in _nested(key, value).items()})
override_values = st.one_of(values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
                            st.text(max_size=30))
overrides = st.lists(st.one_of(
    st.tuples(st.sampled_from(KEYS), override_values).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=30)), max_size=4)


def _loads_or_refuses(call) -> None:
    t0 = time.monotonic()
    try:
        call()
    except WorkbenchError as exc:
        assert str(exc) and "\n" not in str(exc).strip()
    assert time.monotonic() - t0 < 20.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture
def bounded_memory():
    before = _peak_mb()
    yield
    assert _peak_mb() - before < 800, "fuzzing the profile parser grew the peak memory by over 800 MB"


def _check_text(tmp_path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    _loads_or_refuses(lambda: load_profile(str(path)))


def _check_bytes(tmp_path, data: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    _loads_or_refuses(lambda: load_profile(str(path)))


def _check_profile(tmp_path, data: dict, sets: list[str]) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump({"dataset": "digits", "model": "tiny", **data}), encoding="utf-8")
    _loads_or_refuses(lambda: load_profile(str(path), sets))


def _check_overrides(sets: list[str]) -> None:
    _loads_or_refuses(lambda: load_profile("quickstart", sets))


@settings(**FAST)
@given(text=st.text(max_size=400))
def test_any_text_profile_loads_or_refuses(tmp_path, bounded_memory, text):
    _check_text(tmp_path, text)


@settings(**FAST)
@given(data=st.binary(max_size=400))
def test_any_bytes_profile_loads_or_refuses(tmp_path, bounded_memory, data):
    _check_bytes(tmp_path, data)


@settings(**FAST)
@given(data=profiles, sets=overrides)
def test_schema_shaped_profile_loads_or_refuses(tmp_path, bounded_memory, data, sets):
    _check_profile(tmp_path, data, sets)


@settings(**FAST)
@given(sets=overrides)
def test_any_set_override_loads_or_refuses(bounded_memory, sets):
    _check_overrides(sets)


@settings(**FAST)
@given(text=st.text(alphabet="[]{}:-, \n&*ab!", max_size=300))
def test_yaml_structure_soup_parses_or_refuses(text):
    _loads_or_refuses(lambda: apply_overrides({}, [f"a={text}"]) and parse_yaml(text))


@pytest.mark.slow
@settings(**MANY)
@given(data=profiles, sets=overrides, text=st.text(max_size=2000))
def test_many_profiles_load_or_refuse(tmp_path, bounded_memory, data, sets, text):
    _check_profile(tmp_path, data, sets)
    _check_overrides(sets)
    _check_text(tmp_path, text)
