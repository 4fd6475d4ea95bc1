"""SSH connection options from hosts-file lines, and failure reasons, without a network."""

import errno
import socket

import asyncssh
import pytest

from engine.cluster.hosts import parse_hosts
from engine.cluster.transport.ssh import classify, client_options


def options(line: str) -> dict:
    return client_options(parse_hosts(line + "\n", "hosts")[0], 7.0, 3.0)


def test_timeouts_and_keepalive_are_always_explicit():
    opts = options("node-a")
    assert (opts["connect_timeout"], opts["login_timeout"]) == (7.0, 7.0)
    assert (opts["keepalive_interval"], opts["keepalive_count_max"]) == (3.0, 3)


def test_unset_fields_are_left_to_ssh_config_and_host_keys_stay_verified():
    opts = options("node-a")
    for key in ("port", "username", "client_keys", "config", "known_hosts", "agent_forwarding"):
        assert key not in opts  # asyncssh then reads ~/.ssh/config and ~/.ssh/known_hosts


def test_line_fields_map_to_asyncssh_options(tmp_path):
    opts = options(
        f"ubuntu@h:2222 identity=~/k1,/k2 known_hosts={tmp_path}/kh ssh_config=/c forward_agent=yes"
    )
    assert (opts["port"], opts["username"]) == (2222, "ubuntu")
    assert opts["client_keys"][1] == "/k2" and not opts["client_keys"][0].startswith("~")
    assert opts["known_hosts"] == f"{tmp_path}/kh" and opts["config"] == ["/c"]
    assert opts["agent_forwarding"] is True


def test_only_an_explicit_opt_out_turns_host_key_checking_off():
    assert options("h insecure_host_key=yes")["known_hosts"] is None
    assert "known_hosts" not in options("h insecure_host_key=no")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (socket.gaierror(-2, "Name or service not known"), "name resolution failed"),
        (ConnectionRefusedError(111, "refused"), "connection refused"),
        (TimeoutError(), "timed out"),
        (asyncssh.PermissionDenied("no"), "authentication failed"),
        (asyncssh.ConnectionLost("gone"), "connection lost"),
        (ConnectionResetError(104, "reset"), "connection lost"),
        (OSError(errno.EHOSTUNREACH, "no route"), "host unreachable"),
        (
            FileNotFoundError(errno.ENOENT, "No such file or directory", "/no/key"),
            "cannot read /no/key (No such file or directory); "
            "fix identity=, known_hosts= or ssh_config= in the hosts file",
        ),
    ],
)
def test_failures_become_short_reasons(exc, reason):
    assert classify(exc) == reason


def test_host_key_failure_without_an_entry_is_unknown_with_advice(tmp_path):
    kh = tmp_path / "kh"
    kh.write_text("")
    spec = parse_hosts(f"127.0.0.2:2222 known_hosts={kh}\n", "hosts")[0]
    reason = classify(asyncssh.HostKeyNotVerifiable("Host key is not trusted"), spec)
    assert reason.startswith("host key unknown") and "ssh-keyscan" in reason


def test_ssh_commands_print_no_dsa_deprecation_warning():
    """asyncssh's import made cryptography print four lines on every SSH command."""
    import subprocess
    import sys

    code = "from engine.cluster.transport import ssh; ssh.classify(OSError('x'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "DSA" not in result.stderr and "Warning" not in result.stderr, result.stderr
