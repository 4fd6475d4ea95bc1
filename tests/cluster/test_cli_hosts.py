"""`imgscale hosts check` and `imgscale probe` against the sshd test hosts."""

import os

import pytest

from engine.cli import main

pytestmark = pytest.mark.cluster


def test_hosts_check_reports_every_host_ok(cluster, capsys):
    assert main(["hosts", "check", "--hosts", str(cluster.hosts_file)]) == 0
    out = capsys.readouterr().out
    for name, address, port in cluster.addresses:
        assert f"{name}" in out and f"root@{address}:{port}  ok  python 3." in out
    assert "3 of 3 hosts reachable" in out


def test_hosts_check_finds_a_python_under_the_hosts_home(cluster, tmp_path, capsys):
    home = os.path.expanduser("~root")  # the hosts log in as root
    wrapper = cluster.host_path(cluster.hosts[0].name, f"{home}/.imgscale/home-python")
    wrapper.write_text(f'#!/bin/sh\nexec {cluster.python} "$@"\n')
    wrapper.chmod(0o755)
    hosts = cluster.write_hosts_file(tmp_path / "hosts", {0: "python=~/.imgscale/home-python"})
    assert main(["hosts", "check", "--hosts", str(hosts)]) == 0
    assert "3 of 3 hosts reachable" in capsys.readouterr().out


def test_hosts_check_names_the_unreachable_host_and_why(cluster, capsys):
    cluster.stop_host(1)
    assert main(["hosts", "check", "--hosts", str(cluster.hosts_file)]) == 1
    out = capsys.readouterr().out
    assert "node2" in out and "FAILED: connection refused" in out
    assert "2 of 3 hosts reachable" in out


def test_hosts_check_on_a_bad_line_prints_one_line_with_its_number(tmp_path, capsys):
    hosts = tmp_path / "hosts"
    hosts.write_text("node-a\nnode-b:twenty-two\n")
    assert main(["hosts", "check", "--hosts", str(hosts)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{hosts}, line 2: 'node-b:twenty-two'" in err


def test_probe_once_prints_host_and_gpu_lines(cluster, tmp_path, capsys):
    path = cluster.write_hosts_file(tmp_path / "hosts", {0: cluster.fake_gpu_option("mig.csv")})
    assert main(["probe", "--hosts", str(path), "--once"]) == 0
    out = capsys.readouterr().out
    assert "node2" in out and "no GPU" in out
    assert "gpu0 NVIDIA A100-SXM4-40GB  util N/A" in out and "gpu1 NVIDIA A100" in out


def test_probe_loop_stops_after_count_readings(cluster, capsys):
    assert (
        main(["probe", "--hosts", str(cluster.hosts_file), "--interval", "0.3", "--count", "2"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    for name, _a, _p in cluster.addresses:
        assert sum(1 for line in lines if line.startswith(name) and "cpu" in line) >= 2
