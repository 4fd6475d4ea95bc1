"""How the console's Session reaches the cluster: telemetry, jobs (launch, re-attach, stop) and leftovers.

Thin glue over engine.cluster (probes, launcher, kill) with the workspace's hosts file and the
command line engine.api.plan builds from its training options. Every call takes the session's
``HostPool``, so one console holds one connection per host.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from engine import workspace as wsmod
from engine.api.plan import (
    data_counts,
    engine_of,
    host_specs,
    job_env,
    model_prefix,
    servers_of,
    train_command,
    workers_of,
)
from engine.cluster.hostpool import HostPool
from engine.cluster.probes.grid import ProbeSet
from engine.cluster.process.alerts import AlertOptions
from engine.cluster.process.jobevents import ClusterJob
from engine.cluster.process.kill import kill_everywhere
from engine.cluster.slurm.job import watch_allocation
from engine.errors import UserError
from engine.events import (
    EpochSummary,
    Event,
    Failure,
    JobState,
    LogLine,
    Throughput,
    TrainProgress,
)
from engine.train.launch import launch as launcher
from engine.train.launch.launch import LaunchSpec
from engine.train.logparse import LogParser
from engine.train.options import epoch_size
from engine.train.progress import TrainTracker

Emit = Callable[[Event], None]
PROBE_INTERVAL_S = 1.0


async def watch_hosts(ws: wsmod.Workspace, emit: Emit, pool: HostPool | None = None) -> None:
    """Probe every host about once a second until cancelled (a SLURM job's allocated nodes)."""
    if ws.launcher == "slurm":
        await watch_allocation(lambda: ws.state.get("job", {}).get("id"), emit, PROBE_INTERVAL_S)
        return
    hosts = host_specs(ws)
    probed = hosts if pool is None else pool.share(hosts)
    probe_set = ProbeSet(probed, emit, interval=PROBE_INTERVAL_S)
    await probe_set.start()
    try:
        await asyncio.Event().wait()  # until the session cancels this task
    finally:
        await probe_set.stop()


class ConsoleJob:
    """A launched job as the console sees it: its events plus throughput and epochs parsed from its logs."""

    def __init__(
        self,
        job: ClusterJob,
        mode: str,
        batch_size: int | None = None,
        tracker: TrainTracker | None = None,
    ) -> None:
        self.job = job
        self.mode = mode
        self.batch_size = batch_size
        self.parsers: dict[tuple[str, int | None], LogParser] = {}
        self.tracker = tracker  # a training job's progress, else None
        self.early: list[Event] = []  # events from before the job's stream was subscribed

    @property
    def id(self) -> str:
        return self.job.job_id

    @property
    def active(self) -> bool:
        return self.job.status().state in ("starting", "running", "stopping", "relaunching")

    async def events(self) -> AsyncIterator[Event]:
        """The job's events with what its workers' lines say (rates, epochs, progress), in order.

        Events the job emitted while re-attaching (kept in ``early``) come first; the job's own
        stream takes over from the moment it is subscribed, so no event is lost or doubled.
        """
        stream = self.job.events()
        first = await stream.__anext__()  # subscribed: from here on the stream has every event
        self.job.sink = None
        for event in [*self.early, first]:
            for out in self._with_parsed(event):
                yield out
        self.early = []
        async for event in stream:
            for out in self._with_parsed(event):
                yield out

    def _with_parsed(self, event: Event) -> list[Event]:
        found = [event]
        if isinstance(event, LogLine) and event.role in ("worker", "local"):
            for parsed in self._parser(event).feed(event.text, time=event.time):
                found.append(parsed)
                progress = self._progress(parsed)
                if progress is not None:
                    found.append(progress)
        return found

    def _progress(self, parsed: Event) -> TrainProgress | None:
        if self.tracker is None or not isinstance(parsed, (Throughput, EpochSummary)):
            return None
        return self.tracker.add(parsed)

    def _parser(self, line: LogLine) -> LogParser:
        key = (line.host, line.rank)
        if key not in self.parsers:
            self.parsers[key] = LogParser(line.host, line.rank, self.id, self.batch_size)
        return self.parsers[key]

    async def stop(self) -> JobState:
        return await self.job.stop()

    async def relaunch(self) -> JobState:
        return await self.job.relaunch()

    async def detach(self) -> None:
        """Stop watching; the processes keep running on their hosts."""
        await self.job.close()


def launch_spec(ws: wsmod.Workspace, mode: str) -> LaunchSpec:
    opts = ws.train_options()
    launcher_name = ws.launcher
    hosts_file = str(ws.hosts_file) if launcher_name == "ssh" and ws.hosts_file else None
    # On this machine alone the workspace holds the job's logs and pid records too; under SLURM
    # it is where the login node and the nodes share them.
    local_only: dict[str, Any] = {} if hosts_file else {"run_root": str(ws.path / "runs")}
    if launcher_name == "slurm":
        local_only["slurm"] = ws.slurm_options()
    return LaunchSpec(
        command=train_command(ws, mode),
        num_workers=workers_of(ws),
        num_servers=servers_of(ws),
        hosts_file=hosts_file,
        launcher=launcher_name,
        env=job_env(ws),
        cwd=str(ws.path),
        resume_prefix=str(model_prefix(ws)) if mode == "train" else None,
        max_restarts=opts.job.max_restarts,
        engine=engine_of(ws).name,
        # the console's jobs always alert (stragglers ring the console) even without [alerts]
        alerts=ws.alert_options() or {"straggler_ratio": AlertOptions().straggler_ratio},
        **local_only,
    )


async def launch(ws: wsmod.Workspace, mode: str, pool: HostPool | None = None) -> ConsoleJob:
    """Start the job detached on the workspace's hosts; the workspace remembers it for re-attaching."""
    if mode == "train":
        model_prefix(ws).parent.mkdir(parents=True, exist_ok=True)
    job = await launcher.launch(launch_spec(ws, mode), pool=pool)
    ws.set_job_mode(job.job_id, mode)
    return console_job(ws, job, mode)


async def attach(
    ws: wsmod.Workspace, job_id: str, emit: Emit, pool: HostPool | None = None
) -> ConsoleJob | None:
    """Re-attach to the workspace's last job (running or not): its state, recent log lines and metrics."""
    early: list[
        Event
    ] = []  # a finished job's last lines come during attach(), before anyone listens
    try:
        job = launcher.open_job(job_id, sink=early.append, pool=pool)
    except UserError as exc:
        emit(Failure(source=f"job {job_id}", message=str(exc)))
        return None
    await job.attach()
    mode = ws.state.get("job_modes", {}).get(job_id, "train")
    console = console_job(ws, job, mode)
    console.early = early
    return console


def console_job(ws: wsmod.Workspace, job: ClusterJob, mode: str) -> ConsoleJob:
    """The console's view of a launched job; a training job also tracks its progress."""
    opts = ws.train_options()
    batch, workers = opts.train.batch_size, workers_of(ws)
    tracker = None
    if mode == "train":
        examples = data_counts(ws, ws.lists_dir)[1]
        batches = epoch_size(examples, batch, workers) if examples else None
        tracker = TrainTracker(job.job_id, opts.train.num_epochs, batches, batch, workers)
    return ConsoleJob(job, mode, batch, tracker)


async def kill_leftovers(emit: Emit, pool: HostPool | None = None) -> int:
    """End every process this tool launched on every host; returns how many were ended."""
    return await kill_everywhere(emit=emit, pool=pool)
