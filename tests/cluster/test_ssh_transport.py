"""SshTransport against real OpenSSH sshd hosts on loopback: commands, streams, SFTP and faults."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from engine.cluster.hosts import parse_hosts, read_hosts
from engine.cluster.remote_cmd import join_argv
from engine.cluster.transport.base import CommandTimedOut, TransportError
from engine.cluster.transport.ssh import SshTransport

pytestmark = pytest.mark.cluster
DUMP = "import json, os, sys; print(json.dumps([sys.argv[1:], os.getcwd(), dict(os.environ)]))"


def spec_for(cluster, index: int, extra: str = ""):
    return parse_hosts(
        cluster.hosts_text({index: extra}) if extra else cluster.hosts_text(), "hosts"
    )[index]


async def test_commands_run_with_env_and_cwd_on_every_host(pool, cluster, tmp_path):
    results = await asyncio.gather(
        *(
            t.run(
                'echo "$SSH_CONNECTION|$GREETING"; pwd',
                env={"GREETING": "hi there"},
                cwd=str(tmp_path),
            )
            for t in pool
        )
    )
    for (_name, address, port), r in zip(cluster.addresses, results, strict=True):
        first, cwd = r.stdout.splitlines()
        connection, greeting = first.split("|")
        server_address, server_port = connection.split()[2:4]
        assert (server_address, int(server_port)) == (address, port)
        assert greeting == "hi there" and cwd == str(tmp_path)
        assert r.exit_status == 0


async def test_many_commands_share_one_connection_per_host(pool):
    node1 = pool["node1"]
    results = await asyncio.gather(*(node1.run("echo $SSH_CONNECTION") for _ in range(12)))
    client_ports = {r.stdout.split()[1] for r in results}
    assert len(client_ports) == 1  # every channel rode the same TCP connection


async def test_hostile_argv_env_and_cwd_arrive_intact_over_ssh(pool, tmp_path):
    hostile = ["a b", "it's", 'q"', "x;y", "$(id)", "`id`", "new\nline", ""]
    odd_dir = tmp_path / "odd 'dir';$(x)"
    odd_dir.mkdir()
    env = {f"H{i}": v for i, v in enumerate(hostile)}
    r = await pool["node2"].run(
        join_argv([sys.executable, "-c", DUMP, *hostile]), env=env, cwd=str(odd_dir)
    )
    argv, cwd, seen = json.loads(r.stdout)
    assert argv == hostile and cwd == str(odd_dir)
    assert {k: seen[k] for k in env} == env


async def test_exit_status_stderr_input_and_signals_come_back(pool):
    t = pool["node1"]
    r = await t.run("cat; echo bad >&2; exit 5", input="from stdin\n")
    assert (r.exit_status, r.stdout, r.stderr) == (5, "from stdin\n", "bad\n")
    r = await t.run("kill -KILL $$")
    assert (r.exit_status, r.signal) == (None, "KILL")


async def test_stream_yields_lines_as_they_come_and_the_exit_status(pool):
    lines = pool["node3"].stream("for i in 1 2 3; do echo line $i; done; echo warn >&2; exit 4")
    got = [(line.stream, line.text) async for line in lines]
    assert [t for s, t in got if s == "stdout"] == ["line 1", "line 2", "line 3"]
    assert ("stderr", "warn") in got
    assert lines.exit_status == 4


async def test_closing_a_stream_ends_the_remote_command(pool):
    t = pool["node1"]
    lines = t.stream("echo $$; exec sleep 120")
    pid = int((await lines.__anext__()).text)
    await lines.aclose()
    await asyncio.wait_for(lines.wait(), 10)
    check = await t.run(f"kill -0 {pid}")
    assert check.exit_status != 0, "the remote command outlived its closed stream"


async def test_run_timeout_ends_the_remote_command_and_says_so(pool, tmp_path):
    t = pool["node2"]
    pidfile = tmp_path / "pid"
    with pytest.raises(CommandTimedOut, match="timed out after 0.5 s"):
        await t.run(f"echo $$ > {pidfile}; exec sleep 120", timeout=0.5)
    pid = int(pidfile.read_text())
    assert (await t.run(f"kill -0 {pid}")).exit_status != 0
    assert (await t.run("echo still fine")).stdout == "still fine\n"  # the connection survives


async def test_sftp_put_and_get_files_and_trees(pool, tmp_path):
    t = pool["node3"]
    src = tmp_path / "src dir"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a b.txt").write_bytes(b"\x00binary\xff")
    remote = tmp_path / "remote"
    remote.mkdir()
    await t.put(str(src), str(remote), recurse=True)
    assert (remote / "src dir" / "sub" / "a b.txt").read_bytes() == b"\x00binary\xff"
    await t.get(str(remote / "src dir" / "sub" / "a b.txt"), str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == b"\x00binary\xff"
    with pytest.raises(FileNotFoundError, match="node3"):
        await t.get(str(tmp_path / "missing"), str(tmp_path / "x"))


async def test_stopped_host_is_reported_with_a_reason_and_others_keep_working(pool, cluster):
    await pool.connect_all()
    cluster.stop_host(1)
    with pytest.raises(TransportError) as err:
        await asyncio.wait_for(pool["node2"].run("true"), 10)
    assert err.value.reason in ("connection lost", "connection refused")
    with pytest.raises(TransportError, match="connection refused"):
        await pool["node2"].connect()
    assert [(await pool[n].run("echo ok")).stdout for n in ("node1", "node3")] == ["ok\n"] * 2
    cluster.start_host(1)
    await pool["node2"].connect()  # an explicit connect ignores the backoff
    assert (await pool["node2"].run("echo back")).stdout == "back\n"


async def test_failed_host_backs_off_instead_of_hammering(cluster):
    cluster.stop_host(0)
    t = SshTransport(spec_for(cluster, 0))
    with pytest.raises(TransportError, match="refused"):
        await t.connect()
    with pytest.raises(TransportError, match="refused"):
        await t.connect()
    assert t.failures == 2 and t.retry_delay == 2.0 and 0 < t.retry_in <= 2.0
    with pytest.raises(TransportError, match="refused"):
        await t.run("true")  # fails at once with the last reason while the backoff runs
    assert t.failures == 2


async def test_host_key_mismatch_is_refused_with_a_clear_message(cluster, tmp_path):
    wrong = tmp_path / "known_hosts"
    node1, node2 = cluster.hosts[0], cluster.hosts[1]
    # node1's address and port, but node2's key: what a reinstalled or spoofed host looks like
    key = cluster.known_hosts_line(node2).split(" ", 1)[1]
    wrong.write_text(f"[{node1.address}]:{node1.port} {key}")
    t = SshTransport(spec_for(cluster, 0, f"known_hosts={wrong}"))
    with pytest.raises(TransportError) as err:
        await t.connect()
    assert err.value.reason.startswith("host key mismatch")
    assert str(wrong) in err.value.reason


async def test_unknown_host_key_is_refused_not_trusted_on_first_use(cluster, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    t = SshTransport(spec_for(cluster, 0, f"known_hosts={empty}"))
    with pytest.raises(TransportError, match="host key unknown"):
        await t.connect()


async def test_explicit_per_host_opt_out_skips_host_key_checking(cluster, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    t = SshTransport(spec_for(cluster, 0, f"known_hosts={empty} insecure_host_key=yes"))
    try:
        assert (await t.run("echo in")).stdout == "in\n"
    finally:
        await t.close()


async def test_unauthorized_key_is_reported_as_authentication_failed(cluster, tmp_path):
    from sshd import keygen

    keygen(tmp_path / "stranger", "stranger")
    t = SshTransport(spec_for(cluster, 0, f"identity={tmp_path / 'stranger'}"))
    with pytest.raises(TransportError, match="authentication failed"):
        await t.connect()


async def test_silent_host_is_reported_as_timed_out(cluster):
    with socket.socket() as silent:  # accepts TCP but never speaks SSH
        silent.bind(("127.0.0.5", 0))
        silent.listen()
        port = silent.getsockname()[1]
        spec = parse_hosts(f"root@127.0.0.5:{port} connect_timeout=1\n", "hosts")[0]
        with pytest.raises(TransportError, match="timed out"):
            await SshTransport(spec).connect()


async def test_ssh_config_alias_resolves_address_port_key_and_known_hosts(cluster, tmp_path):
    spec = parse_hosts(f"node2 ssh_config={cluster.ssh_config}\n", "hosts")[0]
    t = SshTransport(spec)
    try:
        r = await t.run("echo $SSH_CONNECTION")
        assert r.stdout.split()[2] == cluster.hosts[1].address
    finally:
        await t.close()


@pytest.fixture()
def ssh_agent(cluster, tmp_path, monkeypatch):
    """A real ssh-agent holding the client key, as SSH_AUTH_SOCK for this test."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:  # poll a condition
            time.sleep(0.05)
        subprocess.run(
            ["ssh-add", "-q", str(cluster.client_key)],
            env=env,
            check=True,
            timeout=10,
            stderr=subprocess.DEVNULL,
        )
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield sock
    finally:
        agent.terminate()
        agent.wait(timeout=10)


