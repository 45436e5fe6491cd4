"""Property-based fuzzing of checkpoint loading: mutated genuine files, random zip layouts, random data.pkl
and random recipes. Reading and building may succeed or raise one-line WorkbenchErrors; nothing else.

The default suite runs a few dozen examples per property; `-m slow` runs thousands. Run with
`--hypothesis-show-statistics` to see how the examples ended (the `event` lines).
"""

from __future__ import annotations

import io
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from test_checkpoint_hostile import (Call, Claim, Entry, genuine_data, marked, one_line, recipe, saved,
                                     torch_entries, zip_bytes)
from workbench.checkpoint import check_recipe, meta_model, model_from_checkpoint, read_checkpoint
from workbench.errors import WorkbenchError

QUICK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])
LONG = settings(QUICK, max_examples=3000)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def pcl_data() -> dict:
    # A small model with auxiliary state, so both the model and the prototype head get exercised.
    return genuine_data(recipe(options={"width": 2, "hidden": 8}, defense="pcl", params={"heads": ["fc1"]}))


@pytest.fixture(scope="module")
def genuine(folder, pcl_data) -> tuple[bytes, list[Entry]]:
    blob = saved(folder, pcl_data, "genuine.pt").read_bytes()
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        entries = [Entry(info.filename, archive.read(info)) for info in archive.infolist()]
    return blob, entries


def kind_of(msg: str) -> str:
    """A refusal's gist for the statistics: its first words, up to any number, name or quote."""
    words = []
    for word in msg.lstrip(": ").split():
        if any(ch.isdigit() or ch in "'/(." for ch in word) or len(words) == 7:
            break
        words.append(word)
    return " ".join(words)


def attempt(path: Path, head: str = "softmax") -> str:
    """Read and build `path`; returns how it ended ('loaded' or the refusal's kind). Any other exception fails."""
    try:
        data = read_checkpoint(path)
    except WorkbenchError as exc:
        msg = str(exc)
        assert one_line(msg) and str(path) in msg, msg
        return "read refused: " + kind_of(msg[len(str(path)):])
    return attempt_model(data, str(path), head)


def attempt_model(data, path: str, head: str = "softmax") -> str:
    try:
        model = model_from_checkpoint(data, path, head=head)
    except WorkbenchError as exc:
        msg = str(exc)
        assert one_line(msg) and msg.startswith(path), msg
        return "model refused: " + kind_of(msg[len(path):])
    assert not model.training
    return "loaded"


def _write(folder: Path, blob: bytes) -> Path:
    path = folder / "fuzz.pt"
    path.write_bytes(blob)
    return path


# -- byte-level mutations of a genuine file ---------------------------------------------------------------


def _regions(blob: bytes) -> list[tuple[int, int]]:
    """The parts of the file worth hitting: zip headers, the central directory, data.pkl."""
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        infos = archive.infolist()
        start_dir = archive.start_dir
    regions = [(start_dir, len(blob))]
    for info in infos:
        head = info.header_offset
        end = head + 30 + len(info.filename) + 80
        regions.append((head, min(end, len(blob))))
        if info.filename.endswith("data.pkl"):
            regions.append((head, min(head + 200 + info.compress_size, len(blob))))
    return regions


def mutate_bytes(draw, blob: bytes) -> bytes:
    data = bytearray(blob)
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
    start, end = draw(st.sampled_from([(0, len(blob)), *_regions(blob)]))
    pos = draw(st.integers(start, max(start, end - 1)))
    event(f"bytes: {kind}")
    if kind == "flip":
        for offset in draw(st.lists(st.integers(0, 64), min_size=1, max_size=6)):
            i = min(pos + offset, len(data) - 1)
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        del data[pos:]
    elif kind == "insert":
        data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
    elif kind == "delete":
        del data[pos:pos + draw(st.integers(1, 256))]
    else:
        chunk = draw(st.binary(min_size=1, max_size=16))
        data[pos:pos + len(chunk)] = chunk
    return bytes(data)


def _check_mutated_bytes(folder, genuine, data):
    blob = mutate_bytes(data.draw, genuine[0])
    event(attempt(_write(folder, blob), data.draw(st.sampled_from(["softmax", "prototype"]))))


@QUICK
@given(data=st.data())
def test_mutated_bytes(folder, genuine, data):
    _check_mutated_bytes(folder, genuine, data)


@pytest.mark.slow
@LONG
@given(data=st.data())
def test_mutated_bytes_long(folder, genuine, data):
    _check_mutated_bytes(folder, genuine, data)


# -- zip-level mutations: entries reordered, dropped, renamed, lying about themselves ----------------------


