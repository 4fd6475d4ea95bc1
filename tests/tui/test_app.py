"""Pilot tests: every key and pane of the console against a real demo workspace on this machine."""

from __future__ import annotations

import tomllib

from textual.command import CommandPalette
from textual.widgets import Input, OptionList, Tabs
from tui_helpers import cluster_events, job_events, log_events, opened, train_progress, wait_for

from engine.events import Alert, JobState, LogLine, StageProgress, StageState
from tui.app import ImgscaleApp
from tui.messages import LogBatch, Telemetry
from tui.screens.confirm import ConfirmScreen
from tui.screens.form import OptionsForm
from tui.screens.help import HelpScreen
from tui.screens.prompt import PromptScreen
from tui.widgets.hostgrid import HostGrid
from tui.widgets.logview import LogView
from tui.widgets.panels import StatusBar
from tui.widgets.stagetable import StageTable


def config(ws) -> dict:
    return tomllib.loads((ws / "workspace.toml").read_text())


def stage_state(app, name: str) -> str:
    return app.session.workspace.stage_record(name).get("state")


async def select_stage(pilot, name: str) -> None:
    table = pilot.app.query_one(StageTable)
    names = [v.status.name for v in table.views]
    await pilot.press(*(["k"] * len(names)), *(["j"] * names.index(name)))
    assert table.selected.status.name == name


async def wait_done(pilot, name: str, what: str = "") -> None:
    app = pilot.app
    await wait_for(pilot, lambda: stage_state(app, name) == "done", what or f"{name} done")


async def run_stage(pilot, name: str) -> None:
    """Select the stage, start it with 's' and wait until the workspace records it done."""
    await select_stage(pilot, name)
    await pilot.press("s")
    await wait_done(pilot, name)


async def test_number_keys_switch_panes_and_focus(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot)
        for key, pane, widget in (
            ("2", "hosts", HostGrid),
            ("3", "log", LogView),
            ("4", "actions", None),
            ("1", "stages", StageTable),
        ):
            await pilot.press(key)
            assert app.active_pane == pane
            assert app.query_one(f"#{pane}").display and app.query_one(Tabs).display
            if widget is not None:
                assert isinstance(app.focused, widget)


async def test_a_large_terminal_shows_stages_hosts_and_log_at_once(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(200, 60)) as pilot:
        await opened(pilot)
        assert app.dashboard and not app.query_one(Tabs).display
        screen = app.screen.region
        for pane in ("stages", "hosts", "log", "actions"):
            region = app.query_one(f"#{pane}").region
            assert region.height > 3 and screen.contains_region(region), pane
        await pilot.press("2")
        assert isinstance(app.focused, HostGrid)
        assert app.query_one("#stages").region.height > 3  # still shown: only the keys moved
        await pilot.press("3")
        assert isinstance(app.focused, LogView)
        await pilot.resize_terminal(100, 30)
        await wait_for(pilot, lambda: not app.dashboard, "tabs on a small terminal")
        assert app.query_one(Tabs).display
        assert [
            p for p in ("stages", "hosts", "log", "actions") if app.query_one(f"#{p}").display
        ] == ["log"]


async def test_every_action_shows_without_scrolling_and_the_footer_keeps_help_and_quit(demo_ws):
    from tui.app import ACTIONS

    for size in ((80, 24), (200, 60)):
        app = ImgscaleApp(demo_ws, telemetry=False)
        async with app.run_test(size=size) as pilot:
            await opened(pilot)
            await pilot.press("4")
            await pilot.pause()  # the pane is laid out on the next refresh
            options = app.query_one("#action-list", OptionList)
            assert options.option_count == len(ACTIONS)
            assert options.max_scroll_y == 0 and options.region.height >= len(ACTIONS), size
            corner = app.query_one("#footer-keys")
            assert app.screen.region.contains_region(corner.region), size
            assert str(corner.render()) == "? help  q quit"


