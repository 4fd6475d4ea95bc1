"""The console's export: the hosts grid (with each host's cause) and the job's throughput history,
as CSV and JSON under the workspace's exports/ folder."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

from engine.api.speeds import Speeds
from engine.cluster.probes.export import GRID_FIELDS, grid_rows, write_both
from engine.events import Event

HISTORY_FIELDS = ("time", "host", "images_per_sec")


async def export(folder: Path, latest: Iterable[Event], speeds: Speeds) -> list[Path]:
    """grid-STAMP and throughput-STAMP files (.csv and .json) in ``folder``; their paths."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    grid = grid_rows(latest, speeds.host_rates())
    for row in grid:
        row["cause"] = speeds.host_cause(
            row["host"], row["images_per_sec"], row["gpu_util_mean"], row.get("cpu_percent")
        )
    history = [
        {"time": t, "host": host, "images_per_sec": value}
        for host, series in sorted(speeds.history().items())
        for t, value in series.points
    ]
    return await asyncio.to_thread(
        lambda: [
            *write_both(folder / f"grid-{stamp}", grid, GRID_FIELDS),
            *write_both(folder / f"throughput-{stamp}", history, HISTORY_FIELDS),
        ]
    )
