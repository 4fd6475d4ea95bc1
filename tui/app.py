"""The imgscale console: panes for stages, hosts, log and actions over one engine-event bridge worker.

The bridge reads the session's one stream; the Scaling screen's sweep runs in the session too, and
its events reach that screen through the same bridge.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.containers import Container, Horizontal, Vertical
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, OptionList, Static, Tab, Tabs
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState

from engine import api
from engine.errors import UserError
from engine.events import Alert, ClusterRate, EpochSummary, Failure, JobState
from tui import messages as msg
from tui.keys import ACTIONS, GLOBAL_KEYS, bindings, help_keymap
from tui.screens.confirm import ConfirmScreen
from tui.screens.form import OptionsForm
from tui.screens.help import HelpScreen
from tui.screens.prompt import PromptScreen
from tui.screens.scaling import ScalingScreen
from tui.widgets.hostgrid import HostGrid
from tui.widgets.logview import LogView
from tui.widgets.panels import JobSummary, StageDetails, StatusBar
from tui.widgets.stagetable import StageTable

PANE_TITLES = (
    ("stages", "1 Stages"),
    ("hosts", "2 Hosts"),
    ("log", "3 Log"),
    ("actions", "4 Actions"),
)
# the widget of each pane that takes the keys
PANE_FOCUS: dict[str, type[Widget]] = {
    "stages": StageTable,
    "hosts": HostGrid,
    "log": LogView,
    "actions": OptionList,
}

JOB_ENDS = ("done", "failed", "stopped")  # a job's final states: a notice and the bell
BLOCKED_IN_DIALOGS = {k.action.split("(")[0] for k in GLOBAL_KEYS} - {"quit"}


class ImgscaleApp(App[str | None]):
    """One workspace's console; quitting leaves its jobs running."""

    TITLE = "imgscale"
    CSS_PATH = Path(__file__).with_name("app.tcss")
    # A terminal of at least 160x45 shows every pane at once (a dashboard); a smaller one, tabs.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (160, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (45, "-tall")]
    BINDINGS = bindings(GLOBAL_KEYS, tooltips=True)

    def __init__(
        self, workspace: str | Path, hosts_file: str | Path | None = None, telemetry: bool = True
    ) -> None:
        super().__init__()
        self.workspace_path = Path(workspace)
        self.hosts_file = hosts_file
        self.telemetry = telemetry
        self.session: api.Session | None = None
        self.train_options: dict[str, Any] = {}
        self.last_result = ""
        self.active_pane = "stages"
        self.job_states: dict[str, str] = {}  # the last state seen per job (for end notices)

    # ---- layout ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Tabs(*(Tab(title, id=f"tab-{pane}") for pane, title in PANE_TITLES), id="pane-tabs")
        with Container(id="panes"):
            with Vertical(id="stages", classes="pane -active"):
                yield StageTable(id="stage-table")
                yield StageDetails(id="stage-details")
            with Vertical(id="actions", classes="pane"):
                yield OptionList(
                    *(Option(f"{key:>2}  {text}", id=a) for a, key, text in ACTIONS),
                    id="action-list",
                )
                yield Static("", id="action-result", markup=False)
            with Vertical(id="hosts", classes="pane"):
                yield HostGrid(id="host-grid")
            with Vertical(id="log", classes="pane"):
                yield JobSummary(id="job-summary")
                yield LogView(id="log-view")
        with Horizontal(id="footer-row"):
            yield Footer()
            # always in view, however many keys the focused pane adds to the footer
            yield Static("? help  q quit", id="footer-keys")

    def on_mount(self) -> None:
        # The main screen's widgets, kept: app.query_one would search a dialog shown on top.
        self.status = self.query_one(StatusBar)
        self.stages = self.query_one(StageTable)
        self.details = self.query_one(StageDetails)
        self.grid = self.query_one(HostGrid)
        self.log_view = self.query_one(LogView)
        self.summary = self.query_one(JobSummary)
        self.result = self.query_one("#action-result", Static)
        self.status.workspace = self.workspace_path.name
        for pane, title in PANE_TITLES:
            self.query_one(f"#{pane}").border_title = title
        self.stages.focus()
        self.bridge()

    @property
    def main(self) -> Screen:
        """The console's own screen, under any dialog."""
        return self.screen_stack[0]

    @property
    def dashboard(self) -> bool:
        """Every pane at once (app.tcss: a screen both -wide and -tall), else tabs."""
        return self.main.has_class("-wide") and self.main.has_class("-tall")

    # ---- the one bridge from engine events to messages -----------------------------------
    @work(exclusive=True, group="engine", exit_on_error=False)
    async def bridge(self) -> None:
        """Open the workspace, draw its snapshot, then turn the engine's events into messages."""
        self.session = await api.open_workspace(
            self.workspace_path, self.hosts_file, self.telemetry
        )
        self.apply_snapshot()
        async for batch in self.session.batches():
            for message in msg.split_batch(batch):
                self.post_message(message)

    def apply_snapshot(self) -> None:
        assert self.session is not None
        snap = self.session.snapshot()
        self.train_options = dict(snap.train)
        status = self.status
        status.workspace, status.hosts = snap.name, len(snap.hosts)
        status.job, status.job_state = snap.job, snap.job_state
        status.mirror = bool(self.train_options.get("mirror"))
        status.nthreads = self.train_options.get("data_nthreads")
        self.stages.set_stages(snap.stages)
        self.grid.set_hosts(snap.hosts)
        self.grid.cause_of = self.session.host_cause
        self.show_stage_details()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place errors from engine calls land: a notice, never an exit."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        text = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
        if event.worker.group == "engine":
            text = f"engine stream stopped: {text}"
        self.notify(text, severity="error", timeout=8)
        self.last_result = text
        self.result.update(text)

    # ---- engine events → widgets -----------------------------------------------------------
    def on_telemetry(self, message: msg.Telemetry) -> None:
        self.grid.ingest(message.samples.values())

    def on_log_batch(self, message: msg.LogBatch) -> None:
        self.log_view.append(message.lines)

    def on_stage_event(self, message: msg.StageEvent) -> None:
        table = self.stages
        table.ingest(message.event)
        self.show_stage_details()

    def on_job_event(self, message: msg.JobEvent) -> None:
        event = message.event
        if isinstance(event, ClusterRate):
            self.summary.rate = event
            self.status.rate = event.images_per_sec
            self.grid.set_cluster(event.hosts, event.stragglers)
            if self.session is not None:  # a new job starts a new board
                self.grid.histories = self.session.rate_history()
        elif isinstance(event, EpochSummary):
            summary = self.summary
            summary.epochs = {**summary.epochs, (event.host, event.rank): event}
        elif isinstance(event, JobState):
            self.show_job_state(event)
            self.notice_job_end(event)
        elif isinstance(event, Alert) and event.kind not in ("finished", "failed"):
            self.ring(f"job {event.job} {event.kind}: {event.message}", "warning")
        elif isinstance(event, Failure):
            self.notify(
                f"{event.source}: {event.message}"
                + (f" — {event.diagnosis}" if event.diagnosis else ""),
                severity="error",
                timeout=10,
            )

    # ---- the Scaling screen's sweep: requests up to the session, its events down the bridge ----
    def on_scaling_screen_start_sweep(self, message: ScalingScreen.StartSweep) -> None:
        try:
            if self.session is None:
                raise UserError("the workspace is still opening; try again in a moment")
            self.session.start_sweep(message.config, message.gbits)
        except UserError as exc:
            self.on_scaling_end(msg.ScalingEnd(api.SweepEnd("error", str(exc))))

    def on_scaling_screen_stop_sweep(self) -> None:
        if self.session is not None:
            self.session.stop_sweep()

    def on_scaling_event(self, message: msg.ScalingEvent) -> None:
        screen = self.scaling_screen()
        if screen is not None:
            screen.post_message(ScalingScreen.SweepEvent(message.event))

    def on_scaling_end(self, message: msg.ScalingEnd) -> None:
        screen = self.scaling_screen()
        if screen is not None:
            screen.post_message(ScalingScreen.SweepEnded(message.end))

    def scaling_screen(self) -> ScalingScreen | None:
        """The Scaling screen the sweep belongs to: the installed one, else one shown on the stack."""
        if self.is_screen_installed("scaling"):
            screen = self.get_screen("scaling")
            return screen if isinstance(screen, ScalingScreen) else None
        shown = [s for s in self.screen_stack if isinstance(s, ScalingScreen)]
        return shown[-1] if shown else None

    def show_job_state(self, event: JobState) -> None:
        status = self.status
        status.job, status.job_state = event.job, event.state
        failed = {p.host for p in event.processes if p.state in ("failed", "lost")}
        self.grid.mark_failed(failed)

    def notice_job_end(self, event: JobState) -> None:
        """A job seen live that reaches a final state: a notice and the bell (once per end; an old
        job found finished when the console opens is not news). Finished/failed Alerts say the same."""
        before = self.job_states.get(event.job)
        self.job_states[event.job] = event.state
        if event.state in JOB_ENDS and before is not None and before not in JOB_ENDS:
            severity: SeverityLevel = "information" if event.state == "done" else "error"
            message = f" - {event.message}" if event.message else ""
            self.ring(f"job {event.job} {event.state}{message}", severity)

    def ring(self, text: str, severity: SeverityLevel) -> None:
        self.notify(text, severity=severity, timeout=10)
        self.bell()

    def show_stage_details(self) -> None:
        table = self.stages
        details = self.details
        view = table.selected
        details.view = view
        if view is not None and self.session is not None:
            details.options = self.session.stage_options(view.status.name)

    # ---- requests from widgets -------------------------------------------------------------
    def on_act(self, message: msg.Act) -> None:
        handler = getattr(self, f"request_{message.action}")
        handler(**message.args)

    def request_stage_start(self, stage: str) -> None:
        if stage == "train":
            self.action_launch("train")
        else:
            self.engine_call(lambda s: s.start_stage(stage), f"start {stage}")

    def request_stage_resume(self, stage: str) -> None:
        self.engine_call(lambda s: s.resume_stage(stage), f"resume {stage}")

    def request_stage_stop(self, stage: str) -> None:
        self.engine_call(lambda s: s.stop_stage(stage), f"stop {stage}")

    def request_stage_undo(self, stage: str) -> None:
        self.engine_call(lambda s: s.undo_stage(stage), f"undo {stage}")

    def request_stage_all(self, stage: str) -> None:
        self.engine_call(lambda s: s.start_all(), "run all stages")

    def request_stage_edit(self, stage: str) -> None:
        if self.session is None:
            return
        if stage == "train":
            self.action_edit_train()
            return
        fields = self.session.option_fields(stage)
        if not fields:
            self.notify(f"stage {stage} has no options")
            return

        def save(values: dict[str, str] | None) -> None:
            if values:
                self.engine_call(
                    lambda s: s.set_stage_options(stage, values),
                    f"save {stage} options",
                    then=lambda _: self.show_stage_details(),
                )

        self.push_screen(OptionsForm(f"{stage} options", fields), save)

    def request_prompt_host_filter(self) -> None:
        grid = self.grid
        self.push_screen(
            PromptScreen(
                "Filter hosts (name, down, failed, straggler; empty: all)", grid.name_filter
            ),
            lambda text: setattr(grid, "name_filter", text) if text is not None else None,
        )

    def request_prompt_log_filter(self) -> None:
        log = self.log_view
        self.push_screen(
            PromptScreen("Filter log: host:X rank:N role:R level:L and words", log.filter_text),
            lambda text: setattr(log, "filter_text", text) if text is not None else None,
        )

    @on(StageTable.Changed)
    def _stage_cursor(self) -> None:
        self.show_stage_details()

    # ---- engine calls: each a worker; errors go to on_worker_state_changed ---------------------
    def engine_call(
        self,
        call: Callable[[api.Session], Awaitable[Any]],
        what: str,
        then: Callable[[Any], None] | None = None,
    ) -> None:
        async def run() -> Any:
            if self.session is None:
                raise UserError("the workspace is still opening; try again in a moment")
            result = await call(self.session)
            if then is not None:
                then(result)
            return result

        self.run_worker(run(), name=what, group="actions", exit_on_error=False)

    # ---- app-wide actions --------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """While a dialog or another screen is open its keys rule; the console's own keys wait (quit excepted)."""
        return not (len(self.screen_stack) > 1 and action in BLOCKED_IN_DIALOGS)

    def action_pane(self, pane: str) -> None:
        """Show the pane (tabs) and give it the keys (focus)."""
        self.active_pane = pane
        for name, _ in PANE_TITLES:
            self.query_one(f"#{name}").set_class(name == pane, "-active")
        tabs = self.query_one(Tabs)
        if tabs.active != f"tab-{pane}":
            tabs.active = f"tab-{pane}"
        target = self.query_one(f"#{pane}").query(PANE_FOCUS[pane]).first()
        if not target.has_focus:
            target.focus()

    @on(Tabs.TabActivated, "#pane-tabs")
    def _tab_chosen(self, event: Tabs.TabActivated) -> None:
        if event.tab.id and event.tab.id.removeprefix("tab-") != self.active_pane:
            self.action_pane(event.tab.id.removeprefix("tab-"))

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        """Focus moved (tab key, click): the pane holding it becomes the active one."""
        for name, _ in PANE_TITLES:
            if self.active_pane != name and self.query_one(f"#{name}") in event.widget.ancestors:
                self.action_pane(name)
                return

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_keymap()))

    def action_launch(self, mode: str) -> None:
        def confirmed(plan: api.LaunchPlan, yes: bool | None) -> None:
            if yes:
                self.engine_call(
                    lambda s: s.launch(mode),
                    f"launch {mode}",
                    then=lambda job: self.notify(f"{mode} job {job} launched"),
                )

        async def show(session: api.Session) -> None:
            plan = await session.plan_launch(mode)
            self.push_screen(
                ConfirmScreen(f"Launch {mode}?", plan_text(plan), danger=plan.blocking),
                lambda yes: confirmed(plan, yes),
            )

        self.engine_call(show, f"plan {mode}")

    def confirm_then(
        self,
        dialog: ConfirmScreen,
        call: Callable[[api.Session], Awaitable[Any]],
        what: str,
        then: Callable[[Any], None] | None = None,
    ) -> None:
        """Ask first; make the engine call only on yes."""

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.engine_call(call, what, then)

        self.push_screen(dialog, confirmed)

    def action_stop_job(self) -> None:
        dialog = ConfirmScreen(
            "Stop the job?",
            "Stops every process of the job on every host.\n"
            "Checkpoints stay; relaunch (R) resumes from the newest.",
        )
        self.confirm_then(dialog, lambda s: s.stop_job(), "stop job")

    def action_relaunch(self) -> None:
        dialog = ConfirmScreen(
            "Relaunch the job?",
            "Stops what still runs of the job on every host and starts it again,\n"
            "resuming from its newest checkpoint.",
        )
        self.confirm_then(dialog, lambda s: s.relaunch(), "relaunch")

    def action_kill_leftovers(self) -> None:
        dialog = ConfirmScreen(
            "Kill leftovers?",
            "Ends every process imgscale launched, on every host,\nincluding a running job.",
            danger=True,
        )
        self.confirm_then(
            dialog,
            lambda s: s.kill_leftovers(),
            "kill leftovers",
            then=lambda n: self.show_result(f"killed {n} leftover process(es)"),
        )

    def action_toggle_mirror(self) -> None:
        value = not bool(self.train_options.get("mirror"))

        def done(_: Any) -> None:
            self.train_options["mirror"] = value
            self.status.mirror = value
            self.show_result(f"MXNET_BACKWARD_DO_MIRROR={int(value)} for the next launch")

        self.engine_call(
            lambda s: s.set_train_options({"mirror": value}), "toggle mirror", then=done
        )

    def action_data_nthreads(self) -> None:
        def chosen(text: str | None) -> None:
            if text is None:
                return

            def done(_: Any) -> None:
                self.train_options["data_nthreads"] = int(text)
                self.status.nthreads = int(text)
                self.show_result(f"--data-nthreads {text} for the next launch")

            self.engine_call(
                lambda s: s.set_train_options({"data_nthreads": text}), "data-nthreads", then=done
            )

        current = str(self.train_options.get("data_nthreads", ""))
        self.push_screen(
            PromptScreen("--data-nthreads (decoding threads per worker)", current), chosen
        )

    def action_edit_train(self) -> None:
        def save(values: dict[str, str] | None) -> None:
            if values:
                self.engine_call(
                    lambda s: s.set_train_options(values),
                    "save training options",
                    then=lambda _: self.apply_snapshot(),
                )

        if self.session is None:
            return
        self.push_screen(OptionsForm("training options", self.session.option_fields("train")), save)

    def action_doctor(self) -> None:
        async def show(session: api.Session) -> None:
            diagnosis = await session.doctor()
            text = diagnosis_text(diagnosis)
            self.show_result(text)
            self.push_screen(ConfirmScreen(f"Doctor: {diagnosis.verdict}", text, ask=False))

        self.engine_call(show, "doctor")

    def action_scaling(self) -> None:
        """The Scaling screen (issue 6), installed once so a running sweep outlives leaving it."""
        if not self.is_screen_installed("scaling"):
            hosts = self.session.hosts_file if self.session is not None else None
            gpus = self.session.gpus_per_host() if self.session is not None else None
            screen = ScalingScreen(
                hosts_file=hosts, out_dir=self.workspace_path / "scaling", gpus=gpus
            )
            self.install_screen(screen, "scaling")
        self.push_screen("scaling")

    def action_export(self) -> None:
        def done(paths: list[Path]) -> None:
            self.show_result("exported " + ", ".join(str(p) for p in paths))

        self.engine_call(lambda s: s.export(), "export", then=done)

    def show_result(self, text: str) -> None:
        self.last_result = text
        self.result.update(text)
        self.notify(text.splitlines()[0])

    @on(OptionList.OptionSelected, "#action-list")
    async def _action_chosen(self, event: OptionList.OptionSelected) -> None:
        await self.run_action(str(event.option.id))

    # ---- command palette ---------------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for key in GLOBAL_KEYS:
            if key.action not in ("help",):
                yield SystemCommand(key.text, f"key {key.shown_keys}", _runner(self, key.action))
        for stage in api.PREP_STAGES:
            yield SystemCommand(
                f"Start stage {stage}",
                "runs (or resumes) the stage",
                lambda stage=stage: self.request_stage_start(stage),
            )
        yield SystemCommand(
            "Run all stages",
            "every preparation stage that is not done",
            lambda: self.request_stage_all(""),
        )

    async def on_unmount(self) -> None:
        if self.session is not None and not self.session.closed:
            await self.session.close()

    async def action_quit(self) -> None:
        """Leave: stages stop (they resume later), jobs keep running on their hosts (and we say how to return)."""
        note = None
        if self.session is not None:
            job = self.session.running_job()
            note = reattach_note(job, self.workspace_path) if job else None
            await self.session.close()
        self.exit(note)


