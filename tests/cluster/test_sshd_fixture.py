"""The sshd test hosts themselves: every host accepts our key and proves its known host key."""

import subprocess

import pytest

pytestmark = pytest.mark.cluster


def ssh_argv(cluster, alias: str, command: str) -> list[str]:
    return [
        "ssh",
        "-F",
        str(cluster.ssh_config),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        alias,
        command,
    ]


def test_every_test_host_accepts_the_client_key_with_strict_host_keys(ssh_cluster):
    for name, address, _port in ssh_cluster.addresses:
        out = subprocess.run(
            ssh_argv(ssh_cluster, name, "echo $SSH_CONNECTION"),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[2] == address  # the session really went to that loopback address


def test_stopped_host_refuses_then_comes_back_on_the_same_port(ssh_cluster):
    ssh_cluster.stop_host(2)
    try:
        out = subprocess.run(
            ssh_argv(ssh_cluster, "node3", "true"), capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 255 and "refused" in out.stderr
    finally:
        ssh_cluster.start_host(2)
    out = subprocess.run(ssh_argv(ssh_cluster, "node3", "true"), capture_output=True, timeout=30)
    assert out.returncode == 0
