"""A workspace open in the console: its snapshot, its events, its stages (started, stopped, undone) and its job.

Everything the console does to a workspace goes through a ``Session``; it never touches asyncssh,
OpenCV or MXNet. Stages run through the one stage runner (engine.prep.runner) in threads and their events reach the session's asyncio queue through
``loop.call_soon_threadsafe``. Jobs run detached (engine.cluster.launcher), so closing a session never
stops one; opening the workspace again re-attaches to it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import workspace as wsmod
from engine.api import jobs
from engine.cluster.kill import kill_everywhere
from engine.api.plan import LaunchPlan, host_names, plan
from engine.prep import stages as stage_runner
from engine.prep.runner import StageRun, StageStopped
from engine.errors import UserError
from engine.cluster.export import GRID_FIELDS, grid_rows, write_both
from engine.cluster.faults import FINAL
from engine.options import FormField
from engine.train.doctor import Diagnosis, HostReading, Topology, diagnose, host_cause
from engine.train.progress import progress_text
from engine.train.rates import RateBoard
from engine.events import (
    Event,
    Failure,
    GpuSample,
    HostSample,
    HostState,
    JobState,
    StageState,
    Throughput,
    TrainProgress,
)

HISTORY_FIELDS = ("time", "host", "images_per_sec")
QUEUE_LIMIT = 100_000  # events waiting for the console; beyond that the oldest telemetry is dropped
TRAIN_STAGE_STATES = {
    "starting": "running",
    "running": "running",
    "relaunching": "running",
    "stopping": "running",
    "done": "done",
    "failed": "failed",
    "stopped": "stopped",
}


@dataclass
class _RunningStage:
    run: StageRun
    thread: threading.Thread
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class Session:
    """One open workspace: its config and state, its hosts, its stages and its job."""

    def __init__(self, ws: wsmod.Workspace, loop: asyncio.AbstractEventLoop) -> None:
        self.workspace = ws
        self.loop = loop
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.running: dict[str, _RunningStage] = {}
        self.hosts: tuple[str, ...] = ()
        self.job: Any = None  # engine.cluster.launcher job object when one is attached
        self.rates = RateBoard()
        self.progress: TrainProgress | None = None  # the training job's newest progress
        self.latest: dict[tuple[str, str, int | None], Event] = {}  # newest telemetry per source
        self.speeds: dict[str, dict[str, float]] = {}  # mode -> host -> images/s (for the doctor)
        self.tasks: list[asyncio.Task[Any]] = []
        self.closed = False

    # ---- open / close ------------------------------------------------------------------
    @classmethod
    async def open(
        cls, workspace: str | Path, hosts_file: str | Path | None = None, telemetry: bool = True
    ) -> Session:
        ws = await asyncio.to_thread(wsmod.load, workspace)
        if hosts_file is not None:
            ws.config["hosts"] = str(Path(hosts_file).expanduser().resolve())
            wsmod.save_config(ws.path, ws.config)
        session = cls(ws, asyncio.get_running_loop())
        session._recover_interrupted_stages()
        session.hosts = await asyncio.to_thread(host_names, ws)
        if telemetry:
            session._start_probes()
        await session._reattach()
        return session

    async def close(self) -> None:
        """Stop probes and stages; a running job is left running on its hosts."""
        self.closed = True
        for running in self.running.values():
            running.run.stop.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for running in list(self.running.values()):
            await asyncio.to_thread(running.thread.join, 10.0)
        if self.job is not None:
            await self.job.detach()

    # ---- reading -----------------------------------------------------------------------
    def snapshot(self) -> wsmod.WorkspaceSnapshot:
        return self.workspace.snapshot(self.hosts)

    async def events(self) -> AsyncIterator[Event]:
        """Every event of this session, in order, until it closes."""
        while not self.closed:
            yield await self.queue.get()

    async def batches(self, limit: int = 5000) -> AsyncIterator[list[Event]]:
        """Events grouped as they arrive: wait for one, then take whatever else is already queued."""
        while not self.closed:
            batch = [await self.queue.get()]
            while len(batch) < limit and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            yield batch

    def emit(self, event: Event) -> None:
        """Hand an event to the console (any thread). Engine sources and replays use this."""
        if threading.get_ident() == getattr(self.loop, "_thread_id", None):
            self._put(event)
        elif not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self._put, event)
            except RuntimeError:  # the loop closed meanwhile: nobody is listening any more
                pass

    def _put(self, event: Event) -> None:
        if self.queue.qsize() >= QUEUE_LIMIT and not isinstance(
            event, (StageState, JobState, Failure)
        ):
            return  # the console is far behind: dropping a sample is better than unbounded memory
        self.queue.put_nowait(event)
        if isinstance(event, (HostSample, GpuSample, HostState)):
            self.latest[(type(event).__name__, event.host, getattr(event, "index", None))] = event
        if isinstance(event, Throughput):
            rate = self.rates.add(event)
            if rate is not None:
                self.queue.put_nowait(rate)

    # ---- stages ------------------------------------------------------------------------
    async def start_stage(self, stage: str, undo: bool = False) -> None:
        """Run a preparation stage in a thread (resuming where it stopped); 'train' launches the job."""
        if stage == "train":
            await self.launch("train")
            return
        self._check_stage(stage)
        if stage in self.running:
            raise UserError(f"stage {stage} is already running; stop it first (x)")
        if undo and stage not in wsmod.UNDOABLE:
            raise UserError(f"stage {stage} cannot be undone (only {', '.join(wsmod.UNDOABLE)})")
        run = StageRun(self.workspace, stage, self.emit, undo=undo)
        run.begin()  # takes the workspace's lock: another run holding it is refused here
        running = _RunningStage(
            run, threading.Thread(target=self._stage_thread, args=(run,), daemon=True)
        )
        self.running[stage] = running
        self.emit(StageState(stage, "running", "undoing" if undo else ""))
        running.thread.start()

    async def start_all(self) -> None:
        """Run every preparation stage that is not done, in order, stopping at the first that fails."""
        if any(name in self.running for name in wsmod.STAGES):
            raise UserError("a stage is already running; wait for it or stop it (x)")
        self.tasks.append(asyncio.create_task(self._run_all()))

    async def _run_all(self) -> None:
        for status in self.workspace.stage_statuses():
            if status.name == "train" or status.state == "done":
                continue
            try:
                await self.start_stage(status.name)
            except UserError as exc:  # the workspace is busy (another run holds its lock)
                self.emit(Failure(source=f"stage {status.name}", message=str(exc)))
                return
            await self.wait_stage(status.name)
            if self.workspace.stage_record(status.name).get("state") != "done":
                return

    async def resume_stage(self, stage: str) -> None:
        await self.start_stage(stage)

    async def undo_stage(self, stage: str) -> None:
        await self.start_stage(stage, undo=True)

    async def stop_stage(self, stage: str) -> None:
        """Ask a running stage to stop at its next progress report; it resumes later from there."""
        if stage == "train":
            await self.stop_job()
            return
        running = self.running.get(stage)
        if running is None:
            raise UserError(f"stage {stage} is not running")
        running.run.stop.set()

    async def wait_stage(self, stage: str, timeout: float | None = None) -> None:
        """Until the stage's thread ended and its final state is saved."""
        running = self.running.get(stage)
        if running is not None:
            await asyncio.wait_for(running.finished.wait(), timeout)

    async def set_stage_options(self, stage: str, values: dict[str, Any]) -> None:
        await asyncio.to_thread(self.workspace.set_stage_options, stage, values)
        for status in self.workspace.stage_statuses():
            if status.state == "stale":
                self.emit(StageState(status.name, "stale", f"{stage} options changed"))

    async def set_train_options(self, values: dict[str, Any]) -> None:
        await asyncio.to_thread(self.workspace.set_train_options, values)

    def option_fields(self, stage: str) -> tuple[FormField, ...]:
        """The options form of a stage (or "train"): each field's type, value, default, bounds and help."""
        return self.workspace.option_fields(stage)

    def stage_options(self, stage: str) -> dict[str, Any]:
        return (
            self.workspace.train_options()
            if stage == "train"
            else self.workspace.stage_options(stage)
        )

    def _check_stage(self, stage: str) -> None:
        if stage not in wsmod.STAGES:
            raise UserError(f"unknown stage {stage!r}; stages: {', '.join(wsmod.STAGES)}")

    def _stage_thread(self, run: StageRun) -> None:
        try:
            run.run()  # saves the stage's end in the workspace
        except (StageStopped, UserError):
            pass  # the saved end says it
        except Exception:  # noqa: BLE001 - a bug in a stage must reach the console, not kill it
            self.emit(Failure(source=f"stage {run.stage}", message=run.outcome[1]))
        try:
            self.loop.call_soon_threadsafe(self._stage_finished, run)
        except RuntimeError:  # the console's loop is gone: nobody is waiting any more
            pass

    def _stage_finished(self, run: StageRun) -> None:
        running = self.running.pop(run.stage, None)
        self._put(StageState(run.stage, *run.outcome))
        if running is not None:
            running.finished.set()

    def _recover_interrupted_stages(self) -> None:
        """A stage marked running by a console that died is resumable, not running."""
        for status in self.workspace.stage_statuses():
            if status.state == "running" and status.name != "train":
                self.workspace.update_stage(
                    status.name, state="stopped", message="interrupted; start to resume"
                )

    # ---- jobs --------------------------------------------------------------------------
    async def plan_launch(self, mode: str = "train") -> LaunchPlan:
        return await asyncio.to_thread(plan, self.workspace, mode)

    async def launch(self, mode: str = "train") -> str:
        """Start a detached job (train | benchmark | test-io) on the workspace's hosts; returns its id."""
        if self.job is not None and getattr(self.job, "active", False):
            raise UserError(
                f"job {self.job.id} is still running; stop it (t) or kill leftovers (K) first"
            )
        self.rates = RateBoard(baseline=self._baseline(), speedup=mode == "train")
        if self.job is not None:
            await self.job.detach()
        self.job = await jobs.launch(self.workspace, mode)
        self.workspace.set_job(self.job.id, "starting")
        self._follow_job()
        return self.job.id

    def running_job(self) -> str | None:
        """The id of this workspace's job while it runs (closing the console leaves it running)."""
        if self.job is not None and self.job.active:
            return str(self.job.id)
        return None

    async def stop_job(self) -> None:
        if self.job is None:
            raise UserError("no job to stop")
        await self.job.stop()

    async def relaunch(self) -> None:
        """Relaunch the failed job (resuming from its newest checkpoint)."""
        if self.job is None:
            raise UserError("no job to relaunch; launch one with l")
        await self.job.relaunch()  # the same job: its stream, already followed, goes on

    async def kill_leftovers(self) -> int:
        """End every process this tool launched on every host; returns how many were ended."""
        return await kill_everywhere(emit=self.emit)

    def gpus_per_host(self) -> int | None:
        """The fewest GPUs any probed host has (0: a host without GPUs), None before any probe."""
        counts = [
            e.gpu_count
            for e in self.latest.values()
            if isinstance(e, HostSample) and e.gpu_count is not None
        ]
        return min(counts) if counts else None

    def topology(self) -> Topology:
        opts = self.workspace.train_options()
        return Topology(str(opts["kv_store"]), int(opts.get("workers") or len(self.hosts) or 1))

    async def doctor(self) -> Diagnosis:
        jobs = self.workspace.state.get("speed_jobs", {})
        return diagnose(self.speeds, self.topology(), jobs)

    def host_reading(
        self, host: str, rate: float | None, gpu_util: float | None, cpu: float | None
    ) -> HostReading:
        """A host's live figures with its last --test-io and --benchmark ones (for its cause)."""
        test_io = self.speeds.get("test-io", {}).get(host)
        bench = self.speeds.get("benchmark", {}).get(host)
        return HostReading(rate, gpu_util, cpu, test_io, bench)

    async def export(self) -> list[Path]:
        """The hosts grid and this job's throughput history as CSV and JSON under exports/."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = self.workspace.path / "exports"
        rates = dict(self.rates.host_rates())
        grid = grid_rows(self.latest.values(), rates)
        for row in grid:
            reading = self.host_reading(
                row["host"], row["images_per_sec"], row["gpu_util_mean"], row.get("cpu_percent")
            )
            row["cause"] = host_cause(reading, self.topology())
        history = [
            {"time": t, "host": host, "images_per_sec": value}
            for host, series in sorted(self.rates.history.items())
            for t, value in series.points
        ]
        return await asyncio.to_thread(
            lambda: [
                *write_both(folder / f"grid-{stamp}", grid, GRID_FIELDS),
                *write_both(folder / f"throughput-{stamp}", history, HISTORY_FIELDS),
            ]
        )

    def _follow_job(self) -> None:
        """One pump per job: a second one would hand the console every line twice."""
        self.tasks.append(asyncio.create_task(self._pump_job(self.job)))

    async def _pump_job(self, job: Any) -> None:
        async for event in job.events():
            if isinstance(event, JobState):
                self._job_changed(job, event)
            elif isinstance(event, TrainProgress):
                self.progress = event
            self._put(event)

    def _job_changed(self, job: Any, event: JobState) -> None:
        """Remember the job for re-attaching; a training job is the 'train' stage."""
        self.workspace.set_job(event.job, event.state)
        if event.state in FINAL:
            self._record_speed(job)
            summary = self.rates.summary(event.job, event.time)
            if (
                summary is not None
            ):  # the header and grid end on the run's figure, not its last reading
                self._put(summary)
        stage_state = TRAIN_STAGE_STATES.get(event.state)
        if getattr(job, "mode", "train") == "train" and stage_state:
            message = f"job {event.job}: {event.state}" + (
                f" - {event.message}" if event.message else ""
            )
            if self.progress is not None and self.progress.job == event.job:
                message += f" · {progress_text(self.progress)}"
            self.workspace.update_stage("train", state=stage_state, message=message)
            self._put(StageState("train", stage_state, message))

    def _record_speed(self, job: Any) -> None:
        """Each host's whole-run images/s of this job, kept for the doctor under the job's mode."""
        mode = getattr(job, "mode", "train")
        per_host = dict(self.rates.host_rates())
        if per_host:
            self.speeds[mode] = per_host
            with self.workspace.lock:
                self.workspace.state.setdefault("speeds", {})[mode] = per_host
                self.workspace.state.setdefault("speed_jobs", {})[mode] = job.id
                wsmod.save_state(self.workspace.path, self.workspace.state)

    def _baseline(self) -> float | None:
        """One worker's benchmark rate: the slowest host's whole-run figure over its workers."""
        bench = self.workspace.state.get("speeds", {}).get("benchmark", {})
        per_worker = min(bench.values()) / max(1, self._workers_per_host()) if bench else None
        return per_worker

    def _workers_per_host(self) -> int:
        workers = int(self.workspace.train_options().get("workers") or len(self.hosts) or 1)
        return max(1, -(-workers // max(1, len(self.hosts))))

    async def _reattach(self) -> None:
        self.speeds = {k: dict(v) for k, v in self.workspace.state.get("speeds", {}).items()}
        job_id = self.workspace.state.get("job", {}).get("id")
        if not job_id:
            return
        self.job = await jobs.attach(self.workspace, job_id, self.emit)
        if self.job is not None:
            self.rates = RateBoard(baseline=self._baseline(), speedup=self.job.mode == "train")
            self._follow_job()

    def _start_probes(self) -> None:
        self.tasks.append(asyncio.create_task(jobs.watch_hosts(self.workspace, self.emit)))


async def open_workspace(
    path: str | Path, hosts_file: str | Path | None = None, telemetry: bool = True
) -> Session:
    """Open a workspace folder and attach to its running job, if any."""
    return await Session.open(path, hosts_file, telemetry)


def check_workspace(path: str | Path) -> None:
    """Raise UserError (one line) if `path` is not a workspace the console can open."""
    wsmod.load(path)


def create_demo_workspace(path: str | Path, classes: int = 6, images: int = 40) -> Path:
    """A demo workspace: a generated ImageNet-shaped tarball, this machine as the only host, small thresholds."""
    return stage_runner.create_demo(Path(path), classes=classes, images=images)
