"""The session's one event stream: events handed in from any thread, read in order by the console.

Stage threads, probes and jobs ``emit``; the console reads ``batches()``. The newest telemetry per
source is kept (``latest``) for the grid's export and the GPU count, and a throughput reading may
add a derived event (the cluster rate) right after it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

from engine.events import Event, Failure, GpuSample, HostSample, HostState, JobState, StageState

QUEUE_LIMIT = 100_000  # events waiting for the console; beyond that the oldest telemetry is dropped
TelemetryKey = tuple[str, str, int | None]


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
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.latest: dict[TelemetryKey, Event] = {}  # newest telemetry per source
        self.derive = derive
        self.closed = False

    def emit(self, event: Event) -> None:
        """Hand an event to the console (any thread)."""
        if threading.get_ident() == self.loop_thread:
            self.put(event)
        elif not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.put, event)
            except RuntimeError:  # the loop closed meanwhile: nobody is listening any more
                pass

    def put(self, event: Event) -> None:
        """On the loop's thread: queue the event (and what it derives)."""
        if self.queue.qsize() >= QUEUE_LIMIT and not isinstance(
            event, (StageState, JobState, Failure)
        ):
            return  # the console is far behind: dropping a sample is better than unbounded memory
        self.queue.put_nowait(event)
        if isinstance(event, (HostSample, GpuSample, HostState)):
            self.latest[(type(event).__name__, event.host, getattr(event, "index", None))] = event
        derived = self.derive(event)
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

    async def events(self) -> AsyncIterator[Event]:
        """Every event, in order, until the stream closes."""
        while not self.closed:
            yield await self.queue.get()

    async def batches(self, limit: int = 5000) -> AsyncIterator[list[Event]]:
        """Events grouped as they arrive: wait for one, then take whatever else is already queued."""
        while not self.closed:
            batch = [await self.queue.get()]
            while len(batch) < limit and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            yield batch
