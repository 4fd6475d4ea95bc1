"""The workspace's job as the session follows it: launched or re-attached, its events pumped into the
session's stream, its state kept in the workspace, a training job shown as the 'train' stage.

Jobs run detached (engine.train.launch.launch), so closing the session never stops one; opening the
workspace again re-attaches to it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from engine import workspace as wsmod
from engine.api import jobs
from engine.api.speeds import Speeds
from engine.api.stream import EventStream
from engine.cluster.hostpool import HostPool
from engine.cluster.process.faults import FINAL
from engine.errors import UserError
from engine.events import JobState, StageState, TrainProgress
from engine.train.progress import progress_text

Spawn = Callable[[Coroutine[Any, Any, None]], None]
TRAIN_STAGE_STATES = {
    "starting": "running",
    "running": "running",
    "relaunching": "running",
    "stopping": "running",
    "done": "done",
    "failed": "failed",
    "stopped": "stopped",
}


class JobFollower:
    """The one job the session follows (one pump per job: a second would show every line twice)."""

    def __init__(
        self,
        ws: wsmod.Workspace,
        stream: EventStream,
        speeds: Speeds,
        pool: HostPool | None,
        spawn: Spawn,
    ) -> None:
        self.workspace = ws
        self.stream = stream
        self.speeds = speeds
        self.pool = pool
        self.spawn = spawn
        self.job: jobs.ConsoleJob | None = None
        self.progress: TrainProgress | None = None  # the training job's newest progress

    async def launch(self, mode: str) -> str:
        """Start a detached job (train | benchmark | test-io) on the workspace's hosts; its id."""
        if self.job is not None and self.job.active:
            raise UserError(
                f"job {self.job.id} is still running; stop it (t) or kill leftovers (K) first"
            )
        self.speeds.new_job(mode)
        if self.job is not None:
            await self.job.detach()
        self.job = await jobs.launch(self.workspace, mode, self.pool)
        self.workspace.set_job(self.job.id, "starting")
        self.follow(self.job)
        return self.job.id

    async def reattach(self) -> None:
        """Follow the workspace's last job again (running or not), if it has one."""
        job_id = self.workspace.state.get("job", {}).get("id")
        if not job_id:
            return
        self.job = await jobs.attach(self.workspace, job_id, self.stream.emit, self.pool)
        if self.job is not None:
            self.speeds.new_job(self.job.mode)
            self.follow(self.job)

    def running_job(self) -> str | None:
        """The job's id while it runs (closing the console leaves it running)."""
        if self.job is not None and self.job.active:
            return str(self.job.id)
        return None

    async def stop(self) -> None:
        if self.job is None:
            raise UserError("no job to stop")
        await self.job.stop()

    async def relaunch(self) -> None:
        """Relaunch the failed job (resuming from its newest checkpoint)."""
        if self.job is None:
            raise UserError("no job to relaunch; launch one with l")
        await self.job.relaunch()  # the same job: its stream, already followed, goes on

    async def detach(self) -> None:
        """Stop following; the job keeps running on its hosts."""
        if self.job is not None:
            await self.job.detach()

    def follow(self, job: jobs.ConsoleJob) -> None:
        self.job = job
        self.spawn(self._pump(job))

    async def _pump(self, job: jobs.ConsoleJob) -> None:
        async for event in job.events():
            if isinstance(event, JobState):
                self._changed(job, event)
            elif isinstance(event, TrainProgress):
                self.progress = event
            self.stream.put(event)

    def _changed(self, job: jobs.ConsoleJob, event: JobState) -> None:
        """Remember the job for re-attaching; a training job is the 'train' stage."""
        self.workspace.set_job(event.job, event.state)
        if event.state in FINAL:
            # the header and grid end on the run's figure, not its last reading
            summary = self.speeds.job_ended(job.id, job.mode, event.time)
            if summary is not None:
                self.stream.put(summary)
        stage_state = TRAIN_STAGE_STATES.get(event.state)
        if job.mode == "train" and stage_state:
            message = f"job {event.job}: {event.state}" + (
                f" - {event.message}" if event.message else ""
            )
            if self.progress is not None and self.progress.job == event.job:
                message += f" · {progress_text(self.progress)}"
            self.workspace.update_stage("train", state=stage_state, message=message)
            self.stream.put(StageState("train", stage_state, message))
