"""Cluster-test fixtures over the session's sshd hosts (``ssh_cluster``, tests/conftest.py)."""

import pytest

from engine.cluster.hostpool import HostPool
from engine.cluster.hosts import read_hosts


@pytest.fixture()
def cluster(ssh_cluster):
    """The sshd hosts, all running again after the test (tests stop hosts to simulate faults)."""
    yield ssh_cluster
    for i, host in enumerate(ssh_cluster.hosts):
        if not host.running:
            ssh_cluster.start_host(i)


@pytest.fixture()
async def pool(cluster):
    """A HostPool (one SSH connection per host) over the generated hosts file."""
    hosts = HostPool(read_hosts(cluster.hosts_file))
    yield hosts
    await hosts.close()


@pytest.fixture()
def state_home(tmp_path, monkeypatch):
    """A tmp folder whose home/ is IMGSCALE_HOME, so job records and runs stay inside the test."""
    monkeypatch.setenv("IMGSCALE_HOME", str(tmp_path / "home"))
    return tmp_path
