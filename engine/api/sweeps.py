"""The console's scaling sweep as a part of its session: one sweep at a time, its events on the
session's stream (so the console reads them through its one bridge), stopped safely.

A stop closes the sweep's event stream, which stops the running job on every host; a stop asked
for while a job is being launched waits until that job has started (interrupting the launch
itself would leave the processes it had already started).
"""

from __future__ import annotations

import asyncio
import contextlib

from engine.api.stream import EventStream, SweepEnd, SweepEvent
from engine.bench.scaling import SweepConfig
from engine.bench.sweep import Sweep
from engine.errors import UserError
from engine.events import Event, JobState, ScalingPoint, StageProgress


def launching(event: Event, now: bool) -> bool:
    """Whether the sweep is inside a launch after ``event``: from a run's progress until its job reports."""
    if isinstance(event, StageProgress) and event.unit == "readings":
        return False  # readings come from a running job
    if isinstance(event, StageProgress) and event.total is not None:  # the sweep's own: counted
        return event.done < event.total  # the next run is launched when the sweep reads on
    if isinstance(event, (JobState, ScalingPoint)):
        return False
    return now


class SweepRunner:
    """The running sweep (if any) and its stop."""

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self.task: asyncio.Task[None] | None = None
        self.reading: asyncio.Future[None] | None = None  # the task reading the sweep's events
        self.in_launch = False
        self.stop_requested = False

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self, config: SweepConfig, network_gbits: float | None = None) -> None:
        """Start measuring; the events and then one SweepEnd come on the stream."""
        if self.running:
            raise UserError("a sweep is already running; x stops it")
        self.in_launch, self.stop_requested, self.reading = False, False, None
        self.task = asyncio.create_task(self._run(Sweep(config, network_gbits)))

    def stop(self) -> None:
        """Stop now, or, while a job is being launched, as soon as it has started."""
        self.stop_requested = True
        if not self.in_launch and self.reading is not None:
            self.reading.cancel()

    async def close(self) -> None:
        """Stop the sweep and return once its job has stopped everywhere (the session closes)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self, sweep: Sweep) -> None:
        try:
            end = await self._measure(sweep)
        except UserError as exc:
            end = SweepEnd("error", str(exc))
        except Exception as exc:  # noqa: BLE001 - the sweep's fault is one line on the screen
            end = SweepEnd("error", f"{type(exc).__name__}: {exc}")
        self.stream.put(end)

    async def _measure(self, sweep: Sweep) -> SweepEnd:
        reading = self.reading = asyncio.ensure_future(self._read(sweep))
        try:
            await asyncio.shield(reading)
        except asyncio.CancelledError:
            if reading.done():  # stop() cancelled the reading: the job has stopped
                return SweepEnd("stopped", "the running job was stopped on every host")
            # This task itself was cancelled (the session closes): the reader finishes the stop.
            self.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(reading)
            raise
        if self.stop_requested:
            return SweepEnd("stopped", "the running job was stopped on every host")
        result = await sweep.finish(lambda event: self.stream.put(SweepEvent(event)))
        return SweepEnd("done", points=result.points, files=result.files)

    async def _read(self, sweep: Sweep) -> None:
        async with contextlib.aclosing(sweep.events()) as events:
            async for event in events:
                self.in_launch = launching(event, self.in_launch)
                self.stream.put(SweepEvent(event))
                if self.stop_requested and not self.in_launch:
                    break  # a stop asked for during the launch: the job has started, close now
