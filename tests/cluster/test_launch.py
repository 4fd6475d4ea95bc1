"""A real MXNet ps-lite dist_sync job across the sshd test hosts: placed, attributed, env everywhere."""

from __future__ import annotations

import pytest
from launch_helpers import MX_JOB, Events, run_to_end

from engine.cluster.process import jobs
from engine.train.launch.launch import LaunchSpec

pytestmark = [pytest.mark.cluster, pytest.mark.mxnet, pytest.mark.slow]


async def test_dist_sync_job_completes_with_logs_attributed_to_host_role_and_rank(
    cluster, state_home
):
    events = Events()
    spec = LaunchSpec(
        command=("python", MX_JOB, "--batches", "4"),
        num_workers=2,
        num_servers=2,
        hosts_file=str(cluster.hosts_file),
        env={"MXNET_BACKWARD_DO_MIRROR": "1"},
        run_root=str(state_home / "runs"),
        stall_timeout_s=120,
    )
    job, final = await run_to_end(spec, events)
    assert final.state == "done", events.failures()
    # launch.py's placement: servers first, round-robin over node1..node3
    where = {(p.role, p.rank): p.host for p in final.processes}
    assert where == {
        ("scheduler", 0): "node1",
        ("server", 0): "node1",
        ("server", 1): "node2",
        ("worker", 0): "node3",
        ("worker", 1): "node1",
    }
    for (role, rank), host in where.items():
        lines = [e.text for e in events.logs(role, rank)]
        assert all(e.host == host for e in events.logs(role, rank))
        # the user's env reached every role, which launch.py's --env fails to do in MXNet 1.9.1;
        # each test host has its own hostname (its UTS namespace): the process ran where recorded
        assert (
            f"role={role} rank={rank} MXNET_BACKWARD_DO_MIRROR=1 load_epoch=None hostname={host}"
            in lines
        )
    for rank in (0, 1):
        texts = [e.text for e in events.logs("worker", rank)]
        assert any("Speed:" in t and "samples/sec" in t for t in texts), texts
        assert "worker rank" in " ".join(texts)
    assert {p.exit_status for p in final.processes} == {0}
    record = jobs.load(job.job_id)
    assert record.state == "done" and record.clean
    assert cluster.processes_of(job.job_id) == {}
