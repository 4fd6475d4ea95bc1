"""The scaling table: one row per measured cell, as the engine's report formats it."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from engine import api
from engine.events import ScalingPoint

# (column of api.TABLE_COLUMNS, header shown): the columns that fit 80 characters.
COLUMNS = (
    ("network", "network"),
    ("GPUs", "GPUs"),
    ("images/s", "img/s"),
    ("speedup", "speedup"),
    ("efficiency", "efficiency"),
    ("model", "predicted eff"),
)


class ScalingTable(DataTable):
    """Set ``points`` to redraw; a failed cell is drawn in the failed style (the screen says why)."""

    COMPONENT_CLASSES = DataTable.COMPONENT_CLASSES | {"scalingtable--failed"}

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._points: tuple[ScalingPoint, ...] = ()

    def on_mount(self) -> None:
        for name, header in COLUMNS:
            self.add_column(
                header if name == "network" else Text(header, justify="right"), key=name
            )

    @property
    def points(self) -> tuple[ScalingPoint, ...]:
        return self._points

    @points.setter
    def points(self, points) -> None:
        self._points = tuple(points)
        self.redraw()

    def redraw(self) -> None:
        cursor = self.cursor_row
        self.clear()
        picks = [api.TABLE_COLUMNS.index(name) for name, _ in COLUMNS]
        for point, row in zip(self._points, api.table_rows(self._points)):
            self.add_row(
                *self.cells(point, [row[i] for i in picks]), key=f"{point.network}@{point.gpus}"
            )
        if self.row_count:
            self.move_cursor(row=min(cursor, self.row_count - 1))

    def cells(self, point: ScalingPoint, values: list[str]) -> list[Text]:
        failed = point.images_per_sec is None
        style = self.get_component_rich_style("scalingtable--failed") if failed else ""
        return [
            Text(values[0], style=style),
            *(Text(v, style=style, justify="right") for v in values[1:]),
        ]
