"""Quitting while a job runs leaves it running and says how to come back to it."""

from __future__ import annotations

import sys

from tui_helpers import opened, wait_for

from engine.api import jobs
from engine.cluster.process.kill import kill_job
from engine.train.launch.launch import LaunchSpec, launch
from tui.app import ImgscaleApp

WAIT = "import time; print('running', flush=True); time.sleep(120)"


async def test_quit_with_a_running_job_names_it_and_how_to_reattach(demo_ws, tmp_path):
    job = await launch(
        LaunchSpec(
            command=(sys.executable, "-c", WAIT),
            num_workers=1,
            num_servers=0,
            launcher="local",
            run_root=str(tmp_path / "runs"),
            cwd=str(tmp_path),
        )
    )
    try:
        app = ImgscaleApp(demo_ws, telemetry=False)
        async with app.run_test(size=(100, 30)) as pilot:
            await opened(pilot)
            console = jobs.ConsoleJob(job, "train")
            await wait_for(pilot, lambda: console.active, "the job running")
            app.session.job = console
            await pilot.press("q")
        note = app.return_value
        assert note is not None and job.job_id in note
        assert f"imgscale attach {job.job_id}" in note and f"imgscale-tui {demo_ws}" in note
    finally:
        await kill_job(job.job_id, grace_s=0)


async def test_quit_without_a_running_job_prints_nothing(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot)
        await pilot.press("q")
    assert app.return_value is None
