"""The stages pane: one line per stage with state, progress bar, counts, rate, ETA and skipped files."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from rich.segment import Segment
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine import api
from engine.events import SkippedItem, StageProgress, StageState, TrainProgress
from tui.keys import STAGE_KEYS, bindings
from tui.messages import Act
from tui.widgets import fmt

BAR = 20
MAX_SKIPPED = 200


@dataclass
class StageView:
    """A stage as drawn: its saved status plus what live progress events said."""

    status: api.StageStatus
    started_at: float | None = None
    start_done: int = 0
    skipped_items: list[SkippedItem] = field(default_factory=list)
    train: TrainProgress | None = None  # the train row's epoch, batch, rate, ETA and accuracy

    def progress(self, event: StageProgress) -> None:
        if self.started_at is None or event.done < self.start_done:
            self.started_at, self.start_done = event.time, event.done
        elapsed = event.time - self.started_at
        rate = (event.done - self.start_done) / elapsed if elapsed > 0 else None
        remaining = (event.total - event.done) if event.total is not None else None
        eta = remaining / rate if rate and remaining is not None else None
        self.status = replace(
            self.status,
            done=event.done,
            total=event.total,
            skipped=max(event.skipped, self.status.skipped),
            unit=event.unit,
            rate=rate,
            eta_s=eta,
            message=event.message or self.status.message,
        )

    def state(self, event: StageState) -> None:
        if event.state == "running":
            self.started_at = None
            self.skipped_items.clear()
        self.status = replace(self.status, state=event.state, message=event.message)


class StageTable(ScrollView, can_focus=True):
    """Keys: s start, r resume, x stop, u undo, e edit options, a run all; arrows select."""

    COMPONENT_CLASSES = {
        "stagetable--header",
        "stagetable--cursor",
        "stagetable--pending",
        "stagetable--running",
        "stagetable--done",
        "stagetable--failed",
        "stagetable--stale",
        "stagetable--stopped",
        "stagetable--bar",
    }
    BINDINGS = bindings(STAGE_KEYS)

    cursor: reactive[int] = reactive(0)

    class Changed(Message):
        """The selected stage changed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.views: list[StageView] = []
        self.clock = time.time

    def set_stages(self, statuses: Iterable[api.StageStatus]) -> None:
        self.views = [StageView(s) for s in statuses]
        self.virtual_size = Size(self.size.width, len(self.views) + 1)
        self.refresh()

    def ingest(self, event: Any) -> None:
        view = self.view_of("train" if isinstance(event, TrainProgress) else event.stage)
        if view is None:
            return
        if isinstance(event, TrainProgress):
            view.train = event
        elif isinstance(event, StageProgress):
            view.progress(event)
        elif isinstance(event, StageState):
            view.state(event)
        elif isinstance(event, SkippedItem):
            view.skipped_items = (view.skipped_items + [event])[-MAX_SKIPPED:]
            view.status = replace(
                view.status, skipped=max(view.status.skipped, len(view.skipped_items))
            )
        self.refresh()

    def view_of(self, stage: str) -> StageView | None:
        return next((v for v in self.views if v.status.name == stage), None)

    @property
    def selected(self) -> StageView | None:
        return self.views[self.cursor] if 0 <= self.cursor < len(self.views) else None

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        bar, count = self._widths(width)
        if y == 0:
            head = f"  {'STAGE':<8}{'STATE':<9}{'PROGRESS':<{bar + 7}}{'COUNT':<{count}}{'RATE':>10}{'ETA':>8}{'SKIP':>6}{'ACC':>6}"
            return Strip(
                [
                    Segment(
                        fmt.fit(head, width), self.get_component_rich_style("stagetable--header")
                    )
                ],
                width,
            )
        index = y - 1 + self.scroll_offset.y
        if index >= len(self.views):
            return Strip.blank(width)
        return self._stage_strip(self.views[index], index == self.cursor, width, bar, count)

    @staticmethod
    def _widths(width: int) -> tuple[int, int]:
        """Bar and count column widths: narrower on an 80-column terminal so rate, ETA and skips fit."""
        return (BAR, 22) if width >= 100 else (6, 18)

    def _stage_strip(
        self, view: StageView, selected: bool, width: int, bar: int, count_w: int
    ) -> Strip:
        s = view.status
        frac, count, rate, eta, acc = _columns(s, view.train)
        percent = "" if frac is None else f"{frac * 100:3.0f}%"
        cursor = "▶ " if selected else "  "
        state_style = (
            self.get_component_rich_style(f"stagetable--{s.state}") if s.state in _STATES else None
        )
        segments = [
            Segment(cursor + f"{s.name:<8}"),
            Segment(f"{s.state:<9}", state_style),
            Segment(fmt.bar(frac, bar), self.get_component_rich_style("stagetable--bar")),
            Segment(
                f" {percent:>4}  {count[: count_w - 1]:<{count_w}}{rate:>10}{eta:>8}{(s.skipped or ''):>6}{acc:>6}"
            ),
        ]
        strip = Strip(segments).crop(0, width).adjust_cell_length(width)
        if selected and self.has_focus:
            strip = strip.apply_style(self.get_component_rich_style("stagetable--cursor"))
        return strip

    def watch_cursor(self) -> None:
        self.refresh()
        self.post_message(self.Changed())

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def action_move(self, step: int) -> None:
        self.cursor = max(0, min(len(self.views) - 1, self.cursor + step))

    def action_stage(self, what: str) -> None:
        view = self.selected
        if view is not None:
            self.post_message(Act(f"stage_{what}", stage=view.status.name))


_STATES = ("pending", "running", "done", "failed", "stale", "stopped")


def _columns(
    s: api.StageStatus, train: TrainProgress | None
) -> tuple[float | None, str, str, str, str]:
    """Fraction done, COUNT, RATE, ETA and ACC of a row; the train row counts epochs and batches."""
    running = s.state == "running"
    if train is not None:
        batches = f"/{train.batches}" if train.batches else ""
        count = f"ep {min(train.epoch + 1, train.epochs)}/{train.epochs} b {train.batch}{batches}"
        rate = "" if train.images_per_sec is None else f"{train.images_per_sec:,.0f}/s"
        eta = api.human_duration(train.eta_s) if running else ""
        acc = "" if train.val_accuracy is None else f"{train.val_accuracy:.3f}"
        fraction = 1.0 if s.state == "done" else train.fraction
        return fraction, count, rate, eta, acc
    frac = (s.done / s.total) if s.total else (1.0 if s.state == "done" else None)
    count = (
        f"{s.done:,}/{s.total:,} {s.unit}"
        if s.total is not None
        else (f"{s.done:,} {s.unit}" if s.done else "")
    )
    rate = f"{s.rate:,.1f}/s" if s.rate is not None and running else ""
    eta = api.human_duration(s.eta_s) if running else ""
    return frac, count, rate, eta, ""
