"""Helpers for console tests: wait on conditions (never on time) and fixed engine events for snapshots."""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.events import (
    ClusterRate,
    EpochSummary,
    GpuSample,
    HostSample,
    HostState,
    JobState,
    LogLine,
    ProcessInfo,
    Throughput,
    TrainProgress,
)

WAIT_S = 20.0
T0 = 1_780_000_000.0  # a fixed time, so drawn clocks never change


async def wait_for(
    pilot, condition: Callable[[], bool], what: str, timeout: float = WAIT_S
) -> None:
    """Let the app run until `condition()` holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def opened(pilot) -> None:
    """Until the bridge worker has opened the workspace and drawn its snapshot."""
    app = pilot.app
    await wait_for(
        pilot,
        lambda: app.session is not None and app.query_one("#stage-table").views,
        "workspace open",
    )


def cluster_events(hosts: int = 16, gpus: int = 16, t: float = T0, rounds: int = 4) -> list:
    """A recorded-looking cluster: host 03 a straggler, host 07 unreachable, host 12 without GPUs."""
    events: list = []
    names = [f"node-{i:02d}" for i in range(hosts)]
    for r in range(rounds):
        for h, name in enumerate(names):
            if h == 7:
                events.append(
                    HostState(name, False, "connection refused (port 22)", retry_in_s=8.0, time=t)
                )
                continue
            events.append(HostState(name, True, time=t))
            events.append(
                HostSample(
                    name,
                    cpu_percent=20 + (h * 7) % 60,
                    cpu_count=64,
                    mem_used_bytes=(40 + h) * 2**30,
                    mem_total_bytes=256 * 2**30,
                    disk_used_bytes=(300 + 10 * h) * 2**30,
                    disk_total_bytes=2000 * 2**30,
                    gpu_count=0 if h == 12 else gpus,
                    time=t + r,
                )
            )
            if h == 12:
                continue
            for g in range(gpus):
                util = 30.0 if h == 3 else float(60 + ((g * 13 + h * 5 + r * 11) % 40))
                events.append(
                    GpuSample(
                        name,
                        g,
                        name="Tesla K80",
                        util_percent=util,
                        mem_used_mib=6000 + 300 * g,
                        mem_total_mib=11441,
                        temperature_c=50 + (g + h) % 30,
                        power_w=90 + (g * 7) % 60,
                        power_limit_w=149,
                        time=t + r,
                    )
                )
            events.append(
                Throughput(
                    name,
                    h,
                    120.0 if h == 3 else 300.0 + h,
                    epoch=0,
                    batch=20 * r,
                    job="job-1",
                    time=t + r,
                )
            )
    return events


def log_events(count: int = 60, t: float = T0) -> list:
    roles = [
        ("node-00", "scheduler", None),
        ("node-00", "server", 0),
        ("node-01", "worker", 0),
        ("node-02", "worker", 1),
    ]
    lines = []
    for i in range(count):
        host, role, rank = roles[i % len(roles)]
        level = "warning" if i % 17 == 5 else ("error" if i == 41 else "info")
        text = f"Epoch[0] Batch [{i * 20}-{i * 20 + 20}]\tSpeed: {300 + i:.2f} samples/sec\taccuracy=0.{i % 10}"
        lines.append(LogLine(host, role, rank, text, level=level, job="job-1", time=t + i))
    return lines


def job_events(t: float = T0) -> list:
    procs = (
        ProcessInfo("node-00", "scheduler", None, state="running"),
        ProcessInfo("node-01", "worker", 0, state="running"),
        ProcessInfo("node-02", "worker", 1, state="failed", exit_status=137),
    )
    return [
        JobState("job-1", "running", procs, time=t),
        EpochSummary(
            "node-01",
            0,
            0,
            train=(("accuracy", 0.412),),
            validation=(("accuracy", 0.388),),
            time_cost_s=61.2,
            job="job-1",
            time=t,
        ),
        EpochSummary(
            "node-02",
            1,
            0,
            train=(("accuracy", 0.405),),
            validation=(("accuracy", 0.391),),
            time_cost_s=63.0,
            job="job-1",
            time=t,
        ),
        ClusterRate(
            "job-1",
            4410.0,
            15,
            hosts=(("node-01", 301.0),),
            median_worker=305.0,
            baseline=320.0,
            speedup=13.78,
            stragglers=("node-03#3",),
            time=t,
        ),
    ]


def train_progress(t: float = T0) -> TrainProgress:
    """Epoch 3 of 15, batch 120 of 400, 1,234 img/s, five minutes left, last val accuracy 0.412."""
    return TrainProgress("train-1", 2, 15, 120, 400, 1234.0, 300.0, 0.412, time=t)
