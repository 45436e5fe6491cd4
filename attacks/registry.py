"""Attack registry: `@register_attack` on an `Attack` subclass adds it by its `name`."""

from workbench.registry import Registry

from .base import Attack

ATTACKS: Registry[type[Attack]] = Registry("attack")


def register_attack(cls: type[Attack]) -> type[Attack]:
    ATTACKS.register(cls.name, cls)
    return cls


def create_attack(name: str, model, **params) -> Attack:
    return ATTACKS.get(name)(model, **params)