def mutate_entries(draw, entries: list[Entry]) -> list[Entry]:
    out = list(entries)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["permute", "drop", "duplicate", "rename", "lie", "payload", "deflate"]))
        event(f"zip: {kind}")
        i = draw(st.integers(0, len(out) - 1)) if out else 0
        if kind == "permute":
            out = draw(st.permutations(out))
        elif kind == "drop" and out:
            del out[i]
        elif kind == "duplicate" and out:
            out.insert(draw(st.integers(0, len(out))), out[i])
        elif kind == "rename" and out:
            name = draw(st.sampled_from(["archive/data/0", "archive/data.pkl", "other/data.pkl", "data.pkl",
                                         "archive/data/99", "archive/version", "archive/data/\u00e9"]))
            out[i] = Entry(name, out[i].payload)
        elif kind == "lie" and out:
            size = draw(st.integers(0, 2**32 - 1))
            field = draw(st.sampled_from(["usize", "csize", "crc"]))
            out[i] = Entry(out[i].name, out[i].payload, **{field: size})
        elif kind == "payload" and out:
            out[i] = Entry(out[i].name, draw(st.binary(max_size=64)))
        elif kind == "deflate" and out:
            import zlib

            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            packed = c.compress(out[i].payload) + c.flush()
            out[i] = Entry(out[i].name, packed, method=8, usize=len(out[i].payload), crc=zlib.crc32(out[i].payload))
    return out


def _check_mutated_zip(folder, genuine, data):
    blob = zip_bytes(mutate_entries(data.draw, genuine[1]))
    event(attempt(_write(folder, blob), data.draw(st.sampled_from(["softmax", "prototype"]))))


@QUICK
@given(data=st.data())
def test_mutated_zip(folder, genuine, data):
    _check_mutated_zip(folder, genuine, data)


@pytest.mark.slow
@LONG
@given(data=st.data())
def test_mutated_zip_long(folder, genuine, data):
    _check_mutated_zip(folder, genuine, data)


# -- data.pkl: the genuine one mutated, random bytes, and random objects pickled the way torch does ---------

_DTYPES = [torch.float32, torch.float64, torch.uint8, torch.bool, torch.int64, torch.float16, torch.bfloat16]
_CALLS = [bytearray, set, complex, OrderedDict, torch.Size, torch.device, torch.FloatTensor, torch.UntypedStorage,
          torch.zeros, dict, list, getattr, print]


def claims() -> st.SearchStrategy:
    """A tensor declaration: the shape, numel and record need not agree."""
    return st.builds(lambda dtype, shape, payload, numel: Claim(dtype, shape, payload, numel),
                     st.sampled_from(_DTYPES), st.lists(st.integers(0, 6), max_size=3),
                     st.one_of(st.none(), st.binary(max_size=64)), st.one_of(st.none(), st.integers(-2, 2**40)))


def calls() -> st.SearchStrategy:
    small = st.one_of(st.integers(-4, 2**20), st.text(max_size=4), st.none())
    return st.builds(lambda fn, args: Call(fn, *args), st.sampled_from(_CALLS), st.lists(small, max_size=3))


def values() -> st.SearchStrategy:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.binary(max_size=8),
                       claims(), calls())
    return st.recursive(leaves, lambda kids: st.one_of(st.lists(kids, max_size=4), st.tuples(kids, kids),
                                                        st.dictionaries(st.text(max_size=6), kids, max_size=4)),
                        max_leaves=12)


def random_pickle(draw, entries: list[Entry], pcl: dict) -> list[Entry]:
    kind = draw(st.sampled_from(["mutated", "random_bytes", "objects", "checkpoint_with_objects"]))
    event(f"pickle: {kind}")
    if kind in ("objects", "checkpoint_with_objects"):
        obj = draw(values())
        if kind == "checkpoint_with_objects":
            key = draw(st.sampled_from(["x", "state_dict", "model", "auxiliary", "history"]))
            obj = marked({**pcl, key: obj})
        return torch_entries(obj)
    pkl = entries[0].payload
    assert entries[0].name.endswith("data.pkl")
    if kind == "random_bytes":
        pkl = b"\x80\x02" + draw(st.binary(max_size=256))
    else:
        pkl = _mutate_pickle(draw, pkl)
    return [Entry(entries[0].name, pkl), *entries[1:]]


def _mutate_pickle(draw, pkl: bytes) -> bytes:
    data = bytearray(pkl)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data) - 1)) if data else 0
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[pos:pos + draw(st.integers(1, 8))]
    return bytes(data)


def _check_random_pickle(folder, genuine, pcl_data, data):
    blob = zip_bytes(random_pickle(data.draw, genuine[1], pcl_data))
    event(attempt(_write(folder, blob), data.draw(st.sampled_from(["softmax", "prototype"]))))


@QUICK
@given(data=st.data())
def test_random_data_pkl(folder, genuine, pcl_data, data):
    _check_random_pickle(folder, genuine, pcl_data, data)


@pytest.mark.slow
@LONG
@given(data=st.data())
def test_random_data_pkl_long(folder, genuine, pcl_data, data):
    _check_random_pickle(folder, genuine, pcl_data, data)


# -- recipes and state dicts ------------------------------------------------------------------------------

_ANY = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**7), st.floats(allow_nan=True), st.text(max_size=5),
                 st.lists(st.integers(-2, 5), max_size=3))
