"""Inspect an untrusted torch checkpoint before `torch.load` touches it: nothing is inflated, imported or called.

`torch.load` trusts the zip container: it inflates a compressed record to whatever size the archive
declares, and its weights-only unpickler still lets a pickle call `bytearray(n)` or
`torch.UntypedStorage(n)`. So, first, this module checks the container with `zipfile` (torch's writer
stores every record uncompressed), walks `data.pkl` with an unpickler whose globals are inert
placeholders, and checks that every tensor storage the pickle declares is backed by a record of
exactly its size. A file that passes costs `torch.load` about its own size in memory.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import zipfile
from pathlib import Path

import torch

from .errors import WorkbenchError

# Bounds on the pickle walk. A workbench checkpoint's data.pkl has a few thousand opcodes
# (about 20 per tensor); these leave room for very large models and long histories.
MAX_PICKLE_OPS = 1_000_000
MAX_STORAGES = 100_000

_ZIP_MAGIC = b"PK\x03\x04"


def _storage_sizes() -> dict[str, int]:
    """Element size of each storage type torch's writer names in a persistent id ('torch.FloatStorage')."""
    sizes = {f"torch.{name}": dtype.itemsize for dtype, name in torch.storage._dtype_to_storage_type_map().items()}
    sizes["torch.UntypedStorage"] = 1  # torch writes untyped storages as bytes
    return sizes


_STORAGE_SIZES = _storage_sizes()
# Globals a workbench checkpoint may call: torch.save of tensors and plain data uses the first two; the rest
# are tensors over a storage and small values built from the pickle's own bytes. Python 3 writes builtins as
# __builtin__ under protocol 2. Anything else torch's weights-only loader would run (bytearray(n), tensor and
# storage constructors, attribute-setting rebuilds) or that it refuses (arbitrary code) is refused here.
_CALLABLE = {
    "torch._utils._rebuild_tensor_v2", "collections.OrderedDict", "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v3", "torch._utils._rebuild_parameter", "torch.Size", "torch.device",
    "_codecs.encode", "builtins.set", "builtins.complex", "__builtin__.set", "__builtin__.complex",
}
# Globals that may only appear as values: dtypes (e.g. in optimizer state) and the storage types of ids.
_VALUES = {str(dtype) for dtype in torch.storage._dtype_to_storage_type_map()} | set(_STORAGE_SIZES)


class _Refused(Exception):
    """Raised inside the walk; becomes one WorkbenchError line naming the file."""


def _shown(text: str, limit: int = 120) -> str:
    """Untrusted text (a record name, a global) made safe for a one-line message."""
    return ascii(text[:limit])[1:-1]


class _Inert:
    """Stands for whatever a global would build: takes any arguments and state, keeps nothing."""

    qualname = ""

    def __new__(cls, *args, **kwargs):
        if cls.qualname not in _CALLABLE:  # REDUCE and NEWOBJ both come here
            raise _Refused(f"it asks to call {cls.qualname}, which a checkpoint never does")
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        raise _Refused("it calls the result of a call")

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass


class _StoragePlaceholder:
    """What the scan returns for a persistent id, in place of a real storage."""


class _Scanner(pickle.Unpickler):
    """Unpickles data.pkl with inert globals, recording each storage it declares as (type, key, numel)."""

    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data))
        self.storages: list[tuple[str, str, int]] = []
        self._classes: dict[str, type] = {}

    def find_class(self, module, name):
        qualname = f"{module}.{name}"
        if qualname not in _CALLABLE and qualname not in _VALUES:
            raise _Refused(f"it asks to run Python code ({_shown(qualname, 80)}), which is never unpickled")
        if qualname not in self._classes:  # at most one small class per allowed name
            self._classes[qualname] = type("Inert", (_Inert,), {"qualname": qualname})
        return self._classes[qualname]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _Refused("it holds a persistent id that is not a tensor storage")
        _, kind, key, location, numel = pid
        qualname = getattr(kind, "qualname", None) if isinstance(kind, type) and issubclass(kind, _Inert) else None
        if qualname not in _STORAGE_SIZES:
            raise _Refused("a tensor storage has no known storage type")
        if not (isinstance(key, str) and key.isascii() and key.isprintable() and isinstance(location, str)):
            raise _Refused("a tensor storage has a malformed key or location")
        if type(numel) is not int or numel < 0:
            raise _Refused(f"tensor storage {_shown(key, 40)} declares a malformed size")
        if len(self.storages) >= MAX_STORAGES:
            raise _Refused(f"it declares more than {MAX_STORAGES} tensor storages")
        self.storages.append((qualname, key, numel))
        return _StoragePlaceholder()


