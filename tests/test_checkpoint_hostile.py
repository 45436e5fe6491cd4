"""Hostile checkpoints: each is built for real (a genuine checkpoint re-packed, or a zip written by hand)
and must be refused with one WorkbenchError line, without spending memory or time on what it declares.

Memory is measured in a subprocess (VmHWM, reset between files) after a genuine load has paid for the
one-time imports, so what is measured is what the hostile file itself costs.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import workbench
from workbench import checkpoint_scan
from workbench.checkpoint import (FORMAT, VERSION, build_model, defense_from_checkpoint, model_from_checkpoint,
                                  read_checkpoint, save_checkpoint)
from workbench.errors import WorkbenchError
from workbench.models import MAX_PARAMETERS

MB = 2**20


def one_line(msg: str) -> bool:
    return bool(msg.strip()) and all(ch.isprintable() for ch in msg)


# -- writing torch zip files by hand ------------------------------------------------------------------


@dataclass
class Entry:
    """One zip record; `method`, `usize`, `csize` and `crc` default to the honest values of a stored record."""

    name: str
    payload: bytes
    method: int = 0
    usize: int | None = None
    csize: int | None = None
    crc: int | None = None


def zip_bytes(entries: list[Entry]) -> bytes:
    """A zip archive (local headers, central directory, end record) exactly as the entries declare it."""
    out, central = bytearray(), bytearray()
    for e in entries:
        name = e.name.encode()
        usize = len(e.payload) if e.usize is None else e.usize
        csize = len(e.payload) if e.csize is None else e.csize
        crc = zlib.crc32(e.payload) if e.crc is None else e.crc
        fields = (e.method, 0, 0x21, crc, csize, usize, len(name))
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0x800, *fields, 0, 0, 0, 0, 0, len(out)) + name
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0x800, *fields, 0) + name + e.payload
    n = len(entries)
    return bytes(out + central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), len(out), 0))


class Claim:
    """A tensor as the pickle declares it: dtype, shape and numel, and the record (if any) written for it."""

    def __init__(self, dtype, shape, payload: bytes | None = None, numel: int | None = None, **entry):
        self.dtype, self.shape, self.payload, self.entry = dtype, tuple(shape), payload, entry
        self.numel = numel if numel is not None else torch.Size(self.shape).numel()


class _StorageRef:
    def __init__(self, key: str, claim: Claim):
        self.key, self.claim = key, claim


_STORAGE_TYPES = torch.storage._dtype_to_storage_type_map()


class TorchPickler(pickle.Pickler):
    """Pickles like torch.save (protocol 2, tensors as `_rebuild_tensor_v2` over persistent storage ids)."""

    def __init__(self, fh):
        super().__init__(fh, protocol=2)
        self.records: dict[str, Claim] = {}

    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            storage_type = getattr(torch, _STORAGE_TYPES[obj.claim.dtype])
            return ("storage", storage_type, obj.key, "cpu", obj.claim.numel)
        return None

    def reducer_override(self, obj):
        if isinstance(obj, torch.Tensor):
            t = obj.detach().contiguous()
            obj = Claim(t.dtype, t.shape, t.reshape(-1).view(torch.uint8).numpy().tobytes())
        if not isinstance(obj, Claim):
            return NotImplemented
        key = str(len(self.records))
        self.records[key] = obj
        stride = torch.empty(obj.shape, device="meta").stride()
        return (torch._utils._rebuild_tensor_v2, (_StorageRef(key, obj), 0, obj.shape, stride, False, OrderedDict()))


def torch_entries(obj, prefix: str = "archive") -> list[Entry]:
    """The records torch.save would write for `obj` (any Claim in it written as it says)."""
    import io

    buf = io.BytesIO()
    pickler = TorchPickler(buf)
    pickler.dump(obj)
    entries = [Entry(f"{prefix}/data.pkl", buf.getvalue()), Entry(f"{prefix}/byteorder", b"little")]
    for key, claim in pickler.records.items():
        if claim.payload is not None:
            entries.append(Entry(f"{prefix}/data/{key}", claim.payload, **claim.entry))
    return entries + [Entry(f"{prefix}/version", b"3\n")]


def write_checkpoint_zip(path: Path, obj) -> Path:
    path.write_bytes(zip_bytes(torch_entries(obj)))
    return path


def deflated_zeros(n: int, chunk: int = 1 << 20) -> tuple[bytes, int]:
    """A raw deflate stream of n zero bytes and its CRC, without holding n bytes: after a full flush every
    chunk of zeros compresses to the same block."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(n, chunk)
    crc, zeros = 0, bytes(chunk)
    for _ in range(whole):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(bytes(rest), crc)
    return block * whole + c.compress(bytes(rest)) + c.flush(zlib.Z_FINISH), crc


