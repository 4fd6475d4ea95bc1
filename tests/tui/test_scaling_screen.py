"""The Scaling screen: the published table at open, fed ScalingPoints, a real local sweep, stop, and snapshots."""

from __future__ import annotations

import os
import sys

import psutil
import pytest
from textual.app import App
from textual.widgets import Input, Select, Static
from textual.worker import WorkerState
from tui_helpers import wait_for

from engine.events import JobState, LogLine, ScalingPoint, StageProgress
from tui.app import ImgscaleApp
from tui.screens.scaling import ScalingScreen
from tui.widgets.scaling_plot import ScalingPlot
from tui.widgets.scaling_table import ScalingTable

# Two real ps-lite runs of a tiny ResNet on 2 shared cores, MXNet start-up included (~20 s alone).
SWEEP_WAIT_S = 400.0


class ScalingHost(App):
    """A bare app that opens the Scaling screen, as the console does on its key.

    ``installed``: the screen is installed under a name (it outlives leaving it), not just pushed.
    """

    def __init__(self, installed: bool = False, **screen_options) -> None:
        super().__init__()
        self.installed = installed
        self.screen_options = screen_options

    def on_mount(self) -> None:
        self.open_scaling()

    def open_scaling(self) -> None:
        if not self.installed:
            self.push_screen(ScalingScreen(**self.screen_options))
            return
        if not self.is_screen_installed("scaling"):
            self.install_screen(ScalingScreen(**self.screen_options), "scaling")
        self.push_screen("scaling")


class ConsoleScalingHost(ImgscaleApp):
    """The console itself opening the Scaling screen once its workspace is open: the sweep runs in
    its session and reaches the screen through its one bridge."""

    def __init__(self, workspace, installed: bool = False, screen=ScalingScreen, **screen_options):
        super().__init__(workspace, telemetry=False)
        self.installed = installed
        self.screen_class = screen
        self.screen_options = screen_options
        self.scaling_opened = False

    def apply_snapshot(self) -> None:
        super().apply_snapshot()
        if not self.scaling_opened:
            self.scaling_opened = True
            self.open_scaling()

    def open_scaling(self) -> None:
        if not self.installed:
            self.push_screen(self.screen_class(**self.screen_options))
            return
        if not self.is_screen_installed("scaling"):
            self.install_screen(self.screen_class(**self.screen_options), "scaling")
        self.push_screen("scaling")


def table_cells(screen) -> list[list[str]]:
    table = screen.query_one(ScalingTable)
    return [[str(cell) for cell in table.get_row_at(r)] for r in range(table.row_count)]


def plot_text(screen) -> str:
    return str(screen.query_one(ScalingPlot).render())


def fixed_points() -> list[ScalingPoint]:
    """A finished sweep with fixed figures and times, one cell failed."""
    rates = [
        ("resnet-18", 1, 5.7),
        ("resnet-18", 2, 10.4),
        ("resnet-18", 4, 18.9),
        ("alexnet", 1, 40.0),
        ("alexnet", 2, 61.0),
    ]
    points = [ScalingPoint(net, 2, gpus, gpus, rate, time=0.0) for net, gpus, rate in rates]
    return points + [
        ScalingPoint("alexnet", 2, 4, 4, None, message="worker 3 exited with status 137", time=0.0)
    ]


def feed(screen, events) -> None:
    for event in events:
        screen.post_message(ScalingScreen.SweepEvent(event))


def processes_with(marker: str) -> list[int]:
    """The job's processes: each wrapper and command carries ``marker`` as an argument of its own.

    (The launcher's watch shell holds the marker only inside its script text; it is not the job.)
    """
    return [
        proc.pid
        for proc in psutil.process_iter(["cmdline"])
        if marker in (proc.info["cmdline"] or [])
    ]


