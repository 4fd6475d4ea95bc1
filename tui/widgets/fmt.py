"""Pure text helpers for the console: bars, sparklines, numbers and durations; N/A for missing values."""

from __future__ import annotations

import time
from collections.abc import Iterable

NA = "N/A"
BLOCKS = " ▏▎▍▌▋▊▉█"
SPARKS = "▁▂▃▄▅▆▇█"


def bar(fraction: float | None, width: int) -> str:
    """A horizontal bar with eighth-cell resolution; blank dots when unknown."""
    if fraction is None:
        return "·" * width
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (BLOCKS[part] if part and full < width else "")
    return text.ljust(width)


def spark(values: Iterable[float | None], width: int, top: float | None = None) -> str:
    """The last `width` values as a sparkline (scaled to `top`, or to their own maximum)."""
    data = list(values)[-width:]
    known = [v for v in data if v is not None]
    peak = top or (max(known) if known else 0) or 1.0
    chars = [" " if v is None else SPARKS[min(7, max(0, int(v / peak * 7.999)))] for v in data]
    return "".join(chars).rjust(width)


def squeeze(values: list[float], width: int) -> list[float]:
    """At most `width` values: neighbours averaged, so a whole series fits a sparkline of that width."""
    if len(values) <= width:
        return values
    step = len(values) / width
    out = []
    for i in range(width):
        chunk = values[int(i * step) : max(int(i * step) + 1, int((i + 1) * step))]
        out.append(sum(chunk) / len(chunk))
    return out


def level(fraction: float | None) -> str:
    """One character for a 0..1 value (a GPU in compact mode)."""
    if fraction is None:
        return "·"
    return SPARKS[min(7, max(0, int(fraction * 7.999)))]


def num(value: float | None, digits: int = 0, width: int = 0) -> str:
    text = NA if value is None else f"{value:,.{digits}f}"
    return text.rjust(width)


def pct(value: float | None, width: int = 4) -> str:
    return (NA if value is None else f"{value:.0f}%").rjust(width)


def gib(value: float | None) -> str:
    return NA if value is None else f"{value / 2**30:.0f}G"


def clock(stamp: float) -> str:
    """HH:MM:SS in UTC, so recorded logs look the same on every machine."""
    return time.strftime("%H:%M:%S", time.gmtime(stamp))


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def fit(text: str, width: int) -> str:
    """Cut or pad to exactly `width` cells (our text is single-width)."""
    return text[:width].ljust(width)
