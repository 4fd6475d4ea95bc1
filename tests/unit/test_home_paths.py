"""A host path given as ``~/…`` means the host's home, in every command that sends one."""

import subprocess

from engine.cluster.hostpool import HostPool
from engine.cluster.probes.grid import parse_stats, stats_command
from engine.train.launch.hostreport import data_facts
from engine.train.launch.launch import sync_work_dir


def _home_and_cwd(tmp_path, monkeypatch):
    # A quoted "~" would become a folder named "~" in the current directory: keep that in tmp.
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    return home, cwd


async def test_sync_dst_dir_under_home_lands_in_the_home_folder(tmp_path, monkeypatch):
    home, cwd = _home_and_cwd(tmp_path, monkeypatch)
    source = tmp_path / "project"
    (source / "data").mkdir(parents=True)
    (source / "data" / "x.txt").write_text("payload")
    pool = HostPool.local()
    try:
        await sync_work_dir(pool, pool.hosts, str(source), "~/synced")
    finally:
        await pool.close()
    assert (home / "synced" / "data" / "x.txt").read_text() == "payload"
    assert not (cwd / "~").exists()


def test_df_of_a_data_path_under_home_is_read(tmp_path, monkeypatch):
    home, _ = _home_and_cwd(tmp_path, monkeypatch)
    (home / "data").mkdir()
    out = subprocess.run(
        ["/bin/sh", "-c", stats_command("~/data")], capture_output=True, text=True, timeout=30
    ).stdout
    assert parse_stats(out).disk_total


def test_the_pre_flight_reads_data_under_home(tmp_path, monkeypatch):
    home, _ = _home_and_cwd(tmp_path, monkeypatch)
    (home / "data").mkdir()
    (home / "data" / "train.rec").write_bytes(b"x" * 10)
    assert data_facts(["~/data"]) == {"~/data": [["train.rec", 10, None, None]]}
