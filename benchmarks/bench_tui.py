"""Console benchmark (not a test): a 256-host x 8-GPU grid fed replayed engine events at 1 Hz, and 2,000 log lines/s.

Runs the real console headless (Textual's test driver, 200x60) and feeds the events through the real path:
Session.emit -> the bridge worker -> coalesced messages -> widgets. Prints, for the grid, the time of each
refresh (ingesting a second's samples, re-laying out the rows and drawing the visible lines) and the
console process's CPU use; for the log, how far the pane falls behind, its CPU use and its memory.

    .venv/bin/python benchmarks/bench_tui.py [--seconds 20] [--log-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from engine import workspace as wsmod
from engine.events import GpuSample, HostSample, HostState, LogLine, Throughput
from tui.app import ImgscaleApp
from tui.widgets.hostgrid import HostGrid
from tui.widgets.logview import MAX_LINES, LogView

HOSTS, GPUS = 256, 8
GRID_TARGET_MS, CPU_TARGET = 50.0, 15.0


def sample_round(second: int, t0: float) -> list:
    """One second of a cluster's telemetry, as the probes and log parser emit it."""
    t = t0 + second
    events: list = []
    for h in range(HOSTS):
        name = f"gpu-node-{h:03d}"
        events.append(
            HostState(name, h % 97 != 5, "" if h % 97 != 5 else "timeout after 10 s", time=t)
        )
        events.append(
            HostSample(
                name,
                cpu_percent=(h * 7 + second) % 100,
                cpu_count=96,
                mem_used_bytes=(100 + h % 50) * 2**30,
                mem_total_bytes=768 * 2**30,
                disk_used_bytes=2**40,
                disk_total_bytes=4 * 2**40,
                gpu_count=GPUS,
                time=t,
            )
        )
        for g in range(GPUS):
            events.append(
                GpuSample(
                    name,
                    g,
                    name="A100",
                    util_percent=float((h + g * 11 + second * 13) % 100),
                    mem_used_mib=30000.0 + g * 100,
                    mem_total_mib=81920.0,
                    temperature_c=60.0 + g,
                    power_w=250.0 + (second % 50),
                    power_limit_w=400.0,
                    time=t,
                )
            )
        events.append(
            Throughput(name, h, 2400.0 - (h % 13) * 10, epoch=0, batch=second * 20, time=t)
        )
    return events


def workspace(folder: Path) -> Path:
    wsmod.create(folder, {"name": "bench", "root": "images"})
    return folder


class GridTimer:
    """Times one refresh of the grid: ingesting a second's samples, the layout, and the drawing of the
    first frame after it (one call per visible line). Both wall time and this thread's CPU time are kept:
    on a shared, loaded machine the wall time includes time the OS gave to other processes."""

    def __init__(self, grid: HostGrid) -> None:
        self.wall: list[list[float]] = []  # [ingest, layout, draw] per refresh
        self.cpu: list[list[float]] = []
        self.pending_wall = self.pending_cpu = 0.0
        self.lines_left = 0
        original_ingest, original_rebuild, original_render = (
            grid.ingest,
            grid.rebuild,
            grid.render_line,
        )

        def timed(fn, *args):
            w, c = time.perf_counter(), time.thread_time()
            result = fn(*args)
            return result, time.perf_counter() - w, time.thread_time() - c

        def ingest(samples):
            _, w, c = timed(original_ingest, samples)
            self.pending_wall += w
            self.pending_cpu += c

        def rebuild():
            _, w, c = timed(original_rebuild)
            self.wall.append([self.pending_wall, w, 0.0])
            self.cpu.append([self.pending_cpu, c, 0.0])
            self.pending_wall = self.pending_cpu = 0.0
            self.lines_left = grid.size.height

        def render_line(y):
            strip, w, c = timed(original_render, y)
            if self.lines_left > 0 and self.wall:
                self.lines_left -= 1
                self.wall[-1][2] += w
                self.cpu[-1][2] += c
            return strip

        grid.ingest, grid.rebuild, grid.render_line = ingest, rebuild, render_line


@contextlib.asynccontextmanager
async def console_on(tab: str):
    """The console on a fresh demo workspace, its session open, showing screen TAB: (app, pilot)."""
    with tempfile.TemporaryDirectory() as tmp:
        app = ImgscaleApp(workspace(Path(tmp) / "ws"), telemetry=False)
        async with app.run_test(size=(200, 60)) as pilot:
            while app.session is None:
                await pilot.pause(0.05)
            await pilot.press(tab)
            yield app, pilot