async def test_train_row_shows_epoch_batch_rate_eta_and_accuracy(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        app.session.emit(StageState("train", "running", "job train-1: running"))
        app.session.emit(train_progress())
        view = app.stages.view_of("train")
        await wait_for(pilot, lambda: view.train is not None, "progress drawn")
        index = app.stages.views.index(view)
        row = app.stages.render_line(index + 1).text
        for needle in ("ep 3/15 b 120/400", "1,234/s", "05:00", "0.412"):
            assert needle in row, row


async def test_help_lists_every_global_key(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(100, 40)) as pilot:
        await opened(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.query_one("#dialog-body Static").render()
        for needle in (
            "Launch training",
            "MXNET_BACKWARD_DO_MIRROR",
            "--test-io",
            "Doctor",
            "undo it",
            "follow / pause",
        ):
            assert needle in str(text)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_start_key_runs_a_stage_and_saves_its_state(demo_ws):
    seen = []
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(100, 30), message_hook=seen.append) as pilot:
        await opened(pilot)
        await run_stage(pilot, "extract")
        view = app.query_one(StageTable).view_of("extract")
        await wait_for(pilot, lambda: view.status.state == "done", "extract drawn as done")
        assert view.status.done == view.status.total == 6
        assert (demo_ws / "data/images").is_dir()
        assert any(getattr(m, "event", None) and isinstance(m.event, StageProgress) for m in seen)


async def test_undo_key_moves_filtered_classes_back(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot)
        for name in ("extract", "filter"):
            await run_stage(pilot, name)
        root = demo_ws / "data/images"
        assert len(list(root.iterdir())) < 6
        await pilot.press("u")
        await wait_for(pilot, lambda: stage_state(app, "filter") == "pending", "filter undone")
        assert len(list(root.iterdir())) == 6


async def test_resume_key_continues_a_stopped_stage(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot)
        app.session.workspace.update_stage("extract", state="stopped")
        await select_stage(pilot, "extract")
        await pilot.press("r")
        await wait_done(pilot, "extract", "extract resumed to done")


async def test_stop_key_on_an_idle_stage_says_so_and_the_app_keeps_running(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await opened(pilot)
        await pilot.press("x")
        await wait_for(pilot, lambda: "not running" in app.last_result, "error shown")
        assert app.is_running


async def test_stop_key_stops_a_running_stage_and_resume_finishes_it(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot)
        await select_stage(pilot, "extract")
        # The stage thread records its first progress under the workspace lock: holding the lock here
        # parks the stage there, so the stop request certainly comes while it runs.
        lock = app.session.workspace.lock
        lock.acquire()
        try:
            await pilot.press("s")
            await wait_for(pilot, lambda: "extract" in app.session.running, "extract running")
            await pilot.press("x")
            assert app.session.running["extract"].run.stop.is_set()
        finally:
            lock.release()
        await wait_for(pilot, lambda: stage_state(app, "extract") == "stopped", "extract stopped")
        view = app.stages.view_of("extract")
        await wait_for(pilot, lambda: view.status.state == "stopped", "drawn as stopped")
        await pilot.press("r")
        await wait_done(pilot, "extract", "extract resumed to done")


async def test_edit_key_saves_options_and_marks_done_stage_stale(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot)
        for name in ("extract", "filter"):
            await run_stage(pilot, name)
        await pilot.press("e")
        assert isinstance(app.screen, OptionsForm)
        field = app.screen.query_one("#opt-min_images", Input)
        field.value = "7"
        await pilot.press("ctrl+s")
        await wait_for(
            pilot, lambda: config(demo_ws)["stages"]["filter"]["min_images"] == 7, "option saved"
        )
        await wait_for(pilot, lambda: stage_state(app, "filter") == "stale", "filter stale")
        assert "min_images=7" in str(app.query_one("#stage-details").render())


async def test_run_all_key_runs_stages_in_order_until_one_cannot(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot)
        await pilot.press("a")
        await wait_for(pilot, lambda: stage_state(app, "split") == "done", "split done")
        assert all(stage_state(app, n) == "done" for n in ("disk", "extract", "filter"))
        assert list((demo_ws / "data/images_val").iterdir())


async def test_hosts_grid_draws_a_large_cluster_and_marks_trouble(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(200, 60)) as pilot:
        await opened(pilot)
        for event in cluster_events() + job_events():
            app.session.emit(event)
        grid = app.query_one(HostGrid)
        await pilot.press("2")
        await wait_for(pilot, lambda: len(grid.rows) >= 17 and not grid.dirty, "hosts drawn")
        assert grid.rows["node-07"].reachable is False and "refused" in grid.rows["node-07"].reason
        assert grid.rows["node-03"].straggler
        assert grid.rows["node-02"].failed
        assert grid.rows["node-12"].no_gpu
        assert len(grid.rows["node-05"].gpus) == 16
        screen_lines = [grid.render_line(y).text for y in range(grid.size.height)]
        assert any("node-15" in line for line in screen_lines), "16 hosts x 16 GPUs fit 200x60"
        assert any("no GPU" in line for line in screen_lines)


async def test_hosts_keys_sort_filter_and_compact(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(200, 60)) as pilot:
        await opened(pilot)
        for event in cluster_events(hosts=8, gpus=4):
            app.session.emit(event)
        grid = app.query_one(HostGrid)
        await pilot.press("2")
        await wait_for(pilot, lambda: len(grid.rows) >= 8 and not grid.dirty, "hosts drawn")
        await pilot.press("o")
        assert grid.sort_key == "rate"
        assert grid.order[0].name == "node-03"  # the slowest host first
        await pilot.press("o", "o")
        assert grid.sort_key == "state"
        assert grid.order[0].name == "node-07"  # unreachable first
        assert not grid.is_compact
        await pilot.press("c")
        assert grid.is_compact
        assert len(grid.lines) == 1 + len(grid.order)
        await pilot.press("slash")
        assert isinstance(app.screen, PromptScreen)
        await pilot.press(*"node-0", "1", "enter")
        assert [r.name for r in grid.order] == ["node-01"]


async def test_local_probe_shows_this_machine_without_gpu(demo_ws):
    app = ImgscaleApp(demo_ws)  # telemetry on: this machine is probed
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot)
        grid = app.query_one(HostGrid)
        await wait_for(pilot, lambda: any(r.sample for r in grid.rows.values()), "a host sample")
        row = next(iter(grid.rows.values()))
        assert row.reachable and row.no_gpu
        await pilot.press("q")


async def test_log_keys_follow_filter_and_level(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot)
        for event in log_events(200):
            app.session.emit(event)
        log = app.query_one(LogView)
        await pilot.press("3")
        await wait_for(
            pilot,
            lambda: (
                log.received == 200
                and log.max_scroll_y > 0
                and log.scroll_offset.y == log.max_scroll_y
            ),
            "log drawn, following its end",
        )
        await pilot.press("f")
        assert not log.follow
        before = log.scroll_offset.y
        app.session.emit(LogLine("node-01", "worker", 0, "a new line", time=0))
        await wait_for(
            pilot, lambda: log.received == 201 and log.max_scroll_y == before + 1, "new line kept"
        )
        assert log.scroll_offset.y == before  # paused: the view stays put
        await pilot.press("v", "v")
        assert log.min_level == "warning"
        # exactly the sample's 12 warnings and 1 error, in order (the new line is info)
        loud = [e for e in log_events(200) if e.level != "info"]
        assert [line.level for line in loud].count("warning") == 12
        assert list(log.shown) == loud
        await pilot.press("slash")
        await pilot.press(*"host:node-02", "enter")
        assert [line.text for line in log.shown] == [e.text for e in loud if e.host == "node-02"]
        assert len(log.shown) == 3
        await pilot.press("f")
        assert log.follow
        await pilot.press("g")
        assert not log.follow and log.scroll_offset.y == 0
        await pilot.press("G")
        assert log.follow


async def test_launch_key_shows_plan_with_batches_and_findings(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await opened(pilot)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "launch confirmation")
        body = str(app.screen.query_one("#dialog-body Static").render())
        assert "per GPU" in body and "global" in body and "worker" in body
        assert "no .rec files" in body  # the pre-flight finding before the data is prepared
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmScreen)


