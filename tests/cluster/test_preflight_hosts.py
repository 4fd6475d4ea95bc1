"""`imgscale check -H HOSTS` across the sshd test hosts: reach, compare, time an all-reduce."""

from __future__ import annotations

import pytest

from engine.train.launch.preflight_hosts import AcrossHosts, across_hosts

pytest.importorskip("torch", reason="the torch engine is an extra: pip install -e .[torch]")
pytestmark = [pytest.mark.cluster]


def _args(hosts, data_train, **extra):
    values = {"hosts": str(hosts), "engine": "torch", "data_train": str(data_train)}
    values.update({"data_val": None, "gpus": [], "port": None, "num_workers": None})
    return AcrossHosts(**{**values, **extra})


def _chunk(folder, idx=b"0\t0\n1\t100\n"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "demo_train.rec").write_bytes(b"\x00" * 200)
    (folder / "demo_train.idx").write_bytes(idx)


async def test_three_hosts_sharing_the_data_pass_and_report_all_reduce_bandwidth_per_host(
    cluster, state_home
):
    _chunk(state_home / "data")  # the test's folder is shared by every host
    findings = await across_hosts(_args(cluster.hosts_file, state_home / "data"))
    errors = [f.what for f in findings if f.level == "error"]
    assert errors == []
    lines = [f.what for f in findings]
    assert "3 of 3 host(s) reached" in lines
    assert "data: the same 1 .rec/.idx file(s) on every host" in lines
    for host in ("node1", "node2", "node3"):
        assert any(x.startswith(f"{host}: all-reduce over 3 processes: ") for x in lines), lines


async def test_another_index_an_unreached_host_and_a_busy_master_port_are_named(
    cluster, state_home
):
    # /tmp is private to each test host: the data differs from host to host
    _chunk(cluster.host_path("node1", "/tmp/pf-data"))
    _chunk(cluster.host_path("node2", "/tmp/pf-data"), idx=b"0\t0\n")
    cluster.stop_host(2)
    busy = cluster.hosts[0].port  # node1's sshd listens there
    findings = await across_hosts(_args(cluster.hosts_file, "/tmp/pf-data", port=busy))
    errors = [f"{f.what} -> {f.change}" for f in findings if f.level == "error"]
    assert any(e.startswith("node3: not reached") for e in errors), errors
    assert any("node2: /tmp/pf-data/demo_train.rec: its .idx differs" in e for e in errors), errors
    assert any(e.startswith(f"node1: port {busy} ") for e in errors), errors
    assert not any("all-reduce" in f.what for f in findings)  # not every host answered