async def bench_grid(seconds: int) -> dict:
    async with console_on("2") as (app, pilot):
        grid = app.grid
        t0 = time.time()
        rounds = [
            sample_round(s, t0) for s in range(seconds + 2)
        ]  # replayed: generated before timing
        for event in rounds[0]:  # warm-up second: first layout of 256 hosts
            app.session.emit(event)
        while len(grid.rows) < HOSTS or grid.dirty:
            await pilot.pause(0.05)
        timer = GridTimer(grid)
        proc = psutil.Process()
        cpu0, wall0 = proc.cpu_times(), time.monotonic()
        for second, events in enumerate(rounds[1 : seconds + 1]):
            for event in events:
                app.session.emit(event)
            await asyncio.sleep(max(0.0, wall0 + second + 1 - time.monotonic()))
        wall = time.monotonic() - wall0
        cpu1 = proc.cpu_times()
        cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall * 100
        visible = sum(1 for row, part in grid.lines if part == 0)
        return {
            "wall": timer.wall[1:],
            "cpu": timer.cpu[1:],
            "cpu_percent": cpu,
            "hosts": visible,
            "gpus": sum(len(r.gpus) for r in grid.rows.values()),
        }


async def bench_log(seconds: int, rate: int = 2000) -> dict:
    async with console_on("3") as (app, pilot):
        log: LogView = app.log_view
        proc = psutil.Process()
        rss0 = proc.memory_info().rss
        cpu0, wall0 = proc.cpu_times(), time.monotonic()
        sent, lags, step = 0, [], 0.1
        for tick in range(int(seconds / step)):
            for _ in range(int(rate * step)):
                rank = sent % 64
                app.session.emit(
                    LogLine(
                        f"gpu-node-{rank:03d}",
                        "worker",
                        rank,
                        f"Epoch[0] Batch [{sent}-{sent + 20}]\tSpeed: 2401.5 samples/sec\taccuracy=0.5",
                        time=wall0 + tick * step,
                    )
                )
                sent += 1
            await asyncio.sleep(max(0.0, wall0 + (tick + 1) * step - time.monotonic()))
            lags.append(sent - log.received)
        while log.received < sent:
            await pilot.pause(0.01)
        wall = time.monotonic() - wall0
        cpu1 = proc.cpu_times()
        return {
            "sent": sent,
            "rate": sent / wall,
            "max_lag_lines": max(lags),
            "kept": len(log.all_lines),
            "cpu_percent": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall * 100,
            "rss_growth_mib": (proc.memory_info().rss - rss0) / 2**20,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20, help="seconds of 1 Hz grid telemetry")
    parser.add_argument("--log-seconds", type=int, default=20, help="seconds of 2,000 log lines/s")
    args = parser.parse_args(argv)
    grid = asyncio.run(bench_grid(args.seconds))
    wall = [sum(parts) * 1000 for parts in grid["wall"]]
    cpu = [sum(parts) * 1000 for parts in grid["cpu"]]
    print(
        f"hosts grid: {HOSTS} hosts x {GPUS} GPUs ({grid['gpus']} GPUs drawn), 1 Hz for {args.seconds} s, 200x60, "
        f"load average {psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} cores"
    )
    print(
        f"  refresh (ingest + layout + draw), CPU time: median {statistics.median(cpu):.1f} ms, max {max(cpu):.1f} ms; "
        f"wall time: median {statistics.median(wall):.1f} ms, max {max(wall):.1f} ms "
        f"over {len(cpu)} refreshes (target <= {GRID_TARGET_MS:.0f} ms)"
    )
    worst = max(grid["cpu"], key=sum)
    print(
        "  slowest refresh (CPU): ingest {:.1f} ms, layout {:.1f} ms, draw {:.1f} ms".format(
            *(x * 1000 for x in worst)
        )
    )
    print(f"  console CPU: {grid['cpu_percent']:.1f}% of one core (target < {CPU_TARGET:.0f}%)")
    log = asyncio.run(bench_log(args.log_seconds))
    print(
        f"log pane: {log['sent']:,} lines at {log['rate']:,.0f} lines/s; max lag {log['max_lag_lines']} lines; "
        f"kept {log['kept']:,} (bound {MAX_LINES:,}); CPU {log['cpu_percent']:.1f}% of one core; "
        f"RSS growth {log['rss_growth_mib']:.1f} MiB"
    )
    ok = (
        max(cpu) <= GRID_TARGET_MS and grid["cpu_percent"] < CPU_TARGET and log["kept"] <= MAX_LINES
    )
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
