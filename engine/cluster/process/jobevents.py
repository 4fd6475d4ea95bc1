"""What every kind of job (SSH-supervised or SLURM) is: the ``ClusterJob`` protocol, and its events.

``ClusterJob`` is the face ``supervisor.Job`` and ``slurm_job.SlurmJob`` both declare, so
`imgscale launch/attach/kill` and the console hold either without knowing which. Events: the
launcher's caller may give a sink (the CLI's printer); the console subscribes with ``events()``,
which starts with the job's current state and ends when the job is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from engine.events import Event, EventSink, JobState


@runtime_checkable
class ClusterJob(Protocol):
    """A launched job, however it runs (SSH-supervised or SLURM)."""

    sink: EventSink | None  # the launcher's caller's sink; None once the console subscribed

    @property
    def job_id(self) -> str: ...

    def status(self) -> JobState:
        """A snapshot of the job's state and processes, any time."""
        ...

    def events(self) -> AsyncIterator[Event]:
        """Every event from now on (the current state first), until the job is closed."""
        ...

    async def start(self) -> None: ...

    async def attach(self) -> None:
        """Follow an already running (or finished) job."""
        ...

    async def stop(self, message: str = "stopped on request") -> JobState: ...

    async def relaunch(self, exclude: Sequence[str] = ()) -> JobState: ...

    async def wait(self) -> JobState: ...

    async def close(self) -> None:
        """Stop following; the processes keep running."""
        ...


class JobEvents:
    """Mixed into a job class that has ``status()``; call ``_init_events`` from its __init__."""

    sink: EventSink | None

    def _init_events(self, sink: EventSink | None) -> None:
        self.sink = sink
        self._queues: list[asyncio.Queue] = []
        self._events_ended = False

    def status(self) -> JobState:
        raise NotImplementedError

    async def events(self) -> AsyncIterator[Event]:
        """Every event from now on (the current state first), until the job is closed."""
        queue: asyncio.Queue = asyncio.Queue()
        self._queues.append(queue)
        queue.put_nowait(self.status())
        if self._events_ended:
            queue.put_nowait(None)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._queues.remove(queue)

    def emit(self, event: Event) -> None:
        if self.sink is not None:
            self.sink(event)
        for queue in self._queues:
            queue.put_nowait(event)

    def _end_events(self) -> None:
        """No more events: every listener's iteration ends."""
        self._events_ended = True
        for queue in self._queues:
            queue.put_nowait(None)
