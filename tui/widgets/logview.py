"""The training log: lines attributed to host, role and rank; filter, search, follow/pause; bounded memory.

Keeps at most MAX_LINES lines (oldest dropped) and draws with the line API at most ten times a second,
so thousands of lines a second cost little. The filter is one text: words like `host:node-b`,
`rank:1`, `role:server`, `level:warning` narrow the lines and any other words must appear in them.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.segment import Segment
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine.events import LogLine
from tui.keys import LOG_KEYS, bindings
from tui.messages import Act
from tui.widgets import fmt

MAX_LINES = 20_000
LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class LogFilter:
    """A parsed filter text."""

    host: str = ""
    rank: str = ""
    role: str = ""
    level: str = "debug"
    words: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, level: str = "debug") -> LogFilter:
        fields: dict[str, Any] = {"level": level}
        words = []
        for token in text.split():
            key, sep, value = token.partition(":")
            if sep and key in ("host", "rank", "role", "level") and value:
                fields[key] = value.lower()
            else:
                words.append(token.lower())
        return cls(words=tuple(words), **fields)

    def matches(self, line: LogLine) -> bool:
        if self.host and self.host not in line.host.lower():
            return False
        if self.rank and str(line.rank) != self.rank:
            return False
        if self.role and self.role != line.role.lower():
            return False
        if _level_rank(line.level) < _level_rank(self.level):
            return False
        text = line.text.lower()
        return all(word in text for word in self.words)


# The time, host and rank columns already say what these prefixes repeat: Python logging's
# "2026-11-26 08:55:22,897 Node[0@host] " and MXNet's C++ "[08:55:22] ".
REDUNDANT_PREFIX = re.compile(
    r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?:Node\[[^\]]*\] )?|\[\d\d:\d\d:\d\d\] )"
)


def shown_text(text: str) -> str:
    """What the pane draws of a line: without the prefixes its columns repeat, printable."""
    return printable(REDUNDANT_PREFIX.sub("", text, count=1))


def printable(text: str) -> str:
    """Tabs expanded and control characters shown as '?', so a line never breaks the screen."""
    text = text.expandtabs(4)
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)


def _level_rank(level: str) -> int:
    return LEVELS.index(level) if level in LEVELS else 1


class LogView(ScrollView, can_focus=True):
    """Keys: f follow/pause, / filter and search, v minimum level, g/G top/bottom."""

    COMPONENT_CLASSES = {
        "logview--meta",
        "logview--warning",
        "logview--error",
        "logview--debug",
        "logview--match",
    }
    BINDINGS = bindings(LOG_KEYS)

    follow: reactive[bool] = reactive(True)
    filter_text: reactive[str] = reactive("")
    min_level: reactive[str] = reactive("debug")

    def __init__(self, max_lines: int = MAX_LINES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.all_lines: deque[LogLine] = deque(maxlen=max_lines)
        self.shown: deque[LogLine] = deque(maxlen=max_lines)
        self.active = LogFilter()
        self.dirty = False
        self.received = 0

    def on_mount(self) -> None:
        self.set_interval(0.1, self.flush)

    def append(self, lines: Iterable[LogLine]) -> None:
        """Keep the lines; the screen catches up on the next flush (at most 10 a second)."""
        for line in lines:
            self.all_lines.append(line)
            if self.active.matches(line):
                self.shown.append(line)
            self.received += 1
        self.dirty = True

    def flush(self) -> None:
        # Following but not at the end (the pane was resized under us): catch up as if new lines came.
        behind = self.follow and self.scroll_offset.y != self.max_scroll_y
        if not (self.dirty or behind):
            return
        self.dirty = False
        self.virtual_size = Size(self.size.width, len(self.shown))
        if self.follow:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
        self.refresh()

    def refilter(self) -> None:
        self.active = LogFilter.parse(self.filter_text, self.min_level)
        self.shown = deque(
            (line for line in self.all_lines if self.active.matches(line)),
            maxlen=self.all_lines.maxlen,
        )
        self.dirty = True
        self.flush()

    def watch_filter_text(self) -> None:
        self.refilter()

    def watch_min_level(self) -> None:
        self.refilter()

    def on_resize(self) -> None:
        self.dirty = True  # shown again, or resized: keep the end in view when following

    def watch_follow(self, follow: bool) -> None:
        if follow:
            self.dirty = True
            self.flush()

    def render_line(self, y: int) -> Strip:
        index = y + self.scroll_offset.y
        width = self.size.width
        if index >= len(self.shown):
            return Strip.blank(width)
        line = self.shown[index]
        rank = "" if line.rank is None else str(line.rank)
        meta = f"{fmt.clock(line.time)} {line.host[:12]:<12} {line.role[:6]:<6}{rank:>3} "
        cls = f"logview--{line.level}" if line.level in ("warning", "error", "debug") else None
        text_style = self.get_component_rich_style(cls) if cls else None
        text = shown_text(line.text)
        segments = [
            Segment(meta, self.get_component_rich_style("logview--meta")),
            Segment(text, text_style),
        ]
        return Strip(segments).crop(0, width).adjust_cell_length(width)

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow

    def action_cycle_level(self) -> None:
        self.min_level = LEVELS[(LEVELS.index(self.min_level) + 1) % len(LEVELS)]

    def action_filter(self) -> None:
        self.post_message(Act("prompt_log_filter"))

    def action_top(self) -> None:
        self.follow = False
        self.scroll_home(animate=False)

    def action_bottom(self) -> None:
        self.follow = True

    def action_scroll_up(self) -> None:
        self.follow = False
        super().action_scroll_up()

    def action_page_up(self) -> None:
        self.follow = False
        super().action_page_up()

    def on_mouse_scroll_up(self) -> None:
        self.follow = False  # reading back pauses following, as in less +F
