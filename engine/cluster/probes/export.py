"""The hosts grid and a job's throughput history as plain rows, written as CSV and JSON (for sheets and plots).

Rows are flat dicts: one per host (GPUs summarised and listed), one per (time, host) of the history.
Missing values stay empty (CSV) or null (JSON), never made up.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from engine.events import GpuSample, HostSample, HostState
from engine.paths import write_text_atomic

GRID_FIELDS = (
    "host",
    "reachable",
    "reason",
    "cpu_percent",
    "cpu_count",
    "mem_used_bytes",
    "mem_total_bytes",
    "disk_used_bytes",
    "disk_total_bytes",
    "net_rx_bytes_per_s",
    "net_tx_bytes_per_s",
    "gpu_count",
    "gpu_util_mean",
    "images_per_sec",
    "cause",
)


def grid_rows(events: Iterable[Any], rates: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One row per host from its newest HostState, HostSample and GpuSamples (with a `gpus` list)."""
    hosts: dict[str, dict[str, Any]] = {}
    for event in events:
        row = hosts.setdefault(event.host, {"host": event.host, "gpus": []})
        if isinstance(event, HostState):
            row.update(reachable=event.reachable, reason=event.reason)
        elif isinstance(event, HostSample):
            row.update({k: getattr(event, k) for k in GRID_FIELDS[3:12]})
        elif isinstance(event, GpuSample):
            row["gpus"].append(_gpu(event))
    for name, row in hosts.items():
        utils = [g["util_percent"] for g in row["gpus"] if g["util_percent"] is not None]
        row["gpu_util_mean"] = sum(utils) / len(utils) if utils else None
        row["images_per_sec"] = (rates or {}).get(name)
        row["cause"] = ""  # filled by whoever knows the job's readings (engine.api)
    return [hosts[name] for name in sorted(hosts)]


def _gpu(g: GpuSample) -> dict[str, Any]:
    keys = ("index", "name", "util_percent", "mem_used_mib", "mem_total_mib")
    more = ("temperature_c", "power_w", "lost")
    return {k: getattr(g, k) for k in (*keys, *more)}


def to_json(rows: Sequence[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=1, sort_keys=False)


def to_csv(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> str:
    """CSV of the named columns (a list column such as `gpus` stays in the JSON only)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in fields})
    return out.getvalue()


def write_both(base: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> list[Path]:
    """BASE.csv and BASE.json, each written under a temporary name and renamed."""
    base.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in ((".csv", to_csv(rows, fields)), (".json", to_json(rows))):
        written.append(write_text_atomic(base.with_suffix(suffix), text))
    return written
