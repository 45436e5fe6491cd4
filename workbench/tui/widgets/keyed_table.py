"""A row table keyed by strings whose periodic refresh keeps the cursor and the scroll position."""

from __future__ import annotations

from typing import Sequence

from textual.widgets import DataTable


class KeyedTable(DataTable):
    """`set_rows({key: cells})` rebuilds only when the keys (or their order) change; otherwise it updates
    the cells that changed in place, so a table refreshed every second does not jump under the cursor."""

    def __init__(self, columns: Sequence[tuple[str, int | None]], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.columns_spec = list(columns)  # (label, width or None for auto); the label is the column key
        self.keys = [label or "mark" for label, _ in self.columns_spec]  # a blank header is the mark column
        self.cells: dict[str, tuple] = {}

    def on_mount(self) -> None:
        for (label, width), key in zip(self.columns_spec, self.keys):
            self.add_column(label, width=width, key=key)

    def set_rows(self, rows: dict[str, tuple]) -> None:
        if list(rows) != list(self.cells):
            current = self.current_key()
            self.clear()
            for key, cells in rows.items():
                self.add_row(*cells, key=key)
            if current in rows:
                self.move_cursor(row=list(rows).index(current))
        else:
            for key, cells in rows.items():
                for column, old, value in zip(self.keys, self.cells[key], cells):
                    if old != value:
                        self.update_cell(key, column, value)
        self.cells = dict(rows)

    def set_cell(self, key: str, column: str, value) -> None:
        """Change one cell now (e.g. a mark), keeping what the next `set_rows` compares against."""
        index = self.keys.index(column)
        self.update_cell(key, column, value)
        row = list(self.cells[key])
        row[index] = value
        self.cells[key] = tuple(row)

    def current_key(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - an empty or changing table has no cursor cell
            return None
