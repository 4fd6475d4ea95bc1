"""Snapshots of the console's main screens at 80x24 and 200x60, fed fixed engine events (fixed times and data)."""

from __future__ import annotations

import pytest
from tui_helpers import cluster_events, job_events, log_events, opened, train_progress, wait_for

from engine.api import LaunchPlan
from engine.events import StageState
from tui.app import ImgscaleApp, plan_text
from tui.screens.confirm import ConfirmScreen
from tui.widgets.hostgrid import HostGrid
from tui.widgets.logview import LogView

SIZES = [(80, 24), (200, 60)]


def make_app(ws) -> ImgscaleApp:
    return ImgscaleApp(ws, telemetry=False)


async def feed(pilot, events) -> None:
    for event in events:
        pilot.app.session.emit(event)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "200x60"])
def test_stages_screen(snap_compare, demo_ws, size):
    async def run_before(pilot):
        await opened(pilot)
        await feed(
            pilot, [StageState("train", "running", "job train-1: running"), train_progress()]
        )
        view = pilot.app.stages.view_of("train")
        await wait_for(pilot, lambda: view.train is not None, "train progress drawn")
        await wait_for(pilot, lambda: not pilot.app.grid.dirty, "hosts pane drawn")  # a dashboard
        await pilot.press("j")

    assert snap_compare(make_app(demo_ws), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "200x60"])
def test_hosts_screen(snap_compare, demo_ws, size):
    async def run_before(pilot):
        await opened(pilot)
        await feed(pilot, cluster_events() + job_events())
        await pilot.press("2")
        grid = pilot.app.query_one(HostGrid)
        await wait_for(
            pilot,
            lambda: len(grid.rows) >= 17 and grid.rows["node-03"].straggler and not grid.dirty,
            "grid",
        )
        grid.rows.pop("localhost", None)  # the workspace's own host has no fixed samples
        grid.rebuild()

    assert snap_compare(make_app(demo_ws), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "200x60"])
def test_log_screen(snap_compare, demo_ws, size):
    async def run_before(pilot):
        await opened(pilot)
        await feed(pilot, job_events() + log_events(80))
        await pilot.press("3")
        log = pilot.app.query_one(LogView)
        summary = pilot.app.summary

        def settled() -> bool:
            following = log.max_scroll_y > 0 and log.scroll_offset.y == log.max_scroll_y
            return log.received == 80 and not log.dirty and following and len(summary.epochs) == 2

        await wait_for(pilot, settled, "log drawn at its end with the epoch summary")
        await pilot.pause()

    assert snap_compare(make_app(demo_ws), terminal_size=size, run_before=run_before)


FIXED_PLAN = LaunchPlan(
    mode="train",
    hosts=("node-00", "node-01"),
    roles=(
        ("node-00", "scheduler", 0),
        ("node-00", "server", 0),
        ("node-01", "server", 1),
        ("node-00", "worker", 0),
        ("node-01", "worker", 1),
    ),
    gpus_per_worker=4,
    batch_per_gpu=32,
    batch_per_worker=128,
    global_batch=256,
    mirror=True,
    data_nthreads=8,
    command=(
        "python",
        "-m",
        "engine",
        "train",
        "--network",
        "resnet",
        "--num-layers",
        "50",
        "--batch-size",
        "128",
        "--kv-store",
        "dist_sync",
        "--gpus",
        "0,1,2,3",
    ),
    findings=(
        "warning crops of 224 from images packed at 480 see only 47% of each side -> set --min-random-scale 0.533",
        "info    --num-classes 1000 matches train_labels.txt",
    ),
)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "200x60"])
def test_launch_confirmation(snap_compare, demo_ws, size):
    async def run_before(pilot):
        await opened(pilot)
        await pilot.app.push_screen(ConfirmScreen("Launch train?", plan_text(FIXED_PLAN)))

    assert snap_compare(make_app(demo_ws), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "200x60"])
def test_help_screen(snap_compare, demo_ws, size):
    async def run_before(pilot):
        await opened(pilot)
        await pilot.press("question_mark")

    assert snap_compare(make_app(demo_ws), terminal_size=size, run_before=run_before)