async def test_benchmark_and_test_io_keys_plan_their_modes(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await opened(pilot)
        for key, flag in (("b", "--benchmark"), ("i", "--test-io")):
            await pilot.press(key)
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), f"{flag} plan")
            assert flag in str(app.screen.query_one("#dialog-body Static").render())
            await pilot.press("escape")


async def test_mirror_and_nthreads_keys_change_the_next_launch(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await opened(pilot)
        status = app.query_one(StatusBar)
        await pilot.press("m")
        await wait_for(pilot, lambda: status.mirror, "mirror shown in the header")
        assert config(demo_ws)["train"]["mirror"] is True
        assert status.has_class("-mirror") and "MIRROR on" in str(status.render())
        await pilot.press("n")
        assert isinstance(app.screen, PromptScreen)
        app.screen.query_one(Input).value = "3"
        await pilot.press("enter")
        await wait_for(pilot, lambda: status.nthreads == 3, "nthreads shown")
        assert config(demo_ws)["train"]["data_nthreads"] == 3
        plan = await app.session.plan_launch("train")
        assert plan.mirror and plan.data_nthreads == 3 and "3" in plan.command


async def test_bad_nthreads_is_one_clear_error(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await opened(pilot)
        await pilot.press("n")
        app.screen.query_one(Input).value = "many"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "data_nthreads" in app.last_result, "error shown")
        assert "not a valid int" in app.last_result and app.is_running


async def test_training_form_key_saves_options(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await opened(pilot)
        await pilot.press("T")
        assert isinstance(app.screen, OptionsForm)
        app.screen.query_one("#opt-batch_size", Input).value = "16"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: config(demo_ws)["train"]["batch_size"] == 16, "batch saved")


async def test_doctor_key_explains_what_it_needs(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await opened(pilot)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "doctor dialog")
        assert "unknown" in app.screen.title_text
        await pilot.press("enter")


async def test_stop_relaunch_kill_keys_confirm_or_explain(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await opened(pilot)
        await pilot.press("t")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(pilot, lambda: "no job" in app.last_result, "no job to stop")
        await pilot.press("R")
        assert isinstance(app.screen, ConfirmScreen)  # relaunching asks first, as t and K do
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmScreen) and "relaunch" not in app.last_result
        await pilot.press("R", "y")
        await wait_for(pilot, lambda: "relaunch" in app.last_result, "no job to relaunch")
        await pilot.press("K")
        assert isinstance(app.screen, ConfirmScreen) and app.screen.danger
        await pilot.press("n")


async def test_actions_pane_runs_the_chosen_action(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await opened(pilot)
        await pilot.press("4")
        options = app.query_one("#action-list")
        while (
            options.highlighted is None
            or options.get_option_at_index(options.highlighted).id != "toggle_mirror"
        ):
            await pilot.press("down")
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: app.query_one(StatusBar).mirror, "mirror toggled from the list"
        )


async def test_command_palette_offers_console_actions(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await opened(pilot)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "palette")
        await pilot.press(*"mirror")
        await wait_for(
            pilot,
            lambda: (
                "MIRROR"
                in str(app.screen.query("CommandList").first().get_option_at_index(0).prompt)
                if app.screen.query("CommandList")
                and app.screen.query("CommandList").first().option_count
                else False
            ),
            "mirror command listed",
        )
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: app.query_one(StatusBar).mirror, "mirror toggled from the palette"
        )


