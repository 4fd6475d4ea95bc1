"""The hosts grid: a row per host (reachability, CPU, memory, disk, images/s) and its GPUs as bars and sparklines.

Drawn with Textual's line API, so a refresh renders only the visible lines however many hosts there are.
Looks come from component classes styled in app.tcss (stragglers, failed and unreachable hosts).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine import api
from engine.events import GpuSample, HostSample, HostState, Throughput
from tui.keys import HOST_KEYS, bindings
from tui.messages import Act
from tui.widgets import fmt

# (host, images/s, mean GPU util, CPU %) -> its cause: input | compute | network | ""
CauseOf = Callable[[str, float | None, float | None, float | None], str]
HISTORY = 12
SPARK = 12  # cells of a host's images/s history (the whole job, squeezed)
GPU_CELL = 24
SORTS = ("name", "rate", "util", "state")


@dataclass
class HostRow:
    """What the grid knows about one host (display state only, fed by events)."""

    name: str
    reachable: bool | None = None
    reason: str = ""
    sample: HostSample | None = None
    gpus: dict[int, GpuSample] = field(default_factory=dict)
    util_history: dict[int, deque] = field(default_factory=dict)
    workers: dict[int | None, float] = field(default_factory=dict)
    rate: float | None = None
    straggler: bool = False
    failed: bool = False
    cause: str = ""  # input | compute | network | "" (engine.api.host_cause)

    def add_gpu(self, gpu: GpuSample) -> None:
        self.gpus[gpu.index] = gpu
        self.util_history.setdefault(gpu.index, deque(maxlen=HISTORY)).append(gpu.util_percent)

    @property
    def mean_util(self) -> float | None:
        known = [g.util_percent for g in self.gpus.values() if g.util_percent is not None]
        return sum(known) / len(known) if known else None

    @property
    def no_gpu(self) -> bool:
        return not self.gpus and self.sample is not None and self.sample.gpu_count == 0

    @property
    def state_word(self) -> str:
        if self.failed:
            return "failed"
        if self.reachable is False:
            return "down"
        return "up" if self.reachable else "?"


class HostGrid(ScrollView, can_focus=True):
    """Hosts and their GPUs; keys: o sort, / filter, c compact, j/k or arrows scroll."""

    COMPONENT_CLASSES = {
        "hostgrid--header",
        "hostgrid--host",
        "hostgrid--down",
        "hostgrid--failed",
        "hostgrid--straggler",
        "hostgrid--gpu",
        "hostgrid--hot",
        "hostgrid--nogpu",
        "hostgrid--dim",
    }
    BINDINGS = bindings(HOST_KEYS)

    sort_key: reactive[str] = reactive("name")
    name_filter: reactive[str] = reactive("")
    compact: reactive[bool | None] = reactive(None)  # None: decided by width

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rows: dict[str, HostRow] = {}
        self.order: list[HostRow] = []
        self.lines: list[tuple[HostRow | None, int]] = []  # (row, line within row) per screen line
        self.stragglers: frozenset[str] = frozenset()
        self.dirty = True
        self.crowded = False
        # the cause column's verdict, from the session (its speeds and the job's shape)
        self.cause_of: CauseOf = no_cause
        # host -> images/s over the whole job, kept by the engine (every reading, none coalesced away)
        self.histories: dict[str, api.Series] = {}
        self._style_cache: dict[
            str, Style
        ] = {}  # component styles, looked up once per refresh not per cell

    # ---- data in -----------------------------------------------------------------------
    def set_hosts(self, names: Iterable[str]) -> None:
        """The workspace's hosts, drawn at once (the console opens with them listed)."""
        for name in names:
            self.rows.setdefault(name, HostRow(name))
        self.rebuild()

    def ingest(self, samples: Iterable[Any]) -> None:
        """Merge the newest samples; drawing waits for the next refresh tick."""
        for event in samples:
            row = self.rows.get(event.host)
            if row is None:
                row = self.rows[event.host] = HostRow(event.host)
            if isinstance(event, GpuSample):
                row.add_gpu(event)
            elif isinstance(event, HostSample):
                row.sample = event
            elif isinstance(event, HostState):
                row.reachable, row.reason = event.reachable, event.reason
            elif isinstance(event, Throughput):
                row.workers[event.rank] = event.samples_per_sec
                row.rate = sum(row.workers.values())
        self.dirty = True

    def set_cluster(
        self, host_rates: Iterable[tuple[str, float]], stragglers: Iterable[str]
    ) -> None:
        self.stragglers = frozenset(stragglers)
        straggling_hosts = {s.split("#")[0] for s in self.stragglers}
        for name, rate in host_rates:
            if name in self.rows:
                self.rows[name].rate = rate
        for row in self.rows.values():
            row.straggler = row.name in straggling_hosts
        self.dirty = True

    def mark_failed(self, hosts: Iterable[str]) -> None:
        failed = set(hosts)
        for row in self.rows.values():
            row.failed = row.name in failed
        self.dirty = True

    # ---- layout ------------------------------------------------------------------------
    def on_mount(self) -> None:
        self.set_interval(1.0, self.tick)

    def tick(self) -> None:
        if self.dirty:
            self.rebuild()

    def rebuild(self) -> None:
        """Sort, filter and lay out rows into screen lines, then redraw the visible part."""
        self.dirty = False
        self._style_cache.clear()
        self.order = sorted(self._visible_rows(), key=self._sort_value)
        for row in self.order:
            row.cause = self._cause(row)
        self.crowded = False
        self.lines = self._layout(self.is_compact)
        if self.compact is None and not self.is_compact and len(self.lines) > self.size.height:
            self.crowded = True  # full rows would not fit: one line per host shows them all
            self.lines = self._layout(True)
        self.virtual_size = Size(self.size.width, len(self.lines))
        self.refresh()

    def _cause(self, row: HostRow) -> str:
        cpu = row.sample.cpu_percent if row.sample else None
        return self.cause_of(row.name, row.rate, row.mean_util, cpu)

    def _layout(self, compact: bool) -> list[tuple[HostRow | None, int]]:
        per_line = self._cells_per_line()
        lines: list[tuple[HostRow | None, int]] = [(None, 0)]
        for row in self.order:
            full = not compact and row.reachable is not False
            extra = -(-max(1, len(row.gpus)) // per_line) if full else 0
            lines.extend((row, i) for i in range(1 + extra))
        return lines

    def _visible_rows(self) -> list[HostRow]:
        text = self.name_filter.strip().lower()
        if not text:
            return list(self.rows.values())
        if text in ("down", "failed", "straggler"):
            return [
                r
                for r in self.rows.values()
                if text in (r.state_word, "straggler" if r.straggler else "")
            ]
        return [r for r in self.rows.values() if text in r.name.lower()]

    def _sort_value(self, row: HostRow) -> tuple:
        if self.sort_key == "rate":
            return (row.rate is None, row.rate or 0.0, row.name)
        if self.sort_key == "util":
            return (row.mean_util is None, row.mean_util or 0.0, row.name)
        if self.sort_key == "state":
            rank = {"failed": 0, "down": 1, "?": 2, "up": 3}[row.state_word]
            return (rank, not row.straggler, row.name)
        return (row.name,)

    @property
    def is_compact(self) -> bool:
        """Chosen with c; else by width, and by height once full rows would not fit (crowded)."""
        if self.compact is not None:
            return self.compact
        return self.size.width < 120 or self.crowded

    def _cells_per_line(self) -> int:
        return max(1, (self.size.width - 4) // GPU_CELL)

    def on_resize(self) -> None:
        self.rebuild()

    def watch_sort_key(self) -> None:
        self.rebuild()

    def watch_name_filter(self) -> None:
        self.rebuild()

    def watch_compact(self) -> None:
        self.rebuild()

    # ---- drawing -----------------------------------------------------------------------
    def cell_style(self, name: str) -> Style:
        style = self._style_cache.get(name)
        if style is None:
            style = self._style_cache[name] = self.get_component_rich_style(name)
        return style

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._style_cache.clear()  # the theme or the CSS changed

    def render_line(self, y: int) -> Strip:
        # Line 0 is the column header and stays put while the hosts scroll under it.
        index = 0 if y == 0 else y + self.scroll_offset.y
        width = self.size.width
        if index == 0 or index >= len(self.lines):
            text = self._header_text() if index == 0 else ""
            style = self.cell_style("hostgrid--header") if index == 0 else Style()
            return Strip([Segment(fmt.fit(text, width), style)], width)
        row, part = self.lines[index]
        assert row is not None
        if part == 0:
            return self._host_strip(row, width)
        return self._gpu_strip(row, part - 1, width)

    def _header_text(self) -> str:
        if self.is_compact:
            return f"{'HOST':<14}{'STATE':<6}{'CPU':>5}{'MEM':>5}{'IMG/S':>8} {'CAUSE':<8} GPUs (util)  sort:{self.sort_key}"
        return (
            f"{'HOST':<16}{'STATE':<7}{'CPU':>5} {'':8}{'MEM':>5} {'':6}{'DISK':>5}{'IMG/S':>9} "
            f"{'(JOB)':<{SPARK}} {'CAUSE':<8} WORKERS · ADVICE   sort:{self.sort_key}"
            + (f" filter:{self.name_filter}" if self.name_filter else "")
        )

    def _row_style(self, row: HostRow) -> Style:
        for cls, flag in (
            ("hostgrid--failed", row.failed),
            ("hostgrid--down", row.reachable is False),
            ("hostgrid--straggler", row.straggler),
        ):
            if flag:
                return self.cell_style(cls)
        return self.cell_style("hostgrid--host")

    def _host_strip(self, row: HostRow, width: int) -> Strip:
        style = self._row_style(row)
        s = row.sample
        cpu = s.cpu_percent if s else None
        mem = fmt.ratio(s.mem_used_bytes, s.mem_total_bytes) if s else None
        disk = fmt.ratio(s.disk_used_bytes, s.disk_total_bytes) if s else None
        if self.is_compact:
            text = f"{row.name[:13]:<14}{row.state_word:<6}{fmt.pct(cpu, 5)}{fmt.pct(_p(mem), 5)}{fmt.num(row.rate, 0, 8)} {row.cause:<8} "
            return (
                Strip([Segment(text, style), *self._compact_gpus(row, width - len(text))])
                .crop(0, width)
                .adjust_cell_length(width)
            )
        if row.reachable is False:
            text = f"{row.name[:15]:<16}{'down':<7}{row.reason or 'unreachable'}"
            return Strip([Segment(fmt.fit(text, width), style)], width)
        workers = " ".join(
            f"w{r}:{fmt.num(v, 0)}"
            for r, v in sorted(row.workers.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
        )
        advice = api.CAUSE_ADVICE.get(row.cause, "")
        series = self.histories.get(row.name)
        history = fmt.spark(fmt.squeeze(series.values() if series else [], SPARK), SPARK)
        text = (
            f"{row.name[:15]:<16}{row.state_word:<7}{fmt.pct(cpu, 5)} {fmt.bar(_f(cpu), 8)}"
            f"{fmt.pct(_p(mem), 5)} {fmt.bar(mem, 6)}{fmt.pct(_p(disk), 5)}{fmt.num(row.rate, 0, 9)} "
            f"{history} {row.cause:<8} {workers}" + (f" · {advice}" if advice else "")
        )
        return Strip([Segment(fmt.fit(text, width), style)], width)

    def _compact_gpus(self, row: HostRow, room: int) -> list[Segment]:
        if row.no_gpu:
            return [Segment("no GPU", self.cell_style("hostgrid--nogpu"))]
        gpu_style = self.cell_style("hostgrid--gpu")
        chars = "".join(fmt.level(_f(g.util_percent)) for _, g in sorted(row.gpus.items()))
        return [Segment(chars[: max(0, room)], gpu_style)]

    def _gpu_strip(self, row: HostRow, line: int, width: int) -> Strip:
        if row.no_gpu or not row.gpus:
            word = "no GPU" if row.no_gpu else "no GPU data yet"
            return Strip(
                [
                    Segment(
                        fmt.fit("    " + word, width),
                        self.cell_style("hostgrid--nogpu"),
                    )
                ],
                width,
            )
        per_line = self._cells_per_line()
        gpus = sorted(row.gpus.items())[line * per_line : (line + 1) * per_line]
        segments = [Segment("    ")]
        for index, gpu in gpus:
            segments.extend(self._gpu_cell(index, gpu, row.util_history.get(index, ())))
        return Strip(segments).adjust_cell_length(width)

    def _gpu_cell(
        self, index: int, gpu: GpuSample, history: Iterable[float | None]
    ) -> list[Segment]:
        """` 3██▌ 87% ▅ 71° 250W▂▃▅` (24 cells) — util bar, memory level, temperature, power, util history."""
        util = _f(gpu.util_percent)
        mem = fmt.ratio(gpu.mem_used_mib, gpu.mem_total_mib)
        cls = (
            "hostgrid--dim"
            if gpu.lost
            else ("hostgrid--hot" if (util or 0) >= 0.5 else "hostgrid--gpu")
        )
        temp = fmt.NA if gpu.temperature_c is None else f"{gpu.temperature_c:.0f}°"
        power = fmt.NA if gpu.power_w is None else f"{gpu.power_w:.0f}W"
        text = f" {index:>2}{fmt.bar(util, 3)}{fmt.pct(gpu.util_percent, 4)} {fmt.level(mem)}{temp:>4}{power:>5}"
        sparkline = fmt.spark(history, 3, top=100.0)
        return [
            Segment(text, self.cell_style(cls)),
            Segment(sparkline, self.cell_style("hostgrid--gpu")),
        ]

    # ---- actions -----------------------------------------------------------------------
    def action_cycle_sort(self) -> None:
        self.sort_key = SORTS[(SORTS.index(self.sort_key) + 1) % len(SORTS)]

    def action_toggle_compact(self) -> None:
        self.compact = not self.is_compact

    def action_filter(self) -> None:
        self.post_message(Act("prompt_host_filter"))


def no_cause(host: str, rate: float | None, gpu_util: float | None, cpu: float | None) -> str:
    """Before the workspace is open: nothing to say."""
    return ""


def _f(percent: float | None) -> float | None:
    return None if percent is None else percent / 100.0


def _p(fraction: float | None) -> float | None:
    return None if fraction is None else fraction * 100.0
