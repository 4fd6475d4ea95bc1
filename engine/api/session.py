"""A workspace open in the console: a thin facade over parts that each have one job.

stream    EventStream: every event of the session on one asyncio queue, from any thread
stages    StageThreads: the preparation stages, each run in a thread
follower  JobFollower: the workspace's job, launched or re-attached, its events followed
figures   Speeds: the job's rate board and each mode's speeds (the doctor, the hosts' causes)
sweeps    SweepRunner: the Scaling screen's sweep, its events on the same stream
export    the hosts grid and throughput history as files

Everything the console does to a workspace goes through a ``Session``; it never touches asyncssh,
OpenCV or MXNet. The session holds one ``HostPool``: probes, pre-flight, launch, attach and kill
share one connection per host. Jobs run detached, so closing a session never stops one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

from engine import workspace as wsmod
from engine.api import jobs
from engine.api.export import export
from engine.api.follow import JobFollower
from engine.api.plan import LaunchPlan, host_specs, plan
from engine.api.speeds import Speeds
from engine.api.stages import RunningStage, StageThreads
from engine.api.stream import EventStream, Item
from engine.api.sweeps import SweepRunner
from engine.bench.scaling import SweepConfig
from engine.cluster.hostpool import HostPool
from engine.events import Event, StageState
from engine.options import FormField
from engine.train.doctor import Diagnosis, HostReading, Topology
from engine.train.rates import Series
from engine.workspace import stages as stage_runner
from engine.workspace.runner import StageStopped

__all__ = ["Session", "StageStopped", "check_workspace", "create_demo_workspace", "open_workspace"]


class Session:
    """One open workspace: its config and state, its hosts, its stages and its job."""

    def __init__(
        self,
        ws: wsmod.Workspace,
        loop: asyncio.AbstractEventLoop,
        hosts: tuple[str, ...] = (),
        pool: HostPool | None = None,
    ) -> None:
        self.workspace = ws
        self.hosts = hosts
        self.pool = pool  # the session's connections (None: each operation opens its own)
        self.tasks: list[asyncio.Task[Any]] = []
        self.figures = Speeds(ws, hosts)
        self.stream = EventStream(loop, self.figures.rate_of)
        self.stages = StageThreads(ws, self.stream, self._spawn)
        self.follower = JobFollower(ws, self.stream, self.figures, pool, self._spawn)
        self.sweeps = SweepRunner(self.stream)

    # ---- open / close ------------------------------------------------------------------
    @classmethod
    async def open(
        cls, workspace: str | Path, hosts_file: str | Path | None = None, telemetry: bool = True
    ) -> Session:
        ws = await asyncio.to_thread(wsmod.load, workspace)
        if hosts_file is not None:
            ws.set_hosts_file(Path(hosts_file).expanduser().resolve())
        specs = await asyncio.to_thread(host_specs, ws)
        pool = HostPool(specs)
        session = cls(ws, asyncio.get_running_loop(), tuple(s.name for s in specs), pool)
        session.stages.recover_interrupted()
        if telemetry:
            session._spawn(jobs.watch_hosts(ws, session.emit, pool))
        await session.follower.reattach()
        return session

    async def close(self) -> None:
        """Stop probes and stages; a running job is left running on its hosts."""
        self.stream.closed = True
        self.stages.stop_all()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.sweeps.close()
        await self.stages.join()
        await self.follower.detach()
        if self.pool is not None:
            await self.pool.close()

    @property
    def closed(self) -> bool:
        return self.stream.closed

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.create_task(work))

    # ---- reading -----------------------------------------------------------------------
    def snapshot(self) -> wsmod.WorkspaceSnapshot:
        return self.workspace.snapshot(self.hosts)

    @property
    def hosts_file(self) -> Path | None:
        """The workspace's hosts file (None: this machine only)."""
        return self.workspace.hosts_file

    def events(self) -> AsyncIterator[Item]:
        """Every event of this session, in order, until it closes."""
        return self.stream.events()

    def batches(self, limit: int = 5000) -> AsyncIterator[list[Item]]:
        """Events grouped as they arrive: wait for one, then take whatever else is already queued."""
        return self.stream.batches(limit)

    def emit(self, event: Event) -> None:
        """Hand an event to the console (any thread). Engine sources and replays use this."""
        self.stream.emit(event)

    # ---- stages ------------------------------------------------------------------------
    @property
    def running(self) -> dict[str, RunningStage]:
        """The preparation stages running now."""
        return self.stages.running

    async def start_stage(self, stage: str, undo: bool = False) -> None:
        """Run a preparation stage in a thread (resuming where it stopped); 'train' launches the job."""
        if stage == "train":
            await self.launch("train")
            return
        await self.stages.start(stage, undo)

    async def start_all(self) -> None:
        """Run every preparation stage that is not done, in order, stopping at the first that fails."""
        await self.stages.start_all()

    async def resume_stage(self, stage: str) -> None:
        await self.start_stage(stage)

    async def undo_stage(self, stage: str) -> None:
        await self.start_stage(stage, undo=True)

    async def stop_stage(self, stage: str) -> None:
        """Ask a running stage to stop at its next progress report; it resumes later from there."""
        if stage == "train":
            await self.stop_job()
            return
        self.stages.stop(stage)

    async def wait_stage(self, stage: str, timeout: float | None = None) -> None:
        """Until the stage's thread ended and its final state is saved."""
        await self.stages.wait(stage, timeout)

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
        return self.workspace.option_values(stage)

    # ---- the job -----------------------------------------------------------------------
    @property
    def job(self) -> jobs.ConsoleJob | None:
        """The job followed now (launched here or re-attached)."""
        return self.follower.job

    @job.setter
    def job(self, job: jobs.ConsoleJob | None) -> None:
        self.follower.job = job

    async def plan_launch(self, mode: str = "train") -> LaunchPlan:
        return await asyncio.to_thread(plan, self.workspace, mode, self.pool)

    async def launch(self, mode: str = "train") -> str:
        """Start a detached job (train | benchmark | test-io) on the workspace's hosts; returns its id."""
        return await self.follower.launch(mode)

    def running_job(self) -> str | None:
        """The id of this workspace's job while it runs (closing the console leaves it running)."""
        return self.follower.running_job()

    async def stop_job(self) -> None:
        await self.follower.stop()

    async def relaunch(self) -> None:
        """Relaunch the failed job (resuming from its newest checkpoint)."""
        await self.follower.relaunch()

    async def kill_leftovers(self) -> int:
        """End every process this tool launched on every host; returns how many were ended."""
        return await jobs.kill_leftovers(self.emit, self.pool)

    # ---- the scaling sweep -------------------------------------------------------------
    def start_sweep(self, config: SweepConfig, network_gbits: float | None = None) -> None:
        """Start the Scaling screen's sweep: SweepEvents, then one SweepEnd, come with the events."""
        self.sweeps.start(config, network_gbits)

    def stop_sweep(self) -> None:
        """Stop the sweep (after the launch under way, if any); its SweepEnd says when it stopped."""
        self.sweeps.stop()

    def sweep_running(self) -> bool:
        return self.sweeps.running

    # ---- speeds ------------------------------------------------------------------------
    @property
    def speeds(self) -> dict[str, dict[str, float]]:
        """Mode (test-io | benchmark | train) -> host -> images/s over that mode's last run."""
        return self.figures.by_mode

    def rate_history(self) -> dict[str, Series]:
        """Host -> images/s over the whole job being followed."""
        return self.figures.history()

    def gpus_per_host(self) -> int | None:
        """The fewest GPUs any probed host has (0: a host without GPUs), None before any probe."""
        return self.stream.gpus_per_host()

    def topology(self) -> Topology:
        return self.figures.topology()

    async def doctor(self) -> Diagnosis:
        return self.figures.diagnosis()

    def host_reading(
        self, host: str, rate: float | None, gpu_util: float | None, cpu: float | None
    ) -> HostReading:
        """A host's live figures with its last --test-io and --benchmark ones (for its cause)."""
        return self.figures.host_reading(host, rate, gpu_util, cpu)

    def host_cause(
        self, host: str, rate: float | None, gpu_util: float | None, cpu: float | None
    ) -> str:
        """input | compute | network | "" for one host's live figures (the grid's cause column)."""
        return self.figures.host_cause(host, rate, gpu_util, cpu)

    async def export(self) -> list[Path]:
        """The hosts grid and this job's throughput history as CSV and JSON under exports/."""
        return await export(
            self.workspace.path / "exports", self.stream.latest.values(), self.figures
        )


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