async def test_ssh_agent_key_is_used_and_forwarded_when_asked(cluster, ssh_agent):
    base = f"root@{{a}}:{{p}} known_hosts={cluster.known_hosts}"
    h = cluster.hosts[2]
    spec = parse_hosts(base.format(a=h.address, p=h.port) + " forward_agent=yes\n", "hosts")[0]
    assert spec.option("identity") is None  # only the agent holds the key
    t = SshTransport(spec)
    try:
        r = await t.run("ssh-add -l")
        assert r.exit_status == 0 and "imgscale-tests" in r.stdout  # the forwarded agent
    finally:
        await t.close()


async def test_hosts_file_fixture_lines_are_all_usable(cluster):
    hosts = read_hosts(cluster.hosts_file)
    assert [h.name for h in hosts] == ["node1", "node2", "node3"]
    assert all(h.python == cluster.python for h in hosts)


async def test_stream_with_stdin_answers_each_request_on_one_channel(pool):
    lines = pool["node1"].stream('while read -r x; do echo "got $x"; done', stdin=True)
    try:
        for word in ("a b", "$(id)"):
            await lines.write(word + "\n")
            assert (await asyncio.wait_for(lines.__anext__(), 10)).text == f"got {word}"
    finally:
        await lines.aclose()


async def test_reconnect_with_backoff_succeeds_once_the_host_is_back(cluster):
    t = SshTransport(spec_for(cluster, 1))
    cluster.stop_host(1)
    retry = asyncio.create_task(t.connect_with_retry(timeout=30))
    try:
        deadline = time.monotonic() + 10
        while t.failures < 2 and time.monotonic() < deadline:  # two refused attempts, backing off
            await asyncio.sleep(0.05)
        assert t.failures >= 2 and not retry.done()
        cluster.start_host(1)
        await asyncio.wait_for(retry, 30)
        assert t.connected and t.failures == 0
    finally:
        retry.cancel()
        await t.close()
