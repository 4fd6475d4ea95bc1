"""The hosts grid names each host's cause of slowness with advice, draws its img/s over the job, exports."""

from __future__ import annotations

import csv
import json

from tui_helpers import T0, cluster_events, opened, wait_for

from engine import api
from engine.events import Throughput
from tui.app import ImgscaleApp
from tui.widgets.hostgrid import HostGrid


async def test_cause_column_advice_history_and_export(demo_ws):
    app = ImgscaleApp(demo_ws, telemetry=False)
    async with app.run_test(size=(200, 60)) as pilot:
        await opened(pilot)
        app.session.workspace.set_train_options({"kv_store": "dist_sync", "workers": 4})
        app.grid.topology = app.session.topology()
        for event in cluster_events(hosts=4, gpus=2):  # node-03: GPUs at 30 % (a straggler)
            app.session.emit(event)
        for second in range(40):  # the job's whole history: slow at first, then fast
            for h in range(4):
                rate = 100.0 if second < 20 else 300.0
                app.session.emit(Throughput(f"node-{h:02d}", h, rate, epoch=0, time=T0 + second))
        grid = app.query_one(HostGrid)
        await pilot.press("2")
        await wait_for(
            pilot,
            lambda: (
                len(grid.histories.get("node-01", api.Series()).values()) >= 20 and not grid.dirty
            ),
            "history drawn",
        )
        grid.rebuild()
        lines = {
            row.name: grid.render_line(y).text
            for y, (row, part) in enumerate(grid.lines)
            if row and part == 0
        }
        assert "CAUSE" in grid.render_line(0).text
        assert grid.rows["node-03"].cause == "network"  # idle GPUs, idle CPU, dist_sync x 4
        assert "network" in lines["node-03"] and "add servers" in lines["node-03"]
        spark = grid.histories["node-01"].values()
        assert min(spark) == 100.0 and spark[-1] == 300.0  # the slow start is still there

        await pilot.press("E")
        await wait_for(pilot, lambda: "exported" in app.last_result, "export written")
        exports = demo_ws / "exports"
        grid_json = json.loads(next(exports.glob("grid-*.json")).read_text())
        assert {r["host"] for r in grid_json} >= {"node-00", "node-03"}
        history = list(csv.DictReader(next(exports.glob("throughput-*.csv")).open()))
        assert {r["host"] for r in history} >= {"node-00"} and float(
            history[0]["images_per_sec"]
        ) > 0
