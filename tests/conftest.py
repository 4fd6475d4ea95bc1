"""Shared test settings: keep MXNet and OpenMP to the threads we give them on small CI machines."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MXNET_CPU_WORKER_NTHREADS", "1")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ssh_cluster(tmp_path_factory):
    """Three real OpenSSH sshd hosts on 127.0.0.2-4 (see tests/sshd.py for the object's API)."""
    from sshd import SshCluster, sshd_available  # tests/ is on sys.path (pytest's rootdir conftest)

    reason = sshd_available()
    if reason:
        pytest.skip(f"no sshd test hosts: {reason}")
    # Every host sees the session's temporary folders (like a shared file system); the rest of
    # its /tmp and its ~/.imgscale are its own.
    cluster = SshCluster.start(
        tmp_path_factory.mktemp("sshd"), count=3, shared=(tmp_path_factory.getbasetemp(),)
    )
    yield cluster
    cluster.close()
