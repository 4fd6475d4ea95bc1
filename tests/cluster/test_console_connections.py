"""One console, one SSH connection per host: probes, pre-flight, launch, attach and kill share them.

The count is real: this process's established TCP connections to each sshd test host.
"""

from __future__ import annotations

import asyncio
import sys

import psutil
import pytest

from engine import api
from engine import workspace as wsmod
from engine.api import jobs as console_jobs
from engine.events import HostState, JobState

pytestmark = pytest.mark.cluster

SLEEP = (sys.executable, "-c", "import time; time.sleep(120)")


def connections(cluster) -> dict[str, int]:
    """Host name -> this process's established TCP connections to its sshd."""
    open_ = [
        c.raddr
        for c in psutil.Process().net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.raddr
    ]
    return {
        host.name: sum(1 for a in open_ if (a.ip, a.port) == (host.address, host.port))
        for host in cluster.hosts
    }


async def until(session, seen: list, condition, what: str, timeout: float = 60.0) -> None:
    """Read the session's events into ``seen`` until ``condition(seen)`` holds."""

    async def read() -> None:
        async for event in session.events():
            seen.append(event)
            if condition(seen):
                return

    if condition(seen):
        return
    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


def every_host_up(names):
    return lambda seen: {e.host for e in seen if isinstance(e, HostState) and e.reachable} >= names


def running(seen) -> bool:
    return any(isinstance(e, JobState) and e.state == "running" for e in seen)


async def test_a_console_holds_one_connection_per_host_through_probes_launch_attach_and_kill(
    cluster, state_home, monkeypatch
):
    # The job only has to run on every host: each process sleeps (the workspace has no data).
    monkeypatch.setattr(console_jobs, "train_command", lambda ws, mode: SLEEP)
    folder = state_home / "ws"
    wsmod.create(folder, {"root": "images"})
    names = {h.name for h in cluster.hosts}
    one_each = dict.fromkeys(names, 1)

    session, seen = await api.open_workspace(folder, cluster.hosts_file), []
    try:
        await until(session, seen, every_host_up(names), "every host probed")
        assert connections(cluster) == one_each  # the probes'
        await session.plan_launch("benchmark")  # the pre-flight asks every host for its report
        assert connections(cluster) == one_each
        await session.launch("test-io")
        await until(session, seen, running, "the job running on every host")
        assert connections(cluster) == one_each  # the job's start and watch channels too
    finally:
        await session.close()  # the job keeps running

    session, seen = await api.open_workspace(folder), []  # re-attaches to the running job
    try:
        await until(session, seen, every_host_up(names), "every host probed again")
        await until(session, seen, running, "the job followed again")
        assert connections(cluster) == one_each  # probes and the attached job
        assert await session.kill_leftovers() > 0
        assert connections(cluster) == one_each
    finally:
        await session.close()
    assert connections(cluster) == dict.fromkeys(names, 0)  # closing the console closes them
