"""The session's one event stream: events handed in from any thread, read in order by the console.

Stage threads, probes, jobs and the scaling sweep ``emit``; the console reads ``batches()`` (its one
bridge). The newest telemetry per source is kept (``latest``) for the grid's export and the GPU
count, and a throughput reading may add a derived event (the cluster rate) right after it. The
sweep's events travel wrapped (``SweepEvent``, then one ``SweepEnd``): they are the Scaling
screen's, not the workspace's job's or stages'.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.events import (
    Event,
    Failure,
    GpuSample,
    HostSample,
    HostState,
    JobState,
    ScalingPoint,
    StageState,
)

QUEUE_LIMIT = 100_000  # events waiting for the console; beyond that the oldest telemetry is dropped
TelemetryKey = tuple[str, str, int | None]


@dataclass(frozen=True)
class SweepEvent:
    """One event of the scaling sweep (its progress, its job's lines and states, its points)."""

    event: Event


@dataclass(frozen=True)
class SweepEnd:
    """The sweep ended: done (its points and files), stopped, or an error (one line)."""

    outcome: str  # done | stopped | error
    message: str = ""
    points: tuple[ScalingPoint, ...] = ()
    files: dict[str, Path] = field(default_factory=dict)


Item = Event | SweepEvent | SweepEnd  # what the console reads from the stream
KEPT = (StageState, JobState, Failure, SweepEvent, SweepEnd)  # never dropped when far behind


class EventStream:
    """An asyncio queue owned by one loop; ``emit`` is safe from any thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        derive: Callable[[Event], Event | None] = lambda event: None,
    ) -> None:
        self.loop = loop
        # Made on its loop (the session opens there): events from this thread go straight in.
        self.loop_thread = threading.get_ident()
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.latest: dict[TelemetryKey, Event] = {}  # newest telemetry per source
        self.derive = derive
        self.closed = False

    def emit(self, event: Item) -> None:
        """Hand an event to the console (any thread)."""
        if threading.get_ident() == self.loop_thread:
            self.put(event)
        elif not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.put, event)
            except RuntimeError:  # the loop closed meanwhile: nobody is listening any more
                pass

    def put(self, event: Item) -> None:
        """On the loop's thread: queue the event (and what it derives)."""
        if self.queue.qsize() >= QUEUE_LIMIT and not isinstance(event, KEPT):
            return  # the console is far behind: dropping a sample is better than unbounded memory
        self.queue.put_nowait(event)
        if isinstance(event, (HostSample, GpuSample, HostState)):
            self.latest[(type(event).__name__, event.host, getattr(event, "index", None))] = event
        derived = None if isinstance(event, (SweepEvent, SweepEnd)) else self.derive(event)
        if derived is not None:
            self.queue.put_nowait(derived)

    def gpus_per_host(self) -> int | None:
        """The fewest GPUs any probed host has (0: a host without GPUs), None before any probe."""
        counts = [
            e.gpu_count
            for e in self.latest.values()
            if isinstance(e, HostSample) and e.gpu_count is not None
        ]
        return min(counts) if counts else None

    async def events(self) -> AsyncIterator[Item]:
        """Every event, in order, until the stream closes."""
        while not self.closed:
            yield await self.queue.get()

    async def batches(self, limit: int = 5000) -> AsyncIterator[list[Item]]:
        """Events grouped as they arrive: wait for one, then take whatever else is already queued."""
        while not self.closed:
            batch = [await self.queue.get()]
            while len(batch) < limit and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            yield batch