class Call:
    """Pickles as a call of `fn(*args)`: what a hostile pickle asks the loader to run."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


# -- genuine checkpoints -------------------------------------------------------------------------------


def recipe(name="tiny", channels=1, size=8, classes=10, options=None, defense="softmax", params=None) -> dict:
    return {"name": name, "in_channels": channels, "num_classes": classes, "image_size": size, "normalize": None,
            "options": dict(options if options is not None else {"width": 16, "hidden": 64}),
            "defense": {"name": defense, "params": dict(params or {})}}


def genuine_model(model_recipe: dict | None = None, dataset: str = "digits") -> tuple[torch.nn.Module, dict]:
    """An untrained model built from `model_recipe`, and a checkpoint's data for it (with auxiliary state)."""
    from defenses import create_defense

    model_recipe = model_recipe or recipe()
    torch.manual_seed(0)
    model = build_model(model_recipe)
    spec = model_recipe["defense"]
    shape = (model_recipe["in_channels"], model_recipe["image_size"], model_recipe["image_size"])
    aux = create_defense(spec["name"], spec["params"], model_recipe["num_classes"]).attach(model, shape)
    return model, {"model": model_recipe, "state_dict": model.state_dict(), "dataset": dataset,
                   "auxiliary": aux.state_dict() if aux is not None else None, "history": [], "flag": True}


def genuine_data(model_recipe: dict | None = None, dataset: str = "digits") -> dict:
    return genuine_model(model_recipe, dataset)[1]


def saved(tmp_path: Path, data: dict, name: str = "ck.pt") -> Path:
    path = tmp_path / name
    save_checkpoint({k: v for k, v in data.items() if k not in ("format", "version")}, path)
    return path


def marked(data: dict) -> dict:
    """`data` with the format markers, for files written by hand instead of save_checkpoint."""
    return {**data, "format": FORMAT, "version": VERSION}


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    data = genuine_data()
    path = saved(tmp_path_factory.mktemp("genuine"), data)
    return path, read_checkpoint(path)


# -- the hostile files, and what loading each costs ----------------------------------------------------

FC1 = "stages.fc1.0.weight"
BOMB_ELEMENTS = 100_000_000  # 400 MB declared; the files themselves are well under 1 MB


def _with_state(data: dict, key: str, value) -> dict:
    return marked({**data, "state_dict": {**data["state_dict"], key: value}})


def _with_options(data: dict, **options) -> dict:
    return marked({**data, "model": {**data["model"], "options": {**data["model"]["options"], **options}}})


