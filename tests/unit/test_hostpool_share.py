"""A console's operations share its HostPool: one transport per host, closed only by the console."""

from __future__ import annotations

import asyncio

from engine.cluster.hostpool import HostPool
from engine.cluster.hosts import local_host
from engine.cluster.transport.local import LocalTransport


async def test_closing_an_operations_shared_pool_leaves_the_consoles_connection_open(monkeypatch):
    closed: list[str] = []

    async def close(self) -> None:
        closed.append(self.host)

    monkeypatch.setattr(LocalTransport, "close", close)
    console = HostPool([local_host()])
    job = console.share([local_host()])  # the job's hosts, read again from its record
    assert await job.get("localhost") is await console.get("localhost")
    await job.close()  # a job closing (the console detaches from it)
    assert closed == []
    await console.close()
    assert closed == ["localhost"]


async def test_a_host_new_to_the_console_joins_its_connections_for_later_operations():
    console = HostPool([local_host()])
    first = console.share([local_host("spare")])["spare"]
    assert console.share([local_host("spare")])["spare"] is first
    assert console.share([local_host("spare", python="/other/python")])["spare"] is not first
    await console.close()


async def test_a_worker_thread_runs_work_on_the_pools_loop():
    pool = HostPool.local()
    loop = asyncio.get_running_loop()

    async def where() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    assert await asyncio.to_thread(pool.run_from_thread, where()) is loop
