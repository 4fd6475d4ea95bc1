"""Plain-terminal progress for the headless CLI: a redrawn bar on a TTY, a line every few seconds otherwise.

The engine never imports a UI library, so the CLI draws its own bar from StageProgress events.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from engine.events import Event, Failure, SkippedItem, StageProgress, StageState

BAR_WIDTH = 28
PLAIN_INTERVAL_S = 5.0


def human_bytes(n: float | None) -> str:
    if n is None:
        return "N/A"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_duration(seconds: float | None) -> str:
    """M:SS or H:MM:SS, as the CLI's bar and the console's tables show an ETA; --:-- when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return (
        f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
        if hours
        else f"{rest // 60:02d}:{rest % 60:02d}"
    )


def progress_line(event: StageProgress, elapsed_s: float) -> str:
    """One line: stage, bar, count, bytes, rate, ETA, skipped."""
    # Below half a second a rate is noise (a stage that finishes at once would show millions/s).
    rate = event.done / elapsed_s if elapsed_s >= 0.5 else 0.0
    if event.total:
        frac = min(1.0, event.done / event.total)
        filled = int(frac * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        count = f"{event.done}/{event.total} {event.unit}"
        eta = human_duration((event.total - event.done) / rate) if rate > 0 else "--:--"
    else:
        bar, count, eta = "." * BAR_WIDTH, f"{event.done} {event.unit}", "--:--"
    shown_rate = f"{rate:,.1f}/s" if rate else "--/s"
    parts = [f"{event.stage:<7}", f"[{bar}]", count, shown_rate, f"ETA {eta}"]
    if event.bytes_done:
        parts.insert(3, human_bytes(event.bytes_done))
    if event.skipped:
        parts.append(f"skipped {event.skipped}")
    if event.part:
        parts.append(event.part)
    return "  ".join(parts)


class CliProgress:
    """An EventSink for CLI commands: draws progress, prints states, skips and failures."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.started: dict[str, float] = {}
        self.last_plain = 0.0
        self.last_line = ""
        self.finished: set[tuple[str, str, int]] = (
            set()
        )  # (stage, part, total) already shown complete

    def __call__(self, event: Event) -> None:
        if isinstance(event, StageProgress):
            self._progress(event)
        elif isinstance(event, StageState):
            self._print(
                f"{event.stage}: {event.state}" + (f" - {event.message}" if event.message else "")
            )
        elif isinstance(event, SkippedItem):
            self._print(f"{event.stage}: skipped {event.path}: {event.reason}")
        elif isinstance(event, Failure):
            self._print(
                f"{event.source}: {event.message}"
                + (f" ({event.diagnosis})" if event.diagnosis else "")
            )

    def _progress(self, event: StageProgress) -> None:
        if self.quiet:
            return
        start = self.started.setdefault(event.stage, time.monotonic())
        line = progress_line(event, time.monotonic() - start)
        if self.tty:
            self.stream.write("\r" + line[:200].ljust(len(self.last_line)))
            self.stream.flush()
            self.last_line = line
        elif self._plain_due(event):
            self.last_plain = time.monotonic()
            self.stream.write(line + "\n")

    def _plain_due(self, event: StageProgress) -> bool:
        """In a log file: a line every few seconds, and each part's completion once."""
        if event.total is not None and event.done >= event.total:
            key = (event.stage, event.part, event.total)
            if key in self.finished:
                return False
            self.finished.add(key)
            return True
        return time.monotonic() - self.last_plain >= PLAIN_INTERVAL_S

    def _print(self, text: str) -> None:
        if self.tty and self.last_line:
            self.stream.write("\n")
            self.last_line = ""
        self.stream.write(text + "\n")
        self.stream.flush()