def hostile_files(folder: Path, data: dict) -> dict[str, tuple[Path, str]]:
    """name -> (file, head to load it with)."""
    zeros, crc = deflated_zeros(4 * BOMB_ELEMENTS)
    bomb = Claim(torch.float32, (BOMB_ELEMENTS,), zeros, method=8, usize=4 * BOMB_ELEMENTS, crc=crc)
    liar = torch_entries(marked(data))
    liar[2] = Entry(liar[2].name, liar[2].payload, csize=4 * BOMB_ELEMENTS, usize=4 * BOMB_ELEMENTS)
    pcl = genuine_data(recipe(defense="pcl", params={"heads": [{"tap": "fc1", "fc": [64]}]}))
    wide_head = {**pcl["model"], "defense": {"name": "pcl", "params": {"heads": [{"tap": "fc1", "fc": [1_000_000]}]}}}
    cases = {
        "deflate_bomb": _with_state(data, FC1, bomb),
        "numel_past_record": _with_state(data, FC1, Claim(torch.float32, (BOMB_ELEMENTS,), bytes(16))),
        "bytearray_call": marked({**data, "x": Call(bytearray, 4 * BOMB_ELEMENTS)}),
        "untyped_storage_call": marked({**data, "x": Call(torch.UntypedStorage, 4 * BOMB_ELEMENTS)}),
        "hidden_1e6": _with_options(data, hidden=1_000_000),
        "width_1e5": _with_options(data, width=100_000),
        "width_4096": _with_options(data, width=4096),  # within the registry's bounds: 300M weights, 1.2 GB
        "pcl_head_fc_1e6": marked({**pcl, "model": wide_head}),
    }
    files = {name: (write_checkpoint_zip(folder / f"{name}.pt", obj), "softmax") for name, obj in cases.items()}
    files["pcl_head_fc_1e6"] = (files["pcl_head_fc_1e6"][0], "prototype")
    (folder / "sizes_past_file.pt").write_bytes(zip_bytes(liar))
    files["sizes_past_file"] = (folder / "sizes_past_file.pt", "softmax")
    return files


MEASURE = textwrap.dedent("""
    import json, re, sys, time
    import torch
    torch.set_num_threads(1)
    from workbench.checkpoint import load_model

    def status(key):
        return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024

    def reset_peak():
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return True
        except OSError:
            return False

    load_model(sys.argv[1])  # a genuine file first: the one-time imports (meta kernels) are not the file's cost
    for arg in sys.argv[2:]:
        path, head = arg.split("::")
        reset = reset_peak()
        base, start = status("VmRSS"), time.perf_counter()
        try:
            load_model(path, head=head)
            out, msg = "loaded", ""
        except Exception as exc:
            out, msg = type(exc).__name__, str(exc)
        print(json.dumps({"path": path, "grew": status("VmHWM") - base, "seconds": time.perf_counter() - start,
                          "out": out, "msg": msg, "reset": reset}), flush=True)
        if not reset:
            break  # the peak cannot be reset: the caller measures the rest one process each
""")


