"""A tiny name -> factory registry shared by datasets, models, defenses and attacks."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import WorkbenchError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to entries; unknown names raise a `WorkbenchError` listing the choices."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None):
        """Register `entry` under `name`; without `entry`, works as a decorator."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        if entry is not None:
            return add(entry)
        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            choices = ", ".join(sorted(self._entries))
            raise WorkbenchError(f"unknown {self.kind} {name!r}; choose one of: {choices}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())


Factory = Callable[..., T]