async def opened(pilot) -> ScalingScreen:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ScalingScreen), "the Scaling screen")
    await wait_for(
        pilot, lambda: pilot.app.screen.query_one(ScalingTable).row_count > 0, "the first table"
    )
    return pilot.app.screen


async def test_opens_on_the_published_table_against_the_model():
    async with ScalingHost().run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot)
        rows = table_cells(screen)
        assert len(rows) == 27  # three networks × nine sizes of the tutorial's table
        assert rows[8] == [
            "alexnet",
            "256",
            "61,938.4",
            "135.51",
            "52.9%",
            "53.8%",
        ]  # published; model
        caption = str(screen.query_one("#scaling-caption", Static).render())
        assert "16 × 16 Tesla K80" in caption and "pts of every cell" in caption
        text = plot_text(screen)
        assert "a alexnet" in text and "i inception-v3" in text and "⠒ ideal" in text
        assert "256" in text  # the x axis reaches the tutorial's largest cluster


async def test_fed_points_fill_the_table_and_the_plot_with_a_colour_per_network():
    async with ScalingHost().run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot)
        feed(screen, fixed_points())
        await wait_for(pilot, lambda: screen.query_one(ScalingTable).row_count == 6, "six rows")
        rows = table_cells(screen)
        assert rows[1] == [
            "resnet-18",
            "2",
            "10.4",
            "1.82",
            "91.2%",
            "N/A",
        ]  # against 1 worker's 5.7
        assert rows[5][:3] == ["alexnet", "4", "failed"]
        assert "137" in str(screen.query_one("#scaling-detail", Static).render())  # why it failed

        plot = screen.query_one(ScalingPlot)
        text = plot.render()
        assert "r resnet-18" in text.plain and "a alexnet" in text.plain
        at, label = text.plain.index("r resnet-18"), "r resnet-18"
        legend = [s.style for s in text.spans if (s.start, s.end) == (at, at + len(label))]
        assert legend == [plot.series_style(0)]  # the legend's name has its line's colour
        assert plot.series_style(0) != plot.series_style(1)
        resnet = "".join(
            text.plain[s.start : s.end] for s in text.spans if s.style == plot.series_style(0)
        )
        assert any(
            0x2801 <= ord(ch) <= 0x28FF for ch in resnet
        )  # its line's braille dots, coloured

        await pilot.press("p")  # back to the published table, and again to this sweep
        assert screen.query_one(ScalingTable).row_count == 27
        await pilot.press("p")
        assert screen.query_one(ScalingTable).row_count == 6


async def test_a_newer_figure_replaces_the_cell_and_progress_is_shown():
    async with ScalingHost().run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot)
        feed(
            screen,
            [
                StageProgress(
                    "scaling", 1, 4, unit="runs", part="resnet-18 on 2 workers", message="launching"
                ),
                LogLine("localhost", "worker", 1, "Epoch[0] Batch [0-2]\tSpeed: 6.17 samples/sec"),
                ScalingPoint("resnet-18", 2, 1, 1, 5.0, time=0.0),
                ScalingPoint("resnet-18", 2, 1, 1, 6.0, time=0.0),
            ],
        )
        newer = [["resnet-18", "1", "6.0"]]
        await wait_for(
            pilot, lambda: [r[:3] for r in table_cells(screen)] == newer, "only the newer figure"
        )
        progress = str(screen.query_one("#scaling-progress", Static).render())
        assert progress == "run 2 of 4: resnet-18 on 2 workers — launching"
        assert "localhost worker 1: Epoch[0]" in str(
            screen.query_one("#scaling-detail", Static).render()
        )


async def test_a_mistake_in_the_form_is_one_line_and_starts_nothing():
    async with ScalingHost().run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot)
        screen.query_one("#scaling-networks", Input).value = "resnet-18"  # no batch size
        await pilot.press("s")
        progress = str(screen.query_one("#scaling-progress", Static).render())
        assert "resnet-18" in progress and "network:batch-per-GPU" in progress
        assert not screen.running and not screen.workers
        assert table_cells(screen)[0][0] == "alexnet"  # still the published table