def measure(genuine_path: Path, files: list[tuple[Path, str]]) -> dict[str, dict]:
    """Peak RSS growth and time of load_model on each file, in a fresh interpreter."""
    results: dict[str, dict] = {}
    todo = list(files)
    while todo:
        args = [f"{path}::{head}" for path, head in todo]
        proc = subprocess.run([sys.executable, "-c", MEASURE, str(genuine_path), *args], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        for line in proc.stdout.splitlines():
            row = json.loads(line)
            results[row["path"]] = row
        todo = [(p, h) for p, h in todo if str(p) not in results]
    return results


@pytest.fixture(scope="module")
def costs(tmp_path_factory, genuine):
    folder = tmp_path_factory.mktemp("hostile")
    files = hostile_files(folder, genuine[1])
    results = measure(genuine[0], list(files.values()))
    return {name: {**results[str(path)], "size": path.stat().st_size} for name, (path, _) in files.items()}


# What each refusal must say (any one of the alternatives: the model registry's own option bounds may catch a
# huge width before the meta build does).
EXPECTED = {
    "deflate_bomb": ("record archive/data/4 is compressed",),
    "numel_past_record": ("tensor record archive/data/4 holds 16 bytes but data.pkl declares 100000000 elements",),
    "bytearray_call": ("asks to run Python code (__builtin__.bytearray)",),
    "untyped_storage_call": ("asks to run Python code (torch.storage.UntypedStorage)",),
    "hidden_1e6": (f"state_dict entry {FC1} is torch.float32 (64, 512) but its model recipe gives torch.float32 "
                   "(1000000, 512)", "option hidden=1000000 is out of range"),
    "width_1e5": (f"more than the {MAX_PARAMETERS:,}", "option width=100000 is out of range"),
    "width_4096": ("state_dict entry stages.features.0.weight is torch.float32 (16, 1, 3, 3) but its model recipe "
                   "gives torch.float32 (4096, 1, 3, 3)",),
    "pcl_head_fc_1e6": ("auxiliary state entry branches.0.1.weight is torch.float32 (64, 64) but its model recipe "
                        "gives torch.float32 (1000000, 64)",),
    "sizes_past_file": ("its records declare more bytes than the",),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_file_is_refused_cheaply(costs, name):
    row = costs[name]
    assert row["out"] == "WorkbenchError", row
    assert any(text in row["msg"] for text in EXPECTED[name]), row["msg"]
    assert one_line(row["msg"]) and row["path"] in row["msg"]
    # Refusing costs a small multiple of the file, not what it declares (400 MB or more for each).
    assert row["grew"] < 50 * MB + 4 * row["size"], (row["grew"] / MB, row["size"] / MB)
    assert row["seconds"] < 5, row


# -- the container, in process --------------------------------------------------------------------------


def _refused(path: Path, *needles: str) -> str:
    with pytest.raises(WorkbenchError) as exc:
        read_checkpoint(path)
    msg = str(exc.value)
    assert one_line(msg) and str(path) in msg, msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_legacy_format_is_refused_before_torch_reads_it(tmp_path, genuine):
    path = tmp_path / "legacy.pt"
    torch.save(genuine[1], path, _use_new_zipfile_serialization=False)
    assert torch.load(path, weights_only=True)["format"] == FORMAT  # torch itself would read it
    _refused(path, "not a torch zip archive")


def test_missing_tensor_record_is_named(tmp_path, genuine):
    path = write_checkpoint_zip(tmp_path / "m.pt", _with_state(genuine[1], FC1, Claim(torch.float32, (4,))))
    _refused(path, "tensor record archive/data/4 is missing")


def test_duplicate_record_is_refused(tmp_path, genuine):
    entries = torch_entries(marked(genuine[1]))
    path = tmp_path / "dup.pt"
    path.write_bytes(zip_bytes(entries + [entries[2]]))
    _refused(path, f"record {entries[2].name} appears twice")


def test_records_outside_an_archive_folder(tmp_path, genuine):
    entries = torch_entries(marked(genuine[1]))
    path = tmp_path / "flat.pt"
    path.write_bytes(zip_bytes([Entry(e.name.split("/", 1)[1], e.payload) for e in entries]))
    _refused(path, "no torch record folder")


@pytest.mark.parametrize("pickled, needle", [
    (b"\x80\x02}r\xff\xff\xff\x0f.", "memo index 268435455"),  # C's unpickler would allocate a 4 GiB memo
    (b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00true\x85R.", "asks to run Python code (posix.system)"),
    (b"\x80\x02ctorch\nFloatStorage\n)R.", "asks to call torch.FloatStorage"),
    (b"\x80\x02X\x03\x00\x00\x00abcQ.", "persistent id that is not a tensor storage"),
    (b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ\xff\xff\xff"
     b"\xfftQ.", "declares a malformed size"),
    (b"\x80\x02]q\x00", "not a valid pickle"),
], ids=["memo_index", "os_system", "storage_call", "text_persistent_id", "negative_numel", "truncated"])
def test_hostile_data_pkl(tmp_path, pickled, needle):
    path = tmp_path / "p.pt"
    path.write_bytes(zip_bytes([Entry("archive/data.pkl", pickled), Entry("archive/version", b"3\n")]))
    _refused(path, needle)


def test_pickle_walk_is_capped(tmp_path, genuine, monkeypatch):
    monkeypatch.setattr(checkpoint_scan, "MAX_PICKLE_OPS", 100)
    _refused(genuine[0], "more than 100 pickle opcodes")


def test_unreadable_file_is_one_line(genuine):
    folder = Path(tempfile.mkdtemp(prefix="wb-locked-"))
    folder.chmod(0o755)  # reachable by any user; the file itself is not readable
    path = folder / "locked.pt"
    path.write_bytes(genuine[0].read_bytes())
    path.chmod(0)
    as_root = os.geteuid() == 0
    try:
        if as_root:  # root reads any file: refuse it as an ordinary user would meet it
            os.seteuid(65534)
        _refused(path)
    finally:
        if as_root:
            os.seteuid(0)
        shutil.rmtree(folder, ignore_errors=True)


# -- recipes --------------------------------------------------------------------------------------------


def _load_refused(data: dict, *needles: str, head: str = "softmax") -> str:
    with pytest.raises(WorkbenchError) as exc:
        model_from_checkpoint(data, "ck.pt", head=head)
    msg = str(exc.value)
    assert one_line(msg) and msg.startswith("ck.pt"), msg
    for needle in needles:
        assert needle in msg, msg
    return msg


GARBAGE_RECIPES = {
    "not_a_dict": ([1, 2], "not a mapping"),
    "unknown_model": ({"name": "resnet9000"}, "unknown model 'resnet9000'"),
    "name_not_str": ({"name": 3}, "unknown model 3"),
    "missing_size": ({"image_size": None}, "image_size must be an integer"),
    "negative_channels": ({"in_channels": -1}, "in_channels must be an integer from 1"),
    "bool_classes": ({"num_classes": True}, "num_classes must be an integer"),
    "float_size": ({"image_size": 8.0}, "image_size must be an integer"),
    "huge_size": ({"image_size": 10**6}, "image_size must be an integer from 1 to"),
    "options_list": ({"options": [1]}, "options must be a mapping"),
    "options_none": ({"options": None}, "options must be a mapping"),
    "unknown_option": ({"options": {"depth": 3}}, "has no option 'depth'"),
    "width_str": ({"options": {"width": "16"}}, "cannot build model 'tiny'"),
    "width_negative": ({"options": {"width": -4}}, "'tiny'"),
    "normalize_short": ({"normalize": {"mean": [0.1, 0.2], "std": [1.0, 1.0]}}, "normalize must be null or"),
    "normalize_zero_std": ({"normalize": {"mean": [0.1], "std": [0.0]}}, "normalize.std must be positive"),
    "defense_str": ({"defense": "pcl"}, "defense must be {name: str, params: mapping}"),
    "defense_unknown": ({"defense": {"name": "magic", "params": {}}}, "unknown defense 'magic'"),
    "defense_params": ({"defense": {"name": "ccn", "params": {"delta": "x"}}}, "defense 'ccn' params do not validate"),
}


@pytest.mark.parametrize("name", sorted(GARBAGE_RECIPES))
def test_garbage_recipe_is_one_line(genuine, name):
    change, needle = GARBAGE_RECIPES[name]
    bad = change if not isinstance(change, dict) else {**genuine[1]["model"], **change}
    _load_refused({**genuine[1], "model": bad}, needle)
    if isinstance(bad, dict) and name != "not_a_dict":
        with pytest.raises(WorkbenchError):
            build_model(bad)


def test_missing_recipe_key_is_one_line(genuine):
    bad = {k: v for k, v in genuine[1]["model"].items() if k != "num_classes"}
    _load_refused({**genuine[1], "model": bad}, "num_classes must be an integer")


@pytest.mark.parametrize("change, needle", [
    (lambda sd: sd.pop(FC1), f"state_dict lacks {FC1}"),
    (lambda sd: sd.__setitem__("extra.weight", torch.zeros(2)), "has 'extra.weight', which its model recipe does not"),
    (lambda sd: sd.__setitem__(FC1, torch.zeros(64, 511)), f"entry {FC1} is torch.float32 (64, 511)"),
    (lambda sd: sd.__setitem__(FC1, torch.zeros(64, 512, dtype=torch.float64)), f"entry {FC1} is torch.float64"),
    (lambda sd: sd.__setitem__(FC1, [0.0] * 64), f"entry {FC1} is not a dense tensor (list)"),
    (lambda sd: sd.__setitem__(FC1, torch.zeros(1).expand(64, 512)), f"entry {FC1} is larger than the storage"),
], ids=["missing", "unexpected", "shape", "dtype", "not_tensor", "zero_stride"])
def test_state_dict_mismatch_names_the_key(genuine, change, needle):
    state = dict(genuine[1]["state_dict"])
    change(state)
    _load_refused({**genuine[1], "state_dict": state}, needle)


def test_recipe_is_compared_with_the_state_dict_on_the_meta_device(genuine):
    # In range for the registry, yet not what the weights are: found before anything is allocated.
    wide = {**genuine[1]["model"], "options": {"width": 16, "hidden": 4096}}
    _load_refused({**genuine[1], "model": wide}, f"state_dict entry {FC1} is torch.float32 (64, 512) but its "
                  "model recipe gives torch.float32 (4096, 512)")


def test_recipe_over_the_weight_cap_is_refused_on_the_meta_device(genuine):
    # 3x64x64 (tiny_imagenet) with the widest tiny: 34 billion weights if built.
    huge = recipe(channels=3, size=64, classes=200, options={"width": 4096, "hidden": 4096})
    _load_refused({**genuine[1], "model": huge, "dataset": "tiny_imagenet"}, "its recipe's model 'tiny' would have",
                  f"more than the {MAX_PARAMETERS:,}")


def test_auxiliary_state_is_checked_before_it_is_built():
    data = genuine_data(recipe(defense="pcl", params={"heads": ["fc1"]}))
    huge = {**data["model"], "defense": {"name": "pcl", "params": {"heads": [{"tap": "fc1", "fc": [10**8]}]}}}
    _load_refused({**data, "model": huge}, "with its pcl auxiliary state would have", "more than the", head="prototype")
    _load_refused({**data, "auxiliary": {}}, "auxiliary state lacks", head="prototype")
    with pytest.raises(WorkbenchError) as exc:
        defense_from_checkpoint({**data, "model": huge}, build_model(data["model"]), "ck.pt")
    assert "more than the" in str(exc.value)


# -- the dataset a checkpoint names ---------------------------------------------------------------------


@pytest.mark.parametrize("dataset, needle", [
    ("cifar10", "checkpoint says dataset cifar10 (3x32x32, 10 classes) but its model takes 1x8x8 inputs and 10 classes"),
    ("mnist", "checkpoint says dataset mnist (1x28x28, 10 classes) but its model takes 1x8x8"),
    ("imagenet22k", "checkpoint says dataset 'imagenet22k', which this workbench does not know"),
    (None, "checkpoint does not name its dataset"),
])
def test_dataset_must_fit_the_recipe(genuine, dataset, needle):
    _load_refused({**genuine[1], "dataset": dataset}, needle)


def _cli_error(path: Path, command: str, data: Path | None) -> str:
    """The one line `workbench <command> path` fails with (offline; with `data` as WORKBENCH_DATA, if any)."""
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_DATA"}
    env.update(WORKBENCH_OFFLINE="1", XDG_CACHE_HOME=str(path.parent / "cache"), COLUMNS="300")
    if data is not None:
        env["WORKBENCH_DATA"] = str(data)
    proc = subprocess.run([sys.executable, "-m", "workbench", command, str(path), "--n", "10"], capture_output=True,
                          text=True, env=env, cwd=path.parent, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


@pytest.mark.parametrize("command", ["attack", "audit"])
def test_cli_refuses_a_dataset_mismatch_before_loading_data(tmp_path, genuine, command):
    # No cifar10 anywhere and downloads off: before the fix this failed looking for the data.
    line = _cli_error(saved(tmp_path, {**genuine[1], "dataset": "cifar10"}, "cifar.pt"), command, None)
    assert "cifar10 (3x32x32, 10 classes)" in line and "takes 1x8x8 inputs" in line


def test_cli_refuses_a_dataset_mismatch_with_the_data_present(tmp_path, genuine, mnist_root):
    # With MNIST on disk, the digits model was fed 28x28 images: a shape error deep in the attack.
    line = _cli_error(saved(tmp_path, {**genuine[1], "dataset": "mnist"}, "mnist.pt"), "attack", mnist_root)
    assert "mnist (1x28x28, 10 classes)" in line and "takes 1x8x8 inputs" in line


# -- genuine checkpoints still load -------------------------------------------------------------------


def test_hand_written_zip_loads_like_torch_save(tmp_path, genuine):
    # The writer the hostile files come from produces files torch reads: only the lies are refused.
    path = write_checkpoint_zip(tmp_path / "hand.pt", marked(genuine[1]))
    back = read_checkpoint(path)
    for key, value in genuine[1]["state_dict"].items():
        assert torch.equal(back["state_dict"][key], value)
    workbench.load_model(path)


def test_real_quickstart_run_loads(quickstart_run):
    for path in (quickstart_run.best, quickstart_run.last):
        model = workbench.load_model(path)
        assert not model.training


def test_real_pcl_run_loads_with_its_prototypes(tmp_path):
    from workbench.config import load_profile
    from workbench.training import prepare_run, run_training

    cfg, source = load_profile("quickstart", ["epochs=1", "eval.robust_every=0", "adv_train.attack=none",
                                              "defense=pcl", "defense.heads=[{tap: features, fc: [32]}, fc1]",
                                              "data.train_subset=128"])
    run = prepare_run(cfg, tmp_path, source)
    assert run_training(run.root, device="cpu") == "finished"
    x = torch.rand(4, 1, 8, 8)
    for head in ("softmax", "prototype"):
        assert workbench.load_model(run.last, head=head)(x).shape == (4, 10)


def _dataset_for(name: str) -> str:
    from workbench.models import MODELS

    return "mnist" if MODELS.get(name).fits(1, 28) else "cifar10"


# wrn34_10's default widen=10 is 46M weights (185 MB): a narrow one builds the same code path.
SMALL_OPTIONS = {"wrn34_10": {"widen": 1}, "tiny": {}, "small_cnn": {}, "resnet110": {}, "resnet56": {}}


def _registered_models() -> list[str]:
    from workbench.models import MODELS

    return MODELS.names()


@pytest.mark.parametrize("name", _registered_models())
def test_every_registered_model_round_trips(tmp_path, name):
    from workbench.data import DATASETS

    spec = DATASETS.get(_dataset_for(name))
    r = recipe(name, spec.channels, spec.image_size, spec.num_classes, options=SMALL_OPTIONS.get(name, {}))
    model, data = genuine_model(r, dataset=spec.name)
    path = saved(tmp_path, data)
    x = torch.rand(2, spec.channels, spec.image_size, spec.image_size)
    with torch.no_grad():
        torch.testing.assert_close(workbench.load_model(path)(x), model.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("defense, params", [
    ("bn", {}), ("ccn", {}), ("lrn", {}), ("brelu", {}), ("l2_softmax", {}), ("adr", {}),
    ("pcl", {"heads": ["fc1"]}), ("ds_center", {"heads": ["features", "fc1"]}), ("ds_softmax", {"heads": ["fc1"]}),
])
def test_defenses_round_trip(tmp_path, defense, params):
    data = genuine_data(recipe(defense=defense, params=params))
    path = saved(tmp_path, data)
    heads = ["softmax", "prototype"] if defense in ("pcl", "ds_center") else ["softmax"]
    for head in heads:
        assert workbench.load_model(path, head=head)(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_plain_values_torch_writes_still_load(tmp_path):
    # The scan's list of allowed globals covers what torch.save writes for plain data and tensors.
    values = {"set": {1, 2}, "bytes": b"ab", "complex": 1 + 2j, "dtype": torch.float16, "device": torch.device("cpu"),
              "parameter": torch.nn.Parameter(torch.ones(2)), "size": torch.Size([2, 3]),
              "bf16": torch.zeros(3, dtype=torch.bfloat16), "long": torch.arange(3), "empty": torch.zeros(0)}
    back = read_checkpoint(saved(tmp_path, {"model": {}, "state_dict": {}, **values}))
    for key, value in values.items():
        assert type(back[key]) is type(value), key