async def test_telemetry_batches_keep_only_the_newest_sample_per_source(demo_ws):
    seen: list = []
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(100, 30), message_hook=seen.append) as pilot:
        await opened(pilot)
        events = cluster_events(hosts=2, gpus=2, rounds=5)
        for event in events:
            app.session.emit(event)
        grid = app.query_one(HostGrid)
        await wait_for(
            pilot,
            lambda: "node-01" in grid.rows and len(grid.rows["node-01"].gpus) == 2,
            "samples in",
        )
        batches = [m for m in seen if isinstance(m, Telemetry)]
        assert sum(len(b.samples) for b in batches) < len(events)
        assert grid.rows["node-01"].gpus[1].time == max(
            e.time for e in events if getattr(e, "index", None) == 1
        )


async def test_one_host_failure_and_a_bad_event_never_exit(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot)
        for event in job_events():
            app.session.emit(event)
        await wait_for(pilot, lambda: app.query_one(StatusBar).job == "job-1", "job shown")
        assert app.is_running
        app.post_message(
            LogBatch([LogLine("node-09", "worker", None, "line with [odd] markup", level="error")])
        )
        await wait_for(pilot, lambda: app.query_one(LogView).received == 1, "odd line kept")


async def test_quit_key_closes_the_session(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot)
        session = app.session
        await pilot.press("q")
    assert session.closed


