"""The attack panel's list of past and running evaluations."""

from __future__ import annotations

from ..model.eval_history import COLUMNS, HistoryItem
from .keyed_table import KeyedTable


class HistoryTable(KeyedTable):
    """Refreshed every few seconds without losing the cursor (see KeyedTable)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__([(label, None) for label in COLUMNS], id=id)
        self.items: dict[str, HistoryItem] = {}

    def show(self, items: list[HistoryItem]) -> None:
        self.items = {item.key: item for item in items}
        self.set_rows({key: item.cells for key, item in self.items.items()})
