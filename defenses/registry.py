"""Defense registry: `@register_defense` on a `Defense` subclass adds it by its `name`."""

from workbench.registry import Registry

from .base import Defense

DEFENSES: Registry[type[Defense]] = Registry("defense")


def register_defense(cls: type[Defense]) -> type[Defense]:
    DEFENSES.register(cls.name, cls)
    return cls


def create_defense(name: str, params: dict, num_classes: int) -> Defense:
    return DEFENSES.get(name).from_config(params, num_classes)
