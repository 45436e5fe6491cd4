"""A run's text files as the monitor shows them in a column of a given width (pure: no textual).

The log wraps with a hanging indent, so where one line ends and the next begins stays visible.
config.yaml is shown re-dumped in block style (one key per line), folded to the width by the YAML
emitter itself: flow mappings of the file (`eval: {clean_every: 1, ...}`) otherwise wrap at the
terminal's edge without indentation.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from ...errors import WorkbenchError
from ...runs.files import open_regular

# The config tab shows this much of config.yaml at most (a resolved config is a few KB).
CONFIG_BYTES = 256 * 1024
CUT_NOTE = "# ... (cut: {name} is larger than {kib} KiB)"
HANGING_INDENT = "  "
MIN_WIDTH = 20  # below this, wrapping would only shred the text


def hanging_wrap(lines: list[str], width: int) -> list[str]:
    """Each line cut to `width` cells; continuation rows indented. A width of 0 (not laid out yet) keeps lines."""
    if width < MIN_WIDTH:
        return list(lines)
    wrapper = textwrap.TextWrapper(width=width, subsequent_indent=HANGING_INDENT, break_on_hyphens=False,
                                   drop_whitespace=True, expand_tabs=True, replace_whitespace=False)
    out: list[str] = []
    for line in lines:
        out.extend(wrapper.wrap(line) if len(line) > width else [line])
    return out


def config_text(path: Path) -> str:
    """config.yaml as the config tab shows it: at most CONFIG_BYTES, undecodable bytes replaced."""
    try:
        with open_regular(path) as fh:
            raw = fh.read(CONFIG_BYTES + 1)
    except OSError as exc:
        return f"# cannot read {path}: {exc.strerror or exc}"
    except WorkbenchError as exc:
        return f"# cannot read {path}: {exc}"
    text = raw[:CONFIG_BYTES].decode("utf-8", errors="replace")
    if len(raw) > CONFIG_BYTES:
        text += "\n" + CUT_NOTE.format(name=path.name, kib=CONFIG_BYTES >> 10)
    return text


class _BlockDumper(yaml.SafeDumper):
    """Mappings in block style; a list of plain values in flow style ([55, 75, 90] stays one line)."""


def _represent_list(dumper: yaml.SafeDumper, value: list):
    flat = all(not isinstance(x, (list, dict)) for x in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flat)


_BlockDumper.add_representer(list, _represent_list)


def config_for_display(text: str, width: int) -> str:
    """config.yaml in block style folded to `width`; the text as it is if it does not parse as a mapping
    (a config the trainer did not write, or one cut at the size limit)."""
    if "\n# ... (cut: " in text:  # a cut file may still parse, and re-dumping it would drop the note
        return text
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):  # "[[[[..." nests past the parser's recursion limit
        return text
    if not isinstance(data, dict) or not data:
        return text
    width = max(MIN_WIDTH, width)
    try:
        dumped = yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False, width=width,
                           allow_unicode=True)
    except (yaml.YAMLError, RecursionError):  # a value SafeDumper cannot write: show the file as it is
        return text
    # The emitter breaks a line only once it has passed the width; fold what still overflows, one level
    # deeper than its key (for a plain scalar or a flow list that is still the same YAML).
    lines = []
    for line in dumped.splitlines():
        indent = " " * (len(line) - len(line.lstrip(" "))) + HANGING_INDENT
        lines.extend(textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False,
                                   break_long_words=False) if len(line) > width else [line])
    return "\n".join(lines) + "\n"
