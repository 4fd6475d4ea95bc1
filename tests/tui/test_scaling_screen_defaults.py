"""The scaling screen on a machine without GPUs: small defaults and the sweep's duration before it starts."""

from __future__ import annotations

from textual.widgets import Input
from tui_helpers import opened, wait_for

from engine.events import HostSample
from tui.app import ImgscaleApp


async def test_scaling_screen_sizes_its_defaults_to_hosts_without_gpu_and_estimates(demo_ws):
    from tui.screens.scaling import ScalingScreen

    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await opened(pilot)
        app.session.emit(HostSample("localhost", cpu_percent=10.0, gpu_count=0))
        await wait_for(pilot, lambda: app.session.gpus_per_host() == 0, "the probe read")
        await pilot.press("S")
        await wait_for(pilot, lambda: isinstance(app.screen, ScalingScreen), "scaling screen")
        screen = app.screen
        assert screen.query_one("#scaling-networks", Input).value == "resnet-18:8"
        assert screen.sweep_options["image_shape"] == "3,32,32"
        progress = screen.query_one("#scaling-progress")
        await wait_for(pilot, lambda: "about" in str(progress.render()), "the estimate")
        assert "2 runs, about" in str(progress.render())
        screen.query_one("#scaling-workers", Input).value = "1,2,4"
        await wait_for(pilot, lambda: "3 runs, about" in str(progress.render()), "a new estimate")