def _runner(app: App, action: str) -> Callable[[], Any]:
    return lambda: app.run_action(action)


def reattach_note(job: str, workspace: Path) -> str:
    """What quitting prints while a job runs: it keeps running, and how to come back to it."""
    return (
        f"job {job} keeps running on its hosts.\n"
        f"  re-attach: imgscale-tui {shlex.quote(str(workspace))}\n"
        f"  or follow its log: imgscale attach {job}"
    )


def plan_text(plan: api.LaunchPlan) -> str:
    """The launch confirmation: hosts, roles, batch sizes, settings and pre-flight findings."""
    roles = "\n".join(
        f"  {host:<20} {role:<10} {'' if rank is None else rank}" for host, role, rank in plan.roles
    )
    lines = [
        f"mode: {plan.mode}    hosts: {len(plan.hosts)}    processes: {len(plan.roles)}"
        + (f"    engine: {plan.engine_label}" if not plan.default_engine else ""),
        roles,
        (
            f"batch: {plan.batch_per_gpu:g} per GPU · {plan.batch_per_worker} per worker"
            f" ({f'{plan.gpus_per_worker} GPUs' if plan.gpus_per_worker else 'CPU'}) · {plan.global_batch} global"
        ),
        f"MXNET_BACKWARD_DO_MIRROR={int(plan.mirror)}    --data-nthreads {plan.data_nthreads}",
        "command: " + " ".join(plan.command),
        "",
        "pre-flight:" if plan.findings else "pre-flight: no findings",
        *(f"  • {finding}" for finding in plan.findings),
    ]
    return "\n".join(lines)


