"""Issue 11 item 13: re-attaching to a finished job whose run folder starts with ~ shows its last lines."""

from __future__ import annotations

import asyncio

from engine.events import LogLine
from engine.train.launch.launch import LaunchSpec, launch, open_job


async def test_attach_to_a_finished_job_in_a_home_run_folder_shows_its_last_lines(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("IMGSCALE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the host's shell expands ~ to this
    spec = LaunchSpec(
        command=("sh", "-c", "for i in 1 2 3 4; do echo line $i; done"),
        num_workers=1,
        num_servers=0,
        launcher="local",
        run_root="~/.imgscale/runs",  # the default's form: relative to the host's home
        cwd=str(tmp_path),
    )
    job = await launch(spec)
    await asyncio.wait_for(job.wait(), 60)
    await job.close()
    assert (tmp_path / "home" / ".imgscale" / "runs" / job.job_id).is_dir()
    seen: list = []
    again = open_job(job.job_id, sink=seen.append, tail_lines=2)
    try:
        await again.attach()
    finally:
        await again.close()
    assert [e.text for e in seen if isinstance(e, LogLine)] == ["line 3", "line 4"]