async def test_console_keys_wait_while_a_dialog_is_open_and_events_still_land(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot)
        await pilot.press("question_mark")
        await pilot.press("2", "l", "m")  # ignored under the help dialog
        assert isinstance(app.screen, HelpScreen)
        for event in cluster_events(hosts=2, gpus=1) + log_events(5):
            app.session.emit(event)
        await wait_for(pilot, lambda: app.log_view.received == 5, "events drawn under the dialog")
        await pilot.press("escape")
        assert app.active_pane == "stages"
        assert not app.status.mirror


async def test_scaling_key_opens_the_scaling_screen_and_console_keys_wait_there(demo_ws):
    from tui.screens.scaling import ScalingScreen

    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await opened(pilot)
        await pilot.press("S")
        await wait_for(pilot, lambda: isinstance(app.screen, ScalingScreen), "scaling screen")
        await pilot.press("2")  # the console's pane key waits while another screen is shown
        assert isinstance(app.screen, ScalingScreen)
        await pilot.press("escape")
        await wait_for(
            pilot, lambda: not isinstance(app.screen, ScalingScreen), "back to the console"
        )
        await pilot.press("2")
        assert app.active_pane == "hosts"


async def test_hosts_option_probes_the_file_and_an_unreachable_host_shows_its_reason(
    demo_ws, tmp_path
):
    hosts = tmp_path / "hosts"
    hosts.write_text("# nothing listens on port 1 of this machine\n127.0.0.1:1\n")
    app = ImgscaleApp(demo_ws, hosts_file=hosts)  # real probes over SSH
    async with app.run_test(size=(120, 40)) as pilot:
        await opened(pilot)
        assert config(demo_ws)["hosts"] == str(hosts)
        await pilot.press("2")
        grid = app.grid
        await wait_for(
            pilot,
            lambda: "127.0.0.1:1" in grid.rows and grid.rows["127.0.0.1:1"].reachable is False,
            "host reported unreachable",
        )
        assert grid.rows["127.0.0.1:1"].reason
        assert app.is_running
        await pilot.press("q")


async def test_a_job_seen_running_then_finished_raises_a_notice_and_the_bell(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    rings: list[str] = []
    app.bell = lambda: rings.append("bell")  # type: ignore[method-assign]
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await opened(pilot)
        app.session.emit(JobState("old-1", "done", message="finished long ago"))
        app.session.emit(JobState("job-7", "running"))
        app.session.emit(JobState("job-7", "done", message="every process exited with status 0"))
        app.session.emit(Alert("job-7", "stalled", "no progress for 60 s"))
        await wait_for(pilot, lambda: len(rings) == 2, "two rings")
        notices = [n.message for n in app._notifications]
        assert any("job-7 done" in n for n in notices), notices
        assert any("job-7 stalled" in n for n in notices), notices
        assert not any("old-1" in n for n in notices), notices
