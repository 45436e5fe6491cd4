"""Attack registry: `@register_attack` on an `Attack` subclass adds it by its `name`, with its metadata checked.

Attacks from elsewhere register the same way, from a module that `load_plugins` imports: one named in
$WORKBENCH_ATTACK_MODULES (comma-separated module names) or an entry point of the `workbench.attacks` group.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os

from workbench.attack_meta import AttackMeta, describe
from workbench.errors import WorkbenchError
from workbench.registry import Registry

from .base import Attack

ATTACKS: Registry[type[Attack]] = Registry("attack")
PLUGIN_ENV = "WORKBENCH_ATTACK_MODULES"
PLUGIN_GROUP = "workbench.attacks"


def register_attack(cls: type[Attack]) -> type[Attack]:
    meta = describe(cls)  # a bad declaration fails at import, not when a user picks the attack
    taken = {attack_meta(name).flag: name for name in ATTACKS.names()}
    if meta.flag is not None and meta.flag in taken:
        raise ValueError(f"attack {meta.name}: flag {meta.flag} is already {taken[meta.flag]}'s")
    ATTACKS.register(cls.name, cls)
    return cls


def attack_meta(name: str) -> AttackMeta:
    """The declared metadata of a registered attack (an unknown name lists the choices)."""
    return describe(ATTACKS.get(name))


def all_meta() -> list[AttackMeta]:
    return [describe(cls) for _, cls in ATTACKS.items()]


def create_attack(name: str, model, **params) -> Attack:
    return ATTACKS.get(name)(model, **params)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def load_plugins() -> None:
    """Import the plugin attack modules; one that fails is a one-line WorkbenchError naming it."""
    for module in (m.strip() for m in os.environ.get(PLUGIN_ENV, "").split(",")):
        if not module:
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any failure of foreign code is the user's to fix
            raise WorkbenchError(f"{PLUGIN_ENV}: cannot import attack module {module!r} ({_first_line(exc)})") from None
    for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        try:
            entry.load()
        except Exception as exc:  # noqa: BLE001
            raise WorkbenchError(f"attack plugin {entry.name!r} ({entry.value}) does not load "
                                 f"({_first_line(exc)})") from None
