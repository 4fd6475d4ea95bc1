"""Shared test settings: keep MXNet and OpenMP to the threads we give them on small CI machines."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MXNET_CPU_WORKER_NTHREADS", "1")


import importlib.util  # noqa: E402

import pytest  # noqa: E402

# MXNet 1.9.1 runs on Python <= 3.11 with numpy < 1.24 only; CI's numpy-2 environment has no mxnet.
NO_MXNET = importlib.util.find_spec("mxnet") is None


def pytest_collection_modifyitems(config, items):
    """Tests marked ``mxnet`` skip, with the reason, where mxnet is not installed."""
    if not NO_MXNET:
        return
    skip = pytest.mark.skip(
        reason="mxnet is not installed here (MXNet 1.9.1 needs Python <= 3.11 and numpy < 1.24)"
    )
    for item in items:
        if "mxnet" in item.keywords:
            item.add_marker(skip)


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