_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def check_pickle_ops(data: bytes) -> int:
    """Count the opcodes of `data` up to its STOP (genops decodes them, never builds), refusing more than
    MAX_PICKLE_OPS and memo indices beyond that: C's unpickler sizes its memo by the largest index, so a
    9-byte pickle storing at index 2**32 - 1 would make it allocate 64 GiB."""
    count = 0
    for op, arg, _ in pickletools.genops(data):
        count += 1
        if count > MAX_PICKLE_OPS:
            raise _Refused(f"its data.pkl has more than {MAX_PICKLE_OPS} pickle opcodes")
        if op.name in _MEMO_PUTS and not 0 <= arg < MAX_PICKLE_OPS:
            raise _Refused(f"its data.pkl stores at memo index {arg}")
    return count


def scan_pickle(data: bytes) -> list[tuple[str, str, int]]:
    """The (storage type, key, numel) of every storage `data` declares; raises _Refused on anything else."""
    try:
        check_pickle_ops(data)
        scanner = _Scanner(data)
        scanner.load()
    except _Refused:
        raise
    except Exception as exc:  # a malformed pickle: torch.load would fail on it too
        raise _Refused(f"its data.pkl is not a valid pickle ({type(exc).__name__})") from None
    return scanner.storages


def _archive_prefix(infos: list[zipfile.ZipInfo]) -> str:
    """The folder torch's reader looks in: the first entry's top-level folder."""
    if not infos or "/" not in infos[0].filename:
        raise _Refused("its zip archive has no torch record folder")
    return infos[0].filename.split("/", 1)[0]


def check_entries(infos: list[zipfile.ZipInfo], file_size: int) -> None:
    """Every record stored (never inflated), unencrypted, once, and all together within the file."""
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = _shown(info.filename)
        if info.compress_type != zipfile.ZIP_STORED:
            raise _Refused(f"record {name} is compressed (torch stores records uncompressed; it is never inflated)")
        if info.flag_bits & 0x1:
            raise _Refused(f"record {name} is encrypted")
        if info.file_size != info.compress_size:
            raise _Refused(f"record {name} declares {info.file_size} bytes but stores {info.compress_size}")
        folded = info.filename.lower()  # torch's reader (miniz) looks names up ignoring case
        if folded in seen:
            raise _Refused(f"record {name} appears twice")
        seen.add(folded)
        total += info.compress_size
        if total > file_size:
            raise _Refused(f"its records declare more bytes than the {file_size}-byte file holds")


def check_storages(storages: list[tuple[str, str, int]], infos: dict[str, zipfile.ZipInfo], prefix: str) -> None:
    """Each declared storage has its record, of exactly numel x element size bytes."""
    for qualname, key, numel in storages:
        name = f"{prefix}/data/{key}"
        info = infos.get(name)
        if info is None:
            raise _Refused(f"tensor record {_shown(name)} is missing")
        expected = numel * _STORAGE_SIZES[qualname]
        if info.file_size != expected:
            raise _Refused(f"tensor record {_shown(name)} holds {info.file_size} bytes but data.pkl declares "
                           f"{numel} elements of {qualname} ({expected} bytes)")


def _scan_zip(path: Path, file_size: int) -> None:
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        prefix = _archive_prefix(infos)
        check_entries(infos, file_size)
        by_name = {info.filename: info for info in infos}
        pkl_name = f"{prefix}/data.pkl"
        if pkl_name not in by_name:
            raise _Refused(f"record {_shown(pkl_name)} is missing")
        pkl = archive.read(pkl_name)  # stored, so at most the file's size; its CRC is checked
    check_storages(scan_pickle(pkl), by_name, prefix)


def scan_checkpoint(path: str | Path) -> None:
    """Refuse, with one WorkbenchError line, a file torch.load must not be given (see the module doc)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(len(_ZIP_MAGIC))
            file_size = fh.seek(0, io.SEEK_END)
    except OSError as exc:
        raise WorkbenchError(f"{path} cannot be read: {exc.strerror or type(exc).__name__}") from None
    if magic != _ZIP_MAGIC:
        raise WorkbenchError(f"{path} is not a readable checkpoint: not a torch zip archive (a legacy torch "
                             "file, a raw pickle or something else; those are never loaded)")
    try:
        _scan_zip(path, file_size)
    except _Refused as exc:
        raise WorkbenchError(f"{path} is not a safe checkpoint: {exc}") from None
    except Exception as exc:  # zipfile on a corrupt archive: BadZipFile, but also OSError, ValueError, ...
        raise WorkbenchError(f"{path} is not a readable checkpoint (corrupt zip archive: "
                             f"{type(exc).__name__})") from None
