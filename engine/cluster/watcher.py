"""Watching one host of a job: one long-lived channel (detach.watch_command) reports the states of the
host's processes twice a second and follows their logs; after a drop it reconnects, and a host that
stays unreachable for ``lost_timeout_s`` is reported lost.

The watcher only reads and reports; what a state or a lost host means for the job is decided by its
listener (supervisor.Job, with the fault policy in faults.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from engine.events import HostState

from .detach import (
    DetachedProcess,
    RemoteStatus,
    parse_status,
    start_command,
    split_tagged,
    watch_command,
)
from .hostpool import HostPool
from .transport import TransportError

START_TIMEOUT_S = 60.0  # a host that has not started its processes by then has failed
MAX_ERRORS = 20  # stderr lines kept to say why a channel ended


def line_level(text: str) -> str:
    """A rough level for the console's colouring; the text itself is never changed."""
    head = text[:200]
    if "Traceback" in head or "Error" in head or "error:" in head or "FATAL" in head:
        return "error"
    if "WARN" in head or "Warning" in head:
        return "warning"
    return "info"


class WatchListener(Protocol):
    """What a host watcher reports to (the job)."""

    def watching(self, attempt: int) -> bool:
        """Whether ``attempt`` is still the job's attempt and the job is not final."""
        ...

    def current(self, attempt: int) -> bool:
        """Whether ``attempt`` is still the job's attempt (its lines still count)."""
        ...

    def on_log(self, index: int, text: str) -> None: ...

    def on_status(self, index: int, status: RemoteStatus) -> None: ...

    def on_round(self) -> None:
        """A status round ended: time to evaluate the job."""
        ...

    def on_host(self, state: HostState) -> None: ...

    def on_lost(self, host: str, indices: Sequence[int], reason: str) -> None: ...


@dataclass
class Start:
    """Processes the first channel of an attempt starts; ``done`` gets None, or why they did not start."""

    processes: list[DetachedProcess]
    done: asyncio.Future


def settle(future: asyncio.Future, reason: str | None) -> None:
    if not future.done():
        future.set_result(reason)


async def started_on(host: str, start: Start) -> tuple[str, str] | None:
    """None once the host started its processes, else (host, why not)."""
    try:
        reason = await asyncio.wait_for(start.done, START_TIMEOUT_S)
    except TimeoutError:
        reason = f"no answer within {START_TIMEOUT_S:.0f} s"
    return None if reason is None else (host, reason)


async def close_stream(stream) -> None:
    closer = getattr(stream, "aclose", None)
    if closer is not None:
        try:
            await asyncio.shield(closer())
        except (TransportError, OSError, asyncio.CancelledError):
            pass  # the channel is gone already


@dataclass
class HostWatcher:
    """One host's processes of one attempt, followed until the attempt is over."""

    pool: HostPool
    host: str
    indices: list[int]  # the job's process indices on this host, in channel order
    prefixes: list[str]
    attempt: int
    listener: WatchListener
    poll_s: float = 0.5
    lost_timeout_s: float = 10.0
    tail: int | None = None  # follow logs from their last N lines (None: from the start)
    start: Start | None = None
    _lost_since: float | None = field(default=None, init=False)

    async def run(self) -> None:
        while self.listener.watching(self.attempt):
            reason = await self._channel()
            if self.start is not None and self._start_failed(reason):
                return
            if not self.listener.watching(self.attempt):
                return
            self.tail = 0  # after a reconnect follow only new lines
            if self._lost_for(reason) >= self.lost_timeout_s:
                self.listener.on_lost(self.host, self.indices, reason)
                return
            await asyncio.sleep(min(1.0, self.lost_timeout_s / 5))  # reconnect backoff

    def _command(self) -> str:
        command = watch_command(self.prefixes, self.poll_s, self.tail)
        if self.start is not None:  # the first channel of an attempt starts the processes too
            command = start_command(self.start.processes) + "\n" + command
        return command

    async def _channel(self) -> str:
        """Read one watch channel until it ends; returns why it ended."""
        errors: list[str] = []
        try:
            transport = await self.pool.get(self.host)
            stream = transport.stream(self._command())
            try:
                async for line in stream:
                    self._on_line(line.stream, line.text, errors)
            finally:  # a cancelled watcher must end its channel and the host's tails
                await close_stream(stream)
        except TransportError as exc:
            return exc.reason
        return "; ".join(e for e in errors if e != ".")[-300:] or "the watch channel closed"

    def _start_failed(self, reason: str) -> bool:
        """The channel ended: if it never said "started", the start failed."""
        start, self.start = self.start, None
        if start is not None and not start.done.done():
            settle(start.done, reason)
            return True
        return False

    def _lost_for(self, reason: str) -> float:
        if self._lost_since is None:
            self._lost_since = time.monotonic()
            self.listener.on_host(HostState(self.host, False, reason))
        return time.monotonic() - self._lost_since

    def _on_line(self, stream: str, text: str, errors: list[str]) -> None:
        if self._lost_since is not None:
            self._lost_since = None
            self.listener.on_host(HostState(self.host, True))
        if self.start is not None and text == "started":
            settle(self.start.done, None)
        elif stream == "stderr" and len(errors) < MAX_ERRORS and parse_status(text) is None:
            errors.append(text)
        if self.listener.current(self.attempt):
            self._report(stream, text)

    def _report(self, stream: str, text: str) -> None:
        if stream == "stderr":
            status = parse_status(text)
            if status is not None and status.index < len(self.indices):
                self.listener.on_status(self.indices[status.index], status)
            elif text == ".":
                self.listener.on_round()
            return
        tagged = split_tagged(text)
        if tagged is not None and tagged[0] < len(self.indices):
            self.listener.on_log(self.indices[tagged[0]], tagged[1])
