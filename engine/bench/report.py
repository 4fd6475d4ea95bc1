"""Scaling results as the tutorial's table, CSV, JSON, a PNG plot and an in-terminal braille plot.

Everything here is pure except the writers; matplotlib is imported only inside ``write_png``
(with the Agg backend, so it works without a display).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.events import ScalingPoint
from engine.paths import write_atomic, write_text_atomic

if TYPE_CHECKING:
    from engine.bench.model import Comparison

TABLE_COLUMNS = (
    "network",
    "batch/GPU",
    "GPUs",
    "workers",
    "images/s",
    "speedup",
    "ideal",
    "efficiency",
    "model",
)
CSV_COLUMNS = (
    "network",
    "batch_per_gpu",
    "gpus",
    "workers",
    "images_per_sec",
    "speedup",
    "ideal_speedup",
    "efficiency",
    "predicted_efficiency",
    "readings",
    "per_worker",
    "message",
)
Series = Sequence[tuple[str, Sequence[tuple[float, float]]]]  # (name, [(gpus, speedup), …])


def add_speedup(points: Iterable[ScalingPoint]) -> list[ScalingPoint]:
    """Fill speedup and efficiency against each network's smallest measured size (ideal = GPUs)."""
    points = list(points)
    base: dict[str, float] = {}
    for p in sorted(points, key=lambda p: p.gpus):
        if p.images_per_sec and p.network not in base:
            base[p.network] = p.images_per_sec / p.gpus  # per-GPU rate at the smallest size
    out = []
    for p in points:
        per_gpu = base.get(p.network)
        if p.images_per_sec is None or not per_gpu:
            out.append(replace(p, speedup=None, efficiency=None))
            continue
        speedup = p.images_per_sec / per_gpu
        out.append(replace(p, speedup=speedup, efficiency=speedup / p.gpus))
    return out


def networks(points: Iterable[ScalingPoint]) -> list[str]:
    """Network names in first-seen order."""
    return list(dict.fromkeys(p.network for p in points))


def _num(value: float | None, fmt: str) -> str:
    return "N/A" if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return "N/A" if value is None else f"{100 * value:.1f}%"


def table_rows(points: Iterable[ScalingPoint]) -> list[tuple[str, ...]]:
    """One row per measured cell, in TABLE_COLUMNS order, ready for a text table or a DataTable."""
    return [
        (
            p.network,
            str(p.batch_per_gpu),
            str(p.gpus),
            str(p.workers),
            _num(p.images_per_sec, ",.1f") if p.images_per_sec is not None else "failed",
            _num(p.speedup, ".2f"),
            str(p.gpus),
            _pct(p.efficiency),
            _pct(p.predicted_efficiency),
        )
        for p in points
    ]


def format_columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Right-aligned columns (the first left-aligned) with a rule under the header."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = str(cells[0]).ljust(widths[0])
        return "  ".join([first, *(str(c).rjust(w) for c, w in zip(cells[1:], widths[1:]))])

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def tutorial_table(points: Iterable[ScalingPoint]) -> str:
    """The tutorial's layout: one row per GPU count, one column per network, images/s in the cells."""
    points = list(points)
    names = networks(points)
    cell = {(p.network, p.gpus): p for p in points}
    rows = []
    for gpus in sorted({p.gpus for p in points}):
        row = [str(gpus)]
        for name in names:
            p = cell.get((name, gpus))
            row.append("" if p is None else _cell(p))
        rows.append(row)
    return format_columns(["#GPUs", *names], rows)


def _cell(p: ScalingPoint) -> str:
    if p.images_per_sec is None:
        return "failed"
    text = f"{p.images_per_sec:,.1f}"
    if p.speedup is not None and p.efficiency is not None:
        text += f" ({p.speedup:.2f}x, {100 * p.efficiency:.0f}%)"
    return text


def format_report(points: Iterable[ScalingPoint], title: str = "") -> str:
    """The text a sweep prints: the tutorial's table, then every cell with speedup and efficiency."""
    points = list(points)
    parts = [title] if title else []
    parts += ["Images/s (speedup, efficiency against ideal):", tutorial_table(points), ""]
    parts += [format_columns(TABLE_COLUMNS, table_rows(points))]
    failed = [p for p in points if p.images_per_sec is None and p.message]
    parts += [f"{p.network} on {p.gpus}: {p.message}" for p in failed]
    return "\n".join(parts)


