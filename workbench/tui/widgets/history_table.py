"""The attack panel's list of past and running evaluations: a DataTable updated in place."""

from __future__ import annotations

from textual.widgets import DataTable

from ..model.eval_history import COLUMNS, HistoryItem


class HistoryTable(DataTable):
    """Rebuilt only when the set of rows changes; otherwise changed cells are updated in place, so the
    periodic refresh keeps the cursor and the scroll position."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.items: dict[str, HistoryItem] = {}

    def on_mount(self) -> None:
        for label in COLUMNS:
            self.add_column(label, key=label)

    def show(self, items: list[HistoryItem]) -> None:
        new = {item.key: item for item in items}
        if list(new) != list(self.items):
            current = self.current_key()
            self.clear()
            for key, item in new.items():
                self.add_row(*item.cells, key=key)
            if current in new:
                self.move_cursor(row=list(new).index(current))
        else:
            for key, item in new.items():
                for column, old, value in zip(COLUMNS, self.items[key].cells, item.cells):
                    if old != value:
                        self.update_cell(key, column, value)
        self.items = new

    def current_key(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - an empty or changing table has no cursor cell
            return None
