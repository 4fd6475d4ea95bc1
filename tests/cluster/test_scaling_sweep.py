"""`imgscale bench scaling|bandwidth` as real ps-lite jobs: across sshd test hosts, and when a run crashes or hangs."""

import csv
import json
import sys

import psutil
import pytest

from engine import cli


@pytest.mark.cluster
@pytest.mark.mxnet
@pytest.mark.slow
def test_sweep_of_one_and_two_workers_writes_table_csv_json_and_png(
    ssh_cluster, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("IMGSCALE_HOME", str(tmp_path / "home"))  # job records of this test only
    out = tmp_path / "out"
    status = cli.main(
        [
            "bench",
            "scaling",
            "--networks",
            "resnet-18:2",
            "--workers",
            "1,2",
            "-H",
            str(ssh_cluster.hosts_file),
            "--kv-store",
            "dist_sync",
            "--image-shape",
            "3,32,32",
            "--num-classes",
            "4",
            "--warmup",
            "1",
            "--readings",
            "2",
            "--disp-batches",
            "2",
            "--run-timeout",
            "240",
            "--out",
            str(out),
            "-v",
        ]
    )
    printed = capsys.readouterr()
    assert status == 0, printed.err[-3000:]

    rows = list(csv.DictReader((out / "scaling.csv").open()))
    assert [(r["network"], r["workers"], r["gpus"]) for r in rows] == [
        ("resnet-18", "1", "1"),
        ("resnet-18", "2", "2"),
    ]
    assert all(float(r["images_per_sec"]) > 0 for r in rows)
    assert float(rows[0]["speedup"]) == pytest.approx(1.0)
    assert len(rows[1]["per_worker"].split(";")) == 2  # both workers' steady state, summed
    assert int(rows[1]["readings"]) == 2 * 2  # the warm-up reading of each worker was dropped

    data = json.loads((out / "scaling.json").read_text())
    assert data["meta"]["kv_store"] == "dist_sync" and len(data["points"]) == 2
    assert (out / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "table.txt").read_text()
    assert "#GPUs" in table and "resnet-18" in table
    assert "Images/s (speedup, efficiency against ideal)" in printed.out
    assert "GPUs →" in printed.out  # the in-terminal plot

    # the workers really ran on the sshd hosts, as real dist_sync jobs with the trainer's Speedometer lines
    worker_lines = [
        line for line in printed.err.splitlines() if " worker " in line and "Speed:" in line
    ]
    hosts = {line.split()[0] for line in worker_lines}
    assert hosts and hosts <= {h.name for h in ssh_cluster.hosts}
    assert "workers=2" in printed.err  # the trainer's start line of the 2-worker run


@pytest.mark.cluster
@pytest.mark.mxnet
@pytest.mark.slow
def test_kvstore_bandwidth_across_hosts_moves_the_right_values(
    ssh_cluster, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("IMGSCALE_HOME", str(tmp_path / "home"))
    status = cli.main(
        [
            "bench",
            "bandwidth",
            "--network",
            "resnet-18",
            "--image-shape",
            "3,32,32",
            "--num-classes",
            "4",
            "--kv-store",
            "dist_sync",
            "-n",
            "2",
            "-H",
            str(ssh_cluster.hosts_file),
            "--rounds",
            "2",
            "--json",
        ]
    )
    printed = capsys.readouterr()
    assert status == 0, printed.err[-3000:]
    result = json.loads(printed.out)
    assert (result["workers"], result["rounds"], result["arrays"]) == (2, 2, 60)
    assert result["max_error"] == 0  # every pulled value was the sum of both workers' pushes
    assert result["model_bytes"] > 40e6 and result["gbytes_per_s"] > 0


def _sweep_argv(command: str, out, timeout: str = "120") -> list[str]:
    return [
        "bench",
        "scaling",
        "--networks",
        "resnet-18:2",
        "--workers",
        "1",
        "--command",
        command,
        "--warmup",
        "0",
        "--readings",
        "1",
        "--run-timeout",
        timeout,
        "--out",
        str(out),
    ]


@pytest.mark.slow
def test_a_crashing_worker_gives_a_failed_cell_not_a_hang(tmp_path, monkeypatch, capsys):
    exit_code = 3
    monkeypatch.setenv("IMGSCALE_HOME", str(tmp_path / "home"))
    command = f"{sys.executable} -c 'import sys; print(\"starting\"); sys.exit({exit_code})'"
    assert cli.main(_sweep_argv(command, tmp_path / "out")) == 1  # nothing measured
    rows = list(csv.DictReader((tmp_path / "out" / "scaling.csv").open()))
    assert (
        rows[0]["images_per_sec"] == "" and f"exited with status {exit_code}" in rows[0]["message"]
    )
    assert "failed" in (tmp_path / "out" / "table.txt").read_text()


@pytest.mark.slow
def test_a_silent_job_times_out_and_is_stopped_everywhere(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IMGSCALE_HOME", str(tmp_path / "home"))
    marker = f"imgscale-timeout-{tmp_path.name}"
    command = f"{sys.executable} -c 'import time; time.sleep(120)' {marker}"
    assert cli.main(_sweep_argv(command, tmp_path / "out", timeout="4")) == 1
    rows = list(csv.DictReader((tmp_path / "out" / "scaling.csv").open()))
    assert "timed out after 4 s" in rows[0]["message"]
    left = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if marker in " ".join(p.info["cmdline"] or [])
    ]
    assert left == []  # scheduler, server and worker were all killed when the run gave up
