"""The Scaling screen: a sweep of images/s against GPUs, its progress, table and plot of speedup against ideal.

The sweep runs in the engine as a part of the console's session: the screen asks the app to start
or stop it (StartSweep, StopSweep, messages up) and the app's one bridge hands it the sweep's
events and its end (SweepEvent, SweepEnded, messages down).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Grid, Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, ProgressBar, Select, Static

from engine import api
from engine.errors import UserError
from engine.events import (
    Failure,
    JobState,
    LogLine,
    ScalingPoint,
    StageProgress,
    StageState,
    Throughput,
)
from tui.widgets.scaling_plot import ScalingPlot
from tui.widgets.scaling_table import ScalingTable

IDLE_HINT = "s or enter: start the sweep · x: stop · p: published/yours · tab: the form · esc: back"
PUBLISHED_CAPTION = (
    "Published: the tutorial's {machines} × {gpus} {gpu}, {gbits:g} Gbps, {kv}; predicted eff: our model, "
    "within {err:.1f} pts of every cell.  p: your sweep"
)


def published_caption(worst_error: float) -> str:
    return PUBLISHED_CAPTION.format(**api.published_cluster(), err=worst_error)


class ScalingScreen(Screen[None]):
    """A form, a progress line, the table and the plot; the sweep runs in the session (one at a time)."""

    CSS_PATH = Path(__file__).parent.parent / "scaling.tcss"
    HORIZONTAL_BREAKPOINTS = [
        (0, "-narrow"),
        (120, "-wide"),
    ]
    AUTO_FOCUS = "#scaling-table"
    BINDINGS: ClassVar = [
        Binding("s", "start", "Start sweep"),
        Binding("x", "stop", "Stop"),
        Binding("p", "toggle_published", "Published/yours"),
        Binding("escape", "back", "Back"),
    ]

    class SweepEvent(Message):
        """One engine event of the running sweep, handed down by the app's bridge."""

        def __init__(self, event: Any) -> None:
            super().__init__()
            self.event = event

    class SweepEnded(Message):
        """The sweep ended (api.SweepEnd): done with its points and files, stopped, or an error."""

        def __init__(self, end: api.SweepEnd) -> None:
            super().__init__()
            self.end = end

    class StartSweep(Message):
        """Up to the app, which owns the engine: start this sweep."""

        def __init__(self, config: api.SweepConfig, gbits: float | None) -> None:
            super().__init__()
            self.config = config
            self.gbits = gbits

    class StopSweep(Message):
        """Up to the app: stop the sweep (after the launch under way, if any)."""

    running: reactive[bool] = reactive(False)
    showing: reactive[str] = reactive("published")  # "published" or "sweep"

    def __init__(
        self,
        hosts_file: str | Path | None = None,
        out_dir: str | Path | None = None,
        networks: str | None = None,
        workers: str | None = None,
        kv_store: str = "dist_sync",
        gpus: int | None = None,
        **sweep_options: Any,
    ) -> None:
        """``gpus``: GPUs per host (0 or None: none found), which sizes the defaults; ``sweep_options``
        are further SweepConfig fields (image_shape, warmup, readings, command …)."""
        super().__init__()
        self.hosts_file = str(hosts_file or "")
        self.out_dir = Path(out_dir) if out_dir else None
        self.gpus = gpus
        sized = api.sweep_defaults(gpus)
        self.defaults = {
            "networks": networks or str(sized["networks"]),
            "workers": workers or str(sized["workers"]),
            "kv_store": kv_store,
        }
        if not networks and sized["image_shape"]:
            sweep_options.setdefault("image_shape", sized["image_shape"])
        self.sweep_options = sweep_options
        self.published, self.model_error = api.published_points()
        self.points: list[ScalingPoint] = []
        self.files: dict[str, Path] = {}
        self.config: api.SweepConfig | None = None
        self.outcome = ""  # the last run's end: done, failed, stopped, or an error
        self.in_launch = False  # the engine is launching a job (a stop waits for it to start)
        self.stop_requested = False
        self.leaving = False
        self.ended = asyncio.Event()  # set when the running sweep's end has arrived

    # ---- layout ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Grid(id="scaling-form"):
            yield Label("networks", classes="field-label")
            yield Input(
                self.defaults["networks"],
                id="scaling-networks",
                compact=True,
                placeholder="net:batch-per-GPU,…",
                tooltip="network:batch-per-GPU list",
            )
            yield Label("workers", classes="field-label")
            yield Input(
                self.defaults["workers"], id="scaling-workers", compact=True, placeholder="1,2,4"
            )
            yield Label("kv-store", classes="field-label")
            yield Select(
                [(k, k) for k in api.KV_STORES],
                value=self.defaults["kv_store"],
                allow_blank=False,
                id="scaling-kv",
                compact=True,
            )
            yield Label("hosts", classes="field-label")
            yield Input(
                self.hosts_file, id="scaling-hosts", compact=True, placeholder="none: this machine"
            )
            yield Label("Gbit/s", classes="field-label")
            yield Input(
                "",
                id="scaling-gbits",
                compact=True,
                placeholder="model: off",
                tooltip="network bandwidth for the model's predicted efficiency (empty: no prediction)",
            )
        with Horizontal(id="scaling-status"):
            yield Static(IDLE_HINT, id="scaling-progress")
            yield ProgressBar(id="scaling-bar", show_eta=False)
        yield Static("", id="scaling-detail", markup=False)
        yield Static("", id="scaling-caption", markup=False)
        with Container(id="scaling-body"):
            yield ScalingTable(id="scaling-table")
            yield ScalingPlot(id="scaling-plot")
        yield Footer()

    def on_mount(self) -> None:
        self.show_view()
        self.show_estimate()

    # ---- what is shown ---------------------------------------------------------------------
    def watch_showing(self) -> None:
        if self.is_mounted:
            self.show_view()

    def watch_running(self, running: bool) -> None:
        self.set_class(running, "-running")

    def show_view(self) -> None:
        """Fill the table, plot and caption with the published table or this sweep's points."""
        table, plot = self.query_one(ScalingTable), self.query_one(ScalingPlot)
        if self.showing == "published":
            table.points, plot.points = self.published, tuple(self.published)
            caption = published_caption(self.model_error)
        else:
            table.points, plot.points = self.points, tuple(self.points)
            plot.empty_text = (
                "no sweep yet — s starts one" if not self.running else "waiting for the first run…"
            )
            caption = self.sweep_caption()
        self.query_one("#scaling-caption", Static).update(caption)
        self.set_class(self.showing == "published", "-published")

    def sweep_caption(self) -> str:
        if self.config is None:
            return (
                "Your sweep"
                + ("" if self.points else ": none yet")
                + ".  p: the tutorial's published table"
            )
        where = f"hosts {self.config.hosts_file}" if self.config.hosts_file else "this machine"
        files = f"  Files: {self.files['csv'].parent}" if self.files else ""
        kv = self.config.kv_store
        return f"Your sweep: kv-store {kv} on {where}, synthetic data.{files}  p: published"

    def set_progress(self, text: str) -> None:
        self.query_one("#scaling-progress", Static).update(text)

    def set_detail(self, text: str) -> None:
        self.query_one("#scaling-detail", Static).update(text)
        self.set_class(bool(text), "-has-detail")  # an empty detail line takes no room

    # ---- actions -------------------------------------------------------------------------------
    def action_start(self) -> None:
        if self.running:
            self.notify("a sweep is already running; x stops it", severity="warning")
            return
        try:
            config, gbits = self.read_form()
        except UserError as exc:
            self.outcome = str(exc)
            self.set_progress(f"✗ {exc}")
            self.notify(str(exc), severity="error")
            return
        self.config, self.points, self.files = config, [], {}
        self.stop_requested, self.in_launch = False, False
        self.ended.clear()
        self.running = True
        self.add_class("-started")
        self.set_detail("")
        self.showing = "sweep"
        self.show_view()
        self.query_one(ProgressBar).update(total=len(config.runs), progress=0)
        self.set_progress(f"starting {len(config.runs)} runs, {self.estimate(config)} …")
        self.post_message(self.StartSweep(config, gbits))

    def estimate(self, config: api.SweepConfig) -> str:
        return f"about {api.human_duration(api.estimate_seconds(config, self.gpus))} in all"

    def show_estimate(self) -> None:
        """Before a sweep starts: how many runs the form asks for and about how long they take."""
        if self.running:
            return
        try:
            config, _ = self.read_form()
        except UserError as exc:
            self.set_progress(f"✗ {exc}")
            return
        self.set_progress(f"{len(config.runs)} runs, {self.estimate(config)} (s starts)")

    def on_input_changed(self) -> None:
        self.show_estimate()

    def read_form(self) -> tuple[api.SweepConfig, float | None]:
        """The form as a SweepConfig (a mistake raises UserError naming the field) and the model's Gbit/s."""
        value = {w.id: w.value for w in self.query(Input)}
        gbits_text = value["scaling-gbits"].strip()
        try:
            gbits = float(gbits_text) if gbits_text else None
        except ValueError:
            raise UserError(
                f"Gbit/s {gbits_text!r}: write the network bandwidth, e.g. 10"
            ) from None
        if gbits is not None and gbits <= 0:
            raise UserError(f"Gbit/s {gbits_text!r}: must be above 0")
        config = api.sweep_config(
            value["scaling-networks"],
            workers=value["scaling-workers"],
            hosts_file=value["scaling-hosts"].strip() or None,
            kv_store=str(self.query_one("#scaling-kv", Select).value),
            out_dir=self.out_dir,
            **self.sweep_options,
        )
        return config, gbits

    def action_stop(self) -> None:
        """Stop the sweep: the engine closes the sweep's event stream, which stops its job on every host."""
        if not self.running:
            self.notify("no sweep is running")
            return
        self.request_stop()

    def request_stop(self) -> None:
        """Stop now, or, while a job is being launched, as soon as it has started (the engine
        waits: interrupting it inside its launch would leave the processes it already started)."""
        self.stop_requested = True
        if self.in_launch:
            self.set_progress("stopping as soon as the job being launched has started …")
        else:
            self.set_progress("stopping the job on every host …")
        self.post_message(self.StopSweep())

    async def stop_sweep(self) -> None:
        """Stop a running sweep and return once its job has stopped everywhere."""
        if self.running:
            self.request_stop()
            await self.ended.wait()

    def action_toggle_published(self) -> None:
        self.showing = "sweep" if self.showing == "published" else "published"

    def action_back(self) -> None:
        """Leave. An installed screen keeps its sweep; a pushed one stops it first (it is removed)."""
        if self.running and not self.app.is_screen_installed(self):
            self.leaving = True  # dismissed once the job has stopped (see its SweepEnded)
            self.request_stop()
            return
        if self.running:
            self.app.notify("the scaling sweep goes on; come back to this screen to see it")
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_start()

    # ---- the sweep's events, from the app's bridge ---------------------------------------------
    def track_launch(self, event: Any) -> None:
        """Whether the engine is inside a launch: from a run's progress until its job reports."""
        self.in_launch = api.launching(event, self.in_launch)

    def on_scaling_screen_sweep_ended(self, message: SweepEnded) -> None:
        """The one place the sweep's end lands: finished, stopped, or an error shown as one line."""
        end = message.end
        self.running = False
        self.ended.set()
        if end.outcome == "error":
            self.outcome = end.message
            self.set_progress(f"✗ {end.message}")
            self.notify(end.message, severity="error", timeout=8)
        elif end.outcome == "stopped" or self.stop_requested:
            self.outcome = "stopped"
            self.set_progress("■ sweep stopped; the running job was stopped on every host")
        else:
            self.show_points(list(end.points), end.files)
        self.show_view()
        if self.leaving:
            self.dismiss(None)

    def on_scaling_screen_sweep_event(self, message: SweepEvent) -> None:
        event = message.event
        if self.running:
            self.track_launch(event)
        if isinstance(event, ScalingPoint):
            self.add_point(event)
        elif isinstance(event, StageProgress) and event.unit == "readings":  # the run's own
            self.set_detail(f"{event.part}: {event.done} of {event.total} Speedometer readings")
            if event.total:
                bar = self.query_one(ProgressBar)
                run = int(bar.progress or 0)
                bar.update(progress=run + min(0.99, event.done / event.total))
        elif isinstance(event, StageProgress) and event.total is not None:  # the sweep's runs
            self.query_one(ProgressBar).update(total=event.total, progress=event.done)
            self.set_progress(
                f"run {min(event.done + 1, event.total)} of {event.total}: {event.part} — {event.message}"
                if event.done < event.total
                else f"{event.done} of {event.total} runs measured"
            )
        elif isinstance(event, StageState):
            self.set_progress(f"{event.state}: {event.message}")
        elif isinstance(event, Throughput):
            self.set_detail(f"{event.host} worker {event.rank}: {event.samples_per_sec:,.1f} img/s")
        elif isinstance(event, LogLine):
            rank = "" if event.rank is None else f" {event.rank}"
            self.set_detail(f"{event.host} {event.role}{rank}: {event.text}")
        elif isinstance(event, JobState):
            self.set_detail(
                f"job {event.job}: {event.state}" + (f" — {event.message}" if event.message else "")
            )
        elif isinstance(event, Failure):
            self.set_detail(f"✗ {event.source}: {event.message}")

    def add_point(self, point: ScalingPoint) -> None:
        """A measured cell replaces any earlier figure for the same network and size."""
        self.points = [
            p for p in self.points if (p.network, p.gpus) != (point.network, point.gpus)
        ] + [point]
        self.points = api.add_speedup(self.points)
        if point.images_per_sec is None:
            self.set_detail(f"✗ {point.network} on {point.gpus}: {point.message}")
            self.notify(
                f"{point.network} on {point.gpus}: {point.message}", severity="error", timeout=8
            )
        self.showing = "sweep"
        self.show_view()

    def show_points(self, points: list[ScalingPoint], files: dict[str, Path]) -> None:
        """A finished sweep: its points (with predictions when asked) and the files written."""
        self.points, self.files = points, files
        measured = sum(1 for p in self.points if p.images_per_sec is not None)
        self.outcome = "done" if measured else "failed"
        where = f" · files in {self.out_dir}" if files else ""
        self.set_progress(
            f"{'✓' if measured else '✗'} {measured} of {len(self.points)} runs measured{where}"
        )
        self.show_view()