def diagnosis_text(d: api.Diagnosis) -> str:
    def cell(v: float | None) -> str:
        return "N/A" if v is None else f"{v:,.0f}"

    head = f"{'host':<20}{'test-io':>10}{'benchmark':>11}{'real':>10}   (images/s)"
    rows = [f"{h:<20}{cell(t):>10}{cell(b):>11}{cell(r):>10}" for h, t, b, r in d.rows]
    return "\n".join(
        [f"verdict: {d.verdict}", d.basis, head, *rows, "", *(f"• {a}" for a in d.advice)]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = api.OneLineParser(
        prog="imgscale-tui", description="The imgscale console over one workspace."
    )
    parser.add_argument(
        "workspace", nargs="?", default=".", help="workspace folder (holds workspace.toml)"
    )
    parser.add_argument("--hosts", metavar="FILE", help="hosts file (saved in the workspace)")
    parser.add_argument(
        "--demo",
        nargs="?",
        const="imgscale-demo",
        metavar="DIR",
        help="create a demo workspace in DIR (default ./imgscale-demo) and open it",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        workspace = Path(args.workspace)
        if args.demo is not None:
            workspace = Path(args.demo)
            if not (workspace / "workspace.toml").exists():
                print(f"creating the demo workspace in {workspace} …", file=sys.stderr)
                api.create_demo_workspace(workspace)
        api.check_workspace(workspace)
        if args.hosts:  # a bad hosts file is named here, not after the console has opened
            api.check_hosts_file(args.hosts)
    except UserError as exc:
        print(f"imgscale-tui: {exc}", file=sys.stderr)
        return 2
    note = ImgscaleApp(workspace, args.hosts).run()
    if note:
        print(note)
    return 0
