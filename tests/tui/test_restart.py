"""Quitting the console never stops a job: a reopened console shows it and re-attaches to its logs."""

from __future__ import annotations

import pytest

from engine.cluster import jobs
from tui.app import ImgscaleApp
from tui.screens.confirm import ConfirmScreen
from tui.widgets.logview import LogView
from tui.widgets.panels import StatusBar
from tui.widgets.stagetable import StageTable
from tui_helpers import opened, wait_for

JOB_S = 240.0


@pytest.mark.mxnet
@pytest.mark.slow
async def test_job_survives_quit_and_reopened_console_shows_it(prepared_ws):
    first = ImgscaleApp(prepared_ws, telemetry=False)
    async with first.run_test(size=(120, 40)) as pilot:
        await opened(pilot)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(first.screen, ConfirmScreen), "launch plan")
        await pilot.press("y")
        status = first.query_one(StatusBar)
        await wait_for(pilot, lambda: status.job_state == "running", "job running", JOB_S)
        job_id = status.job
        await pilot.press("q")
    assert jobs.load(job_id).state == "running"  # the console left; the job did not

    second = ImgscaleApp(prepared_ws, telemetry=False)
    async with second.run_test(size=(120, 40)) as pilot:
        await opened(pilot)
        status = second.query_one(StatusBar)
        assert status.job == job_id
        log = second.query_one(LogView)
        await wait_for(pilot, lambda: log.received > 0, "re-attached log lines", JOB_S)
        await wait_for(pilot, lambda: status.job_state == "done", "job finished while watched again", JOB_S)
        assert any("Saved checkpoint" in line.text for line in log.all_lines)
        train = second.query_one(StageTable).view_of("train")
        await wait_for(pilot, lambda: train.status.state == "done", "train stage done")
        await pilot.press("q")
    assert list((prepared_ws / "model").glob("resnet-0001.params"))