_OPTION_NAMES = ["width", "hidden", "depth", "widen", "blocks_per_stage", "dropout", "fc_width", "batch_norm", "x"]
_OPTION_VALUES = st.one_of(st.integers(-3, 100), st.integers(-3, 100), st.sampled_from([0, 1, 2**20, 10**9]), _ANY)
_PARAM_VALUES = st.one_of(_ANY, st.just(["fc1"]), st.just([{"tap": "fc1", "fc": [10**6]}]), st.just([{"tap": "x"}]))


def recipe_changes(draw, names: list[str], defenses: list[str]) -> dict:
    """A few recipe fields redrawn; each is junk about one time in five, else plausible (so builds run)."""
    def field(plausible):
        return draw(_ANY) if draw(st.integers(0, 4)) == 4 else draw(plausible)  # hypothesis favours 0

    fields = {
        "name": lambda: field(st.sampled_from(names + ["nope"])),
        "in_channels": lambda: field(st.sampled_from([1, 3, 0, -1, 65])),
        "image_size": lambda: field(st.sampled_from([4, 8, 28, 32, 64, 1024, 0])),
        "num_classes": lambda: field(st.sampled_from([10, 200, 1, 0])),
        "options": lambda: field(st.dictionaries(st.sampled_from(_OPTION_NAMES), _OPTION_VALUES, max_size=3)),
        "normalize": lambda: field(st.one_of(st.none(), st.fixed_dictionaries({
            "mean": st.lists(st.floats(-1, 1), min_size=1, max_size=3),
            "std": st.lists(st.floats(), min_size=1, max_size=3)}))),
        "defense": lambda: field(st.fixed_dictionaries({
            "name": st.sampled_from(defenses),
            "params": st.dictionaries(st.sampled_from(["heads", "tau", "delta", "bound", "tap", "layers"]),
                                      _PARAM_VALUES, max_size=2)})),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=3, unique=True))
    return {key: fields[key]() for key in chosen}


def _state_variant(draw, state: dict):
    kind = draw(st.sampled_from(["same", "drop", "add", "retype", "reshape", "junk"]))
    event(f"state: {kind}")
    state = dict(state)
    key = draw(st.sampled_from(sorted(state)))
    if kind == "drop":
        del state[key]
    elif kind == "add":
        state[draw(st.text(max_size=6))] = torch.zeros(draw(st.integers(0, 4)))
    elif kind == "retype":
        state[key] = state[key].to(draw(st.sampled_from(_DTYPES)))
    elif kind == "reshape":
        state[key] = torch.zeros(draw(st.lists(st.integers(0, 5), max_size=3)))
    elif kind == "junk":
        return draw(_ANY)
    return state


def _check_recipe(pcl_data, data):
    from defenses import DEFENSES
    from workbench.data import DATASETS
    from workbench.models import MODELS

    changes = recipe_changes(data.draw, MODELS.names(), DEFENSES.names())
    base = {} if data.draw(st.integers(0, 19)) == 19 else pcl_data["model"]
    model_recipe = {**base, **changes}
    dataset = data.draw(_ANY) if data.draw(st.integers(0, 4)) == 4 else data.draw(st.sampled_from(DATASETS.names()))
    if isinstance(dataset, str) and dataset in DATASETS and data.draw(st.booleans()):  # sizes that fit: builds run
        spec = DATASETS.get(dataset)
        model_recipe.update(in_channels=spec.channels, image_size=spec.image_size, num_classes=spec.num_classes)
    checkpoint = {**pcl_data, "model": model_recipe, "dataset": dataset,
                  "state_dict": _state_variant(data.draw, pcl_data["state_dict"]),
                  "auxiliary": data.draw(st.one_of(st.just(pcl_data["auxiliary"]), _ANY))}
    event(attempt_model(checkpoint, "fuzz.pt", data.draw(st.sampled_from(["softmax", "prototype"]))))
    event("meta build: " + attempt_meta(model_recipe))


def attempt_meta(model_recipe) -> str:
    """check_recipe + the meta build alone (what build_model does before it allocates)."""
    try:
        check_recipe(model_recipe, "fuzz.pt")
        meta_model(model_recipe, "fuzz.pt")
    except WorkbenchError as exc:
        assert one_line(str(exc)) and str(exc).startswith("fuzz.pt"), str(exc)
        return kind_of(str(exc)[len("fuzz.pt"):])
    return "built"


@QUICK
@given(data=st.data())
def test_random_recipes(pcl_data, data):
    _check_recipe(pcl_data, data)


@pytest.mark.slow
@LONG
@given(data=st.data())
def test_random_recipes_long(pcl_data, data):
    _check_recipe(pcl_data, data)


def test_the_genuine_file_loads(folder, genuine):
    # The baseline the mutations start from: unmodified, it loads with both heads.
    path = _write(folder, genuine[0])
    assert attempt(path) == "loaded" and attempt(path, "prototype") == "loaded"
    assert attempt(_write(folder, zip_bytes(genuine[1]))) == "loaded"  # re-packed by hand, too
