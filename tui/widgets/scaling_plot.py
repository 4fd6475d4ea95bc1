"""The in-terminal plot of speedup against ideal: the engine's braille TextPlot, one colour per network."""

from __future__ import annotations

from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from engine import api
from engine.events import ScalingPoint

SERIES_CLASSES = tuple(f"scalingplot--series-{i}" for i in range(6))
# Room the engine's frame adds around the plot area: y labels and the axis on the left, the x axis,
# its labels and the legend below, and up to 8 characters of x labels past the right edge.
LEFT_FRAME = 8
RIGHT_SLACK = 2
BELOW_FRAME = 3


class ScalingPlot(Widget):
    """Set ``points`` (ScalingPoints with speedup filled); the plot redraws to fit the widget."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "scalingplot--ideal",
        "scalingplot--axis",
        "scalingplot--empty",
        *SERIES_CLASSES,
    }

    points: reactive[tuple[ScalingPoint, ...]] = reactive((), always_update=True)
    empty_text: reactive[str] = reactive("no measurements yet")

    def render(self) -> Text:
        series = [(name, pts) for name, pts in api.speedup_series(self.points) if pts]
        if not series:
            return Text(self.empty_text, style=self.get_component_rich_style("scalingplot--empty"))
        return self.coloured(self.text_plot(series))

    def text_plot(self, series) -> api.TextPlot:
        """The engine's plot sized to this widget (small terminals get a small plot, never a wrapped one)."""
        width = max(8, self.content_size.width - LEFT_FRAME - RIGHT_SLACK)
        height = max(4, self.content_size.height - BELOW_FRAME)
        return api.speedup_plot(series, width, height)

    def coloured(self, plot: api.TextPlot) -> Text:
        """Rich Text with each character styled by what it belongs to (TextPlot.owners)."""
        axis = self.get_component_rich_style("scalingplot--axis")
        styles = {
            api.IDEAL: self.get_component_rich_style("scalingplot--ideal"),
            None: axis,
        }
        for index in range(len(plot.legend)):
            styles[index] = self.series_style(index)
        text = Text(no_wrap=True, overflow="crop")
        for row, (line, owners) in enumerate(zip(plot.lines, plot.owners)):
            if row:
                text.append("\n")
            text.append_text(_styled_line(line, owners, styles, axis))
        self._colour_legend(text, plot)
        return text

    def series_style(self, index: int) -> Style:
        return self.get_component_rich_style(SERIES_CLASSES[index % len(SERIES_CLASSES)])

    def _colour_legend(self, text: Text, plot: api.TextPlot) -> None:
        """The legend line names each series: colour its marker and name like its line."""
        legend_row = plot.lines[-1]
        start = len(text.plain) - len(legend_row)
        for index, (marker, name) in enumerate(plot.legend):
            label = f"{marker} {name}"
            at = legend_row.find(label)
            if at >= 0:
                text.stylize(self.series_style(index), start + at, start + at + len(label))


def _styled_line(line: str, owners, styles: dict, default: Style) -> Text:
    """One plot line, cut into runs of characters with the same owner."""
    out = Text()
    run_start = 0
    for col in range(1, len(line) + 1):
        owner = _owner(owners, col - 1)
        if col == len(line) or _owner(owners, col) != owner:
            out.append(line[run_start:col], styles.get(owner, default))
            run_start = col
    return out


def _owner(owners, col: int) -> int | None:
    return owners[col] if col < len(owners) else None
