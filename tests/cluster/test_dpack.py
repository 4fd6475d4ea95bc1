"""Distributed packing over the sshd test hosts gives byte-for-byte the output of a local pack."""

from __future__ import annotations

import shutil

import pytest

from engine.cluster.process import jobs
from engine.events import StageProgress
from engine.prep.demo import make_demo_tree
from engine.prep.lst import write_lists
from engine.prep.pack import PackOptions, pack_lists
from engine.prep.pack_remote import pack_on_hosts_async

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


async def test_pack_on_three_hosts_matches_a_local_pack(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGSCALE_HOME", str(tmp_path / "home"))
    images = tmp_path / "images"
    make_demo_tree(images, classes=3, images_per_class=4, max_side=64)
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    lists = write_lists(local / "data", images, recursive=True, chunks=3)
    shutil.copytree(local, remote)
    options = PackOptions(resize=32, quality=90, num_thread=1)
    expected = pack_lists(lists, images, options)

    events = []
    remote_lists = [remote / p.name for p in lists]
    result = await pack_on_hosts_async(
        str(cluster.hosts_file),
        remote_lists,
        str(images),
        options,
        events.append,
        run_root=str(tmp_path / "runs"),
    )
    assert result.records == expected.records == 12
    for lst in lists:
        for suffix in (".rec", ".idx"):
            mine = (remote / lst.name).with_suffix(suffix).read_bytes()
            assert mine == lst.with_suffix(suffix).read_bytes(), f"{lst.name} {suffix}"
    per_host = {e.host for e in events if isinstance(e, StageProgress) and e.host and not e.part}
    assert per_host == {"node1", "node2", "node3"}
    chunk_done = {
        (e.host, e.part)
        for e in events
        if isinstance(e, StageProgress) and e.part and e.done == e.total
    }
    assert len(chunk_done) == 3 and {h for h, _ in chunk_done} == {"node1", "node2", "node3"}
    (record,) = jobs.all_jobs()
    assert record.kind == "pack" and record.state == "done"
    assert cluster.processes_of(record.job) == {}


def test_imgscale_pack_hosts_from_the_shell(cluster, tmp_path):
    import os
    import subprocess
    import sys

    images = tmp_path / "images"
    make_demo_tree(images, classes=2, images_per_class=3, max_side=48)
    lists = write_lists(tmp_path / "lists" / "data", images, recursive=True, chunks=2)
    env = {**os.environ, "IMGSCALE_HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "pack",
            str(tmp_path / "lists"),
            str(images),
            "--hosts",
            str(cluster.hosts_file),
            "--resize",
            "32",
            "--num-thread",
            "1",
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for lst in lists:  # every listed image packed, in every chunk
        listed = lst.read_text().count("\n")
        assert listed and lst.with_suffix(".idx").read_text().count("\n") == listed
        assert lst.with_suffix(".rec").stat().st_size > 0