def to_csv(points: Iterable[ScalingPoint]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in points:
        writer.writerow(
            [
                p.network,
                p.batch_per_gpu,
                p.gpus,
                p.workers,
                _raw(p.images_per_sec),
                _raw(p.speedup),
                p.gpus,
                _raw(p.efficiency),
                _raw(p.predicted_efficiency),
                p.readings,
                ";".join(f"{r:.3f}" for r in p.per_worker),
                p.message,
            ]
        )
    return buf.getvalue()


def _raw(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def to_json(points: Iterable[ScalingPoint], meta: dict | None = None) -> str:
    """{"meta": {...}, "points": [...]}: every field of every point, ideal speedup included."""
    rows = [{**asdict(p), "ideal_speedup": p.gpus} for p in points]
    return json.dumps({"meta": meta or {}, "points": rows}, indent=2, sort_keys=False) + "\n"


def write_text(path: Path, text: str) -> Path:
    """Write to a temporary name, then rename: a reader never sees half a file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, text)


def speedup_series(points: Iterable[ScalingPoint]) -> list[tuple[str, list[tuple[float, float]]]]:
    """(network, [(GPUs, speedup), …]) for every network, measured points only, by GPU count."""
    points = list(points)
    out = []
    for name in networks(points):
        pts = sorted((p.gpus, p.speedup) for p in points if p.network == name and p.speedup)
        out.append((name, [(float(g), float(s)) for g, s in pts]))
    return out


def use_log_axes(series: Series) -> bool:
    """Log axes when the GPU counts span 8× or more (1…256 doubling), linear for small sweeps."""
    xs = [x for _, pts in series for x, _ in pts]
    return bool(xs) and max(xs) / min(xs) >= 8


PLOT_MISSING = "scaling.png not drawn: it needs matplotlib (pip install 'imgscale[plot]')"


def can_plot() -> bool:
    """Whether matplotlib can be imported here (found without importing it)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def write_png(
    points: Iterable[ScalingPoint], path: Path, title: str = "Speedup against ideal"
) -> Path:
    """Speedup against GPUs, one line per network, plus the ideal diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = speedup_series(points)
    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    try:
        _draw_png(ax, series, title)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))  # the name ends in .tmp
    finally:
        plt.close(fig)
    return path


def _draw_png(ax: Any, series: Series, title: str) -> None:  # Any: matplotlib is imported lazily
    xs = sorted({x for _, pts in series for x, _ in pts}) or [1.0]
    ax.plot(xs, xs, linestyle="--", color="grey", label="ideal")
    for name, pts in series:
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=name)
    if use_log_axes(series):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x:g}" for x in xs])
    ax.set_yticks(xs)  # ideal speedup equals the GPU count, so the same ticks read off both axes
    ax.set_yticklabels([f"{x:g}" for x in xs])
    ax.set_xlabel("GPUs (workers × devices)")
    ax.set_ylabel("speedup")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()


# --- the in-terminal plot ------------------------------------------------------------------

BRAILLE_BASE = 0x2800
# Dot bit of the braille cell for (column 0–1, row 0–3), per the Unicode braille block.
BRAILLE_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
IDEAL = -1  # owner id of the ideal diagonal in TextPlot.owners


@dataclass(frozen=True)
class TextPlot:
    """A plot drawn with braille dots, ready to print or to put in a Static widget.

    ``owners[row][col]`` says what each character of ``lines`` belongs to: the index of a series in
    ``legend``, IDEAL (-1) for the ideal diagonal, or None (axes, labels, blank), so a UI can colour
    the series without parsing text.
    """

    lines: tuple[str, ...]
    owners: tuple[tuple[int | None, ...], ...]
    legend: tuple[tuple[str, str], ...]  # (marker, series name)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class _Canvas:
    """Braille cells: each character is 2 dots wide and 4 dots high."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.bits = [[0] * width for _ in range(height)]
        self.owner: list[list[int | None]] = [[None] * width for _ in range(height)]
        self.marks: dict[tuple[int, int], str] = {}

    def dot(self, x: int, y: int, owner: int) -> None:
        if 0 <= x < 2 * self.width and 0 <= y < 4 * self.height:
            row, col = y // 4, x // 2
            self.bits[row][col] |= BRAILLE_BITS[x % 2][y % 4]
            if self.owner[row][col] in (None, IDEAL) or owner != IDEAL:
                self.owner[row][col] = owner

    def line(self, a: tuple[int, int], b: tuple[int, int], owner: int, every: int = 1) -> None:
        steps = max(abs(b[0] - a[0]), abs(b[1] - a[1]), 1)
        for i in range(steps + 1):
            if i % every == 0:
                x = round(a[0] + (b[0] - a[0]) * i / steps)
                y = round(a[1] + (b[1] - a[1]) * i / steps)
                self.dot(x, y, owner)

    def mark(self, x: int, y: int, char: str, owner: int) -> None:
        row, col = min(y // 4, self.height - 1), min(x // 2, self.width - 1)
        self.marks[(row, col)] = char
        self.owner[row][col] = owner

    def rows(self) -> list[tuple[str, list[int | None]]]:
        out = []
        for r in range(self.height):
            chars = [
                self.marks.get((r, c)) or (chr(BRAILLE_BASE + b) if b else " ")
                for c, b in enumerate(self.bits[r])
            ]
            out.append(("".join(chars), list(self.owner[r])))
        return out


def _markers(names: Sequence[str]) -> list[str]:
    """One letter per series, from its name where it does not clash (a alexnet, i inception …)."""
    used: set[str] = set()
    out = []
    for name in names:
        pick = next((c for c in name.lower() if c.isalnum() and c not in used), None)
        pick = pick or next(c for c in "123456789abcdefghijklmnopqrstuvwxyz" if c not in used)
        used.add(pick)
        out.append(pick)
    return out


def speedup_plot(
    series: Series, width: int = 60, height: int = 16, log: bool | None = None
) -> TextPlot:
    """Speedup against GPUs, one braille line per series, the ideal diagonal dotted.

    ``width``/``height`` are the plot area in characters (axes and labels come on top of that).
    Points are marked with each series' letter (see ``legend``).
    """
    width, height = max(8, width), max(4, height)
    log = use_log_axes(series) if log is None else log
    xs = [x for _, pts in series for x, y in pts if x > 0 and y > 0]
    ys = [y for _, pts in series for x, y in pts if x > 0 and y > 0]
    x_lo, x_hi = _range(xs)
    y_lo, y_hi = _range(ys + [x_lo, x_hi])  # the y axis also holds the ideal line's ends
    x_scale, y_scale = _scaler(x_lo, x_hi, log), _scaler(y_lo, y_hi, log)
    canvas = _Canvas(width, height)

    def to_dots(x: float, y: float) -> tuple[int, int]:
        return round(x_scale(x) * (2 * width - 1)), round((1 - y_scale(y)) * (4 * height - 1))

    canvas.line(to_dots(x_lo, x_lo), to_dots(x_hi, x_hi), IDEAL, every=2)
    marks = _markers([name for name, _ in series])
    for index, (_, pts) in enumerate(series):
        dots = [to_dots(x, y) for x, y in pts if x > 0 and y > 0]
        for a, b in itertools.pairwise(dots):
            canvas.line(a, b, index)
        for d in dots:
            canvas.mark(*d, marks[index], index)
    legend = [(m, n) for m, (n, _) in zip(marks, series)]
    return _frame(canvas, (y_lo, y_hi), y_scale, x_scale, log, legend, series)


def _range(values: list[float]) -> tuple[float, float]:
    lo, hi = (min(values), max(values)) if values else (1.0, 2.0)
    return lo, (hi if hi > lo else lo * 2)


def _scaler(lo: float, hi: float, log: bool) -> Callable[[float], float]:
    if log:
        span = math.log2(hi) - math.log2(lo)
        return lambda v: (math.log2(max(v, lo)) - math.log2(lo)) / span
    return lambda v: (v - lo) / (hi - lo)


def _frame(
    canvas: _Canvas,
    y_range: tuple[float, float],
    y_scale: Callable[[float], float],
    x_scale: Callable[[float], float],
    log: bool,
    legend: Sequence[tuple[str, str]],
    series: Series,
) -> TextPlot:
    """Add the y labels, the x axis with the GPU counts under their columns, and the legend."""
    lo, hi = y_range
    labels = {0: f"{hi:.3g}", canvas.height - 1: f"{lo:.3g}"}
    mid = math.sqrt(lo * hi) if log else (lo + hi) / 2
    labels.setdefault(round((1 - y_scale(mid)) * (canvas.height - 1)), f"{mid:.3g}")
    pad = max(len(s) for s in labels.values())
    lines: list[str] = []
    owners: list[tuple[int | None, ...]] = []
    for r, (text, own) in enumerate(canvas.rows()):
        lines.append(f"{labels.get(r, ''):>{pad}} ┤{text}")
        owners.append(tuple([None] * (pad + 2) + own))
    lines.append(" " * pad + " └" + "─" * canvas.width)
    lines.append(" " * (pad + 2) + _x_labels(canvas.width, x_scale, series))
    lines.append(
        " " * (pad + 2) + "GPUs →   " + "  ".join(f"{m} {n}" for m, n in legend) + "  ⠒ ideal"
    )
    owners += [tuple([None] * len(line)) for line in lines[len(owners) :]]
    return TextPlot(tuple(lines), tuple(owners), tuple(legend))


def _x_labels(width: int, scale: Callable[[float], float], series: Series) -> str:
    row = [" "] * (width + 8)
    xs = sorted({x for _, pts in series for x, _ in pts})
    end = -1
    for x in xs:
        text, col = f"{x:g}", round(scale(x) * (width - 1))
        start = max(0, min(col - len(text) // 2, width + 8 - len(text)))
        if start > end:  # skip a label that would overlap the previous one
            row[start : start + len(text)] = text
            end = start + len(text)
    return "".join(row).rstrip()


def format_comparison(rows: Iterable[Comparison], title: str = "") -> str:
    """The model against the published table: images/s and efficiency, predicted and published."""
    header = (
        "network",
        "GPUs",
        "published img/s",
        "model img/s",
        "published eff",
        "model eff",
        "Δ pts",
    )
    body = [
        (
            c.network,
            str(c.gpus),
            f"{c.published_images_per_s:,.1f}",
            f"{c.predicted_images_per_s:,.1f}",
            _pct(c.published_efficiency),
            _pct(c.predicted_efficiency),
            f"{c.error_points:+.1f}",
        )
        for c in rows
    ]
    return "\n".join(([title] if title else []) + [format_columns(header, body)])
