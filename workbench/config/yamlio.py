"""YAML reading and writing with YAML 1.2 floats.

PyYAML follows YAML 1.1, where `1e-3` is a string; every profile author writes
learning rates that way, so the loader also resolves exponent floats without a dot.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import WorkbenchError


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        # A repeated key silently wins in PyYAML; in a profile it is always a mistake.
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


# Deeper than any real profile; PyYAML composes recursively, so a hostile file of nested brackets would
# otherwise end in a RecursionError (and pydantic would recurse into it again).
MAX_DEPTH = 64


def _nesting_depth(text: str) -> int:
    """An upper bound on the YAML's nesting: flow brackets, and indentation levels of block collections."""
    depth = best = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    indents = {len(line) - len(line.lstrip(" ")) for line in text.splitlines() if line.strip()}
    return max(best, len(indents))


def parse_yaml(text: str, source: str = "<string>") -> Any:
    if _nesting_depth(text) > MAX_DEPTH:
        raise WorkbenchError(f"{source}: invalid YAML: nested deeper than {MAX_DEPTH} levels")
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise WorkbenchError(f"{source}: invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a scalar PyYAML cannot build: 2020-99-99, 0x, {[1]: 2}
        raise WorkbenchError(f"{source}: invalid YAML: {str(exc).splitlines()[0][:120] or type(exc).__name__}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise WorkbenchError(f"{where}: invalid YAML: {problem}") from None
    if _expanded_size(data) > MAX_NODES:
        raise WorkbenchError(f"{source}: invalid YAML: more than {MAX_NODES} values once aliases are expanded")
    return data


# Aliases share one object in memory, but validation and dumping walk every occurrence: ten nested
# aliases of ten items each would be 10^10 values ("billion laughs").
MAX_NODES = 100_000


def _expanded_size(data: Any) -> int:
    """Values in `data` counting every occurrence of a shared (aliased) one; stops early past the cap."""
    count, stack = 0, [data]
    while stack and count <= MAX_NODES:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


# Profiles and resolved configs are a few KB; refusing a huge file beats reading it into memory.
MAX_BYTES = 4 << 20


def read_yaml(path: Path) -> Any:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except IsADirectoryError:
        raise WorkbenchError(f"{path} is a folder, not a YAML file") from None
    except OSError as exc:
        raise WorkbenchError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise WorkbenchError(f"{path}: larger than {MAX_BYTES >> 20} MiB; not a profile or config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkbenchError(f"{path}: not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x}); "
                             "a profile is a UTF-8 YAML file") from None
    return parse_yaml(text, str(path))


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