async def test_escape_goes_back():
    async with ScalingHost().run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        await pilot.press("escape")
        await wait_for(
            pilot, lambda: not isinstance(pilot.app.screen, ScalingScreen), "the screen closed"
        )


def sleeping_sweep(workspace, tmp_path, installed: bool = False) -> tuple[ConsoleScalingHost, str]:
    """A sweep whose job never reports (every process sleeps), tagged so its processes can be found."""
    marker = f"imgscale-scaling-{os.getpid()}-{tmp_path.name}"
    command = f"{sys.executable} -c 'import time; time.sleep(120)' {marker}"
    host = ConsoleScalingHost(
        workspace,
        installed,
        networks="resnet-18:2",
        workers="1",
        command=command,
        run_timeout_s=120,
    )
    return host, marker


async def start_sleeping_sweep(pilot, marker: str) -> ScalingScreen:
    screen = await opened(pilot)
    await pilot.press("s")
    await wait_for(
        pilot, lambda: screen.running and processes_with(marker), "the job's processes", 60
    )
    return screen


@pytest.mark.slow
async def test_stop_cancels_the_sweep_and_stops_the_job_everywhere(demo_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    host, marker = sleeping_sweep(demo_ws, tmp_path)
    async with host.run_test(size=(80, 24)) as pilot:
        screen = await start_sleeping_sweep(pilot, marker)
        # the sweep runs in the session and reaches the screen through the app's one bridge
        running = [w for w in pilot.app.workers if w.state == WorkerState.RUNNING]
        assert [w.group for w in running] == ["engine"]
        await pilot.press("x")
        await wait_for(pilot, lambda: not screen.running, "the sweep to stop", 60)
        assert screen.outcome == "stopped"
        assert "stopped" in str(screen.query_one("#scaling-progress", Static).render())
        await wait_for(pilot, lambda: not processes_with(marker), "the job's processes to end", 30)


@pytest.mark.slow
async def test_leaving_an_installed_screen_keeps_the_sweep_and_a_pushed_one_stops_it(
    demo_ws, tmp_path, monkeypatch
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    host, marker = sleeping_sweep(demo_ws, tmp_path, installed=True)
    async with host.run_test(size=(80, 24)) as pilot:
        screen = await start_sleeping_sweep(pilot, marker)
        await pilot.press("escape")
        await wait_for(pilot, lambda: pilot.app.screen is not screen, "leaving the screen")
        assert screen.running and processes_with(marker)  # the sweep goes on behind
        pilot.app.open_scaling()
        await wait_for(pilot, lambda: pilot.app.screen is screen, "the same screen again")
        await pilot.press("x")
        await wait_for(pilot, lambda: not processes_with(marker), "the job's processes to end", 60)

    host, marker = sleeping_sweep(demo_ws, tmp_path / "pushed")
    async with host.run_test(size=(80, 24)) as pilot:
        screen = await start_sleeping_sweep(pilot, marker)
        await pilot.press("escape")  # the screen goes once the job has stopped
        await wait_for(pilot, lambda: pilot.app.screen is not screen, "leaving the screen", 60)
        assert screen.outcome == "stopped" and not processes_with(marker)


@pytest.mark.slow
async def test_stop_sweep_returns_once_the_job_has_stopped(demo_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    host, marker = sleeping_sweep(demo_ws, tmp_path, installed=True)
    async with host.run_test(size=(80, 24)) as pilot:
        screen = await start_sleeping_sweep(pilot, marker)
        await pilot.press("escape")  # installed: the sweep goes on behind, as when the app quits
        await screen.stop_sweep()
        assert not processes_with(marker)  # what the app awaits before it exits


class StopAtLaunch(ScalingScreen):
    """Asks for a stop at the very moment the engine starts launching the first job."""

    jobs_seen: tuple = ()

    def track_launch(self, event) -> None:
        super().track_launch(event)
        if isinstance(event, JobState):
            self.jobs_seen += (event.job,)
        if self.in_launch and not self.stop_requested:
            self.request_stop()
            self.progress_at_stop = str(self.query_one("#scaling-progress", Static).render())


@pytest.mark.slow
async def test_a_stop_during_the_launch_waits_for_the_job_to_start_then_stops_it(
    demo_ws, tmp_path, monkeypatch
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    _, marker = sleeping_sweep(demo_ws, tmp_path)
    command = f"{sys.executable} -c 'import time; time.sleep(120)' {marker}"
    app = ConsoleScalingHost(
        demo_ws, screen=StopAtLaunch, networks="resnet-18:2", workers="1", command=command
    )
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot)
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.stop_requested, "the stop at the launch", 30)
        assert "as soon as the job being launched has started" in screen.progress_at_stop
        await wait_for(pilot, lambda: not screen.running, "the sweep to stop", 60)
        assert screen.outcome == "stopped" and screen.jobs_seen  # the job did start, then stopped
        # interrupting the launch itself would have left the processes it had started
        await wait_for(pilot, lambda: not processes_with(marker), "the job's processes to end", 30)


@pytest.mark.mxnet
@pytest.mark.slow
async def test_a_real_sweep_of_one_and_two_workers_fills_the_table_and_writes_files(
    demo_ws, tmp_path, monkeypatch
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "out"
    host = ConsoleScalingHost(
        demo_ws,
        out_dir=out,
        networks="resnet-18:2",
        workers="1,2",
        image_shape="3,32,32",
        num_classes=4,
        warmup=1,
        readings=2,
        disp_batches=2,
        run_timeout_s=240,
    )
    async with host.run_test(size=(100, 30)) as pilot:
        screen = await opened(pilot)
        assert screen.query_one("#scaling-hosts", Input).value == ""  # this machine
        assert screen.query_one("#scaling-kv", Select).value == "dist_sync"
        screen.query_one("#scaling-gbits", Input).value = "10"  # the model's network bandwidth
        await pilot.press("s")
        assert screen.running
        await wait_for(pilot, lambda: not screen.running, "the sweep to finish", SWEEP_WAIT_S)
        rows = table_cells(screen)
        assert screen.outcome == "done", (screen.outcome, rows)
        assert [r[:2] for r in rows] == [["resnet-18", "1"], ["resnet-18", "2"]]
        assert all(float(r[2].replace(",", "")) > 0 for r in rows), rows
        assert rows[0][3] == "1.00" and rows[0][5] == "100.0%"
        assert (
            rows[1][5].endswith("%") and rows[1][5] != "N/A"
        )  # the model's efficiency at 2 workers
        assert "r resnet-18" in plot_text(screen)
        assert "2 of 2 runs measured" in str(screen.query_one("#scaling-progress", Static).render())
        assert {p.name for p in out.iterdir()} >= {
            "table.txt",
            "scaling.csv",
            "scaling.json",
            "scaling.png",
        }


SNAP_SIZES = [(80, 24), (200, 60)]


@pytest.mark.parametrize("size", SNAP_SIZES, ids=["80x24", "200x60"])
def test_snapshot_published(snap_compare, size):
    async def run_before(pilot):
        await opened(pilot)

    assert snap_compare(ScalingHost(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SNAP_SIZES, ids=["80x24", "200x60"])
def test_snapshot_a_finished_sweep(snap_compare, size):
    async def run_before(pilot):
        screen = await opened(pilot)
        feed(
            screen,
            [JobState("scaling-1", "stopped", message="measured", time=0.0), *fixed_points()],
        )
        await wait_for(pilot, lambda: screen.query_one(ScalingTable).row_count == 6, "six rows")

    assert snap_compare(ScalingHost(), terminal_size=size, run_before=run_before)
