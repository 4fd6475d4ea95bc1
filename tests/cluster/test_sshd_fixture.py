"""The sshd test hosts themselves: every host accepts our key and proves its known host key."""

import signal
import subprocess
import time
from pathlib import Path

import pytest
from sshd import port_accepts

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


def test_each_host_has_its_own_processes_files_and_hostname(ssh_cluster, tmp_path):
    marker = f"IMGSCALE_JOB=seen-{tmp_path.name}"
    start = subprocess.run(
        ssh_argv(ssh_cluster, "node2", f"{marker} setsid sleep 60 </dev/null >/dev/null 2>&1 &"),
        capture_output=True,
        timeout=30,
    )
    assert start.returncode == 0
    job = marker.split("=")[1]
    deadline = time.monotonic() + 30
    while not ssh_cluster.processes_of(job):  # the background command has not exec'd yet
        assert time.monotonic() < deadline, "the process never showed up"
        time.sleep(0.05)  # polling a condition with a deadline
    (pid,) = ssh_cluster.processes_of(job)["node2"]
    try:
        # node1 has no such process; node2 numbers it as recorded
        for alias, expect in (("node1", 1), ("node2", 0)):
            probe = subprocess.run(
                ssh_argv(
                    ssh_cluster,
                    alias,
                    f"kill -0 {pid} 2>/dev/null && grep -qz {job} /proc/{pid}/environ",
                ),
                capture_output=True,
                timeout=30,
            )
            assert probe.returncode == expect, alias
        write = ssh_argv(ssh_cluster, "node1", f"echo mine > /tmp/{job}; hostname")
        assert subprocess.run(write, capture_output=True, text=True, timeout=30).stdout == "node1\n"
        assert ssh_cluster.host_path("node1", f"/tmp/{job}").read_text() == "mine\n"
        assert not ssh_cluster.host_path("node2", f"/tmp/{job}").exists()
        assert not (Path("/tmp") / job).exists()  # nor on the launching machine
        # the session's shared folder is the same on every host
        (tmp_path / "shared").write_text("all")
        read = ssh_argv(ssh_cluster, "node3", f"cat {tmp_path / 'shared'}")
        assert subprocess.run(read, capture_output=True, text=True, timeout=30).stdout == "all"
    finally:
        ssh_cluster.kill("node2", pid, signal.SIGKILL)


def test_each_sshd_answers_only_at_its_own_address(ssh_cluster):
    one, two = ssh_cluster.hosts[0], ssh_cluster.hosts[1]
    assert port_accepts(one.address, one.port)
    assert not port_accepts(two.address, one.port)


def test_every_host_runs_this_checkout_with_this_interpreter_wherever_it_lies(ssh_cluster):
    """A clone under /tmp: the hosts' private /tmp hid the checkout and its venv ("not found")."""
    import shlex
    import sys

    repo = Path(__file__).resolve().parents[2]
    code = "import engine, sys; print(engine.__file__, sys.prefix)"
    command = f"cd {shlex.quote(str(repo))} && {shlex.quote(sys.executable)} -c {shlex.quote(code)}"
    for name, _address, _port in ssh_cluster.addresses:
        out = subprocess.run(
            ssh_argv(ssh_cluster, name, command), capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, f"{name}: {out.stderr}"
        assert out.stdout.split() == [str(repo / "engine" / "__init__.py"), sys.prefix]
