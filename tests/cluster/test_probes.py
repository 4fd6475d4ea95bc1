"""Probes on real sshd hosts: host samples, recorded GPUs on one host, and an unreachable host."""

import asyncio
import time

import pytest

from engine.cluster.hostpool import HostPool
from engine.cluster.hosts import read_hosts
from engine.cluster.probes.grid import ProbeSet, probe_once
from engine.events import Failure, GpuSample, HostSample, HostState

pytestmark = pytest.mark.cluster


async def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture()
async def gpu_pool(cluster, tmp_path):
    """node3 carries the recorded-output fake nvidia-smi; node1 and node2 have no GPU."""
    path = cluster.write_hosts_file(tmp_path / "hosts", {2: cluster.fake_gpu_option()})
    pool = HostPool(read_hosts(path))
    yield pool
    await pool.close()


async def test_every_host_reports_samples_and_the_gpu_host_its_gpus(gpu_pool):
    events = []
    async with ProbeSet(gpu_pool, events.append, interval=0.5):

        def ready():
            samples = [e for e in events if isinstance(e, HostSample)]
            hosts = {e.host for e in samples if e.cpu_percent is not None}
            gpus = {e.index for e in events if isinstance(e, GpuSample)}
            counted = any(e.host == "node3" and e.gpu_count == 4 for e in samples)
            return hosts == {"node1", "node2", "node3"} and gpus == {0, 1, 2, 3} and counted

        await wait_for(ready, 20, "a second reading of every host and node3's 4 GPUs counted")
    samples = [e for e in events if isinstance(e, HostSample)]
    assert {e.gpu_count for e in samples if e.host != "node3"} == {0}  # "no GPU"
    assert {e.gpu_count for e in samples if e.host == "node3"} <= {None, 4}  # None: not yet read
    gpu = next(e for e in events if isinstance(e, GpuSample) and e.index == 2)
    assert (gpu.host, gpu.util_percent, gpu.power_limit_w) == ("node3", 96.0, 300.0)
    assert all(e.reachable for e in events if isinstance(e, HostState))


async def test_stopped_host_becomes_unreachable_within_10_s_and_others_go_on(gpu_pool, cluster):
    events = []
    async with ProbeSet(gpu_pool, events.append, interval=0.5):
        await wait_for(
            lambda: len({e.host for e in events if isinstance(e, HostSample)}) == 3,
            20,
            "a first reading of every host",
        )
        cluster.stop_host(0)
        mark = len(events)

        def down():
            return [e for e in events[mark:] if isinstance(e, HostState) and not e.reachable]

        # how soon is a benchmark's business; here a generous deadline
        await wait_for(down, 60, "node1 reported unreachable")
        state = down()[0]
        assert state.host == "node1" and state.reason in ("connection lost", "connection refused")
        assert state.retry_in_s and state.retry_in_s > 0
        after = len(events)
        await wait_for(
            lambda: (
                {e.host for e in events[after:] if isinstance(e, HostSample)} >= {"node2", "node3"}
            ),
            10,
            "the other hosts keep reporting",
        )
        cluster.start_host(0)
        back = len(events)
        await wait_for(
            lambda: any(
                isinstance(e, HostState) and e.reachable and e.host == "node1"
                for e in events[back:]
            ),
            20,
            "node1 reachable again",
        )


async def test_gpu_fallen_off_the_bus_reaches_the_grid_as_lost(cluster, tmp_path):
    path = cluster.write_hosts_file(
        tmp_path / "hosts", {0: cluster.fake_gpu_option("fallen_off_bus.csv")}
    )
    pool = HostPool(read_hosts(path)[:1])
    try:
        events = await probe_once(pool)
    finally:
        await pool.close()
    gpus = [e for e in events if isinstance(e, GpuSample)]
    assert [(g.index, g.lost) for g in gpus] == [(0, False), (1, True), (2, False), (3, False)]
    (sample,) = [e for e in events if isinstance(e, HostSample)]
    assert sample.gpu_count == 4


async def test_probe_once_reports_an_unreachable_host_without_failing_the_rest(pool, cluster):
    cluster.stop_host(2)
    events = await probe_once(pool)
    states = {e.host: e for e in events if isinstance(e, HostState)}
    assert not states["node3"].reachable and states["node3"].reason == "connection refused"
    assert states["node1"].reachable and states["node2"].reachable
    assert {e.host for e in events if isinstance(e, HostSample)} == {"node1", "node2"}


async def test_broken_gpu_driver_is_reported_once_not_in_a_crash_loop(cluster, tmp_path):
    path = cluster.write_hosts_file(
        tmp_path / "hosts", {1: cluster.fake_gpu_option("driver_failed.fail")}
    )
    pool = HostPool(read_hosts(path)[1:2])
    events = []
    try:
        async with ProbeSet(pool, events.append, interval=0.3):
            await wait_for(
                lambda: any(isinstance(e, Failure) for e in events), 15, "a GPU failure report"
            )
            await wait_for(
                lambda: sum(isinstance(e, HostSample) for e in events) >= 6, 15, "more readings"
            )
    finally:
        await pool.close()
    (failure,) = [e for e in events if isinstance(e, Failure)]
    assert failure.source == "host node2" and "status 9" in failure.message
    assert "couldn't communicate with the NVIDIA driver" in failure.diagnosis
    assert all(e.reachable for e in events if isinstance(e, HostState))  # the host itself is fine
