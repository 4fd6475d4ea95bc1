"""Watching one host of a job: one long-lived channel (detach.watch_command) reports the states of the
host's processes twice a second and follows their logs; after a drop it reconnects, and a host that
stays unreachable for ``lost_timeout_s`` is reported lost.

The watcher only reads and reports; what a state or a lost host means for the job is decided by its
listener (supervisor.Job, with the fault policy in faults.py).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from engine.cluster.hostpool import HostPool
from engine.cluster.process.detach import (
    DetachedProcess,
    RemoteStatus,
    env_files,
    parse_status,
    split_tagged,
    start_command,
    watch_command,
)
from engine.cluster.process.faults import LIVE
from engine.cluster.process.jobs import ProcRecord
from engine.cluster.remote_cmd import shell_path
from engine.cluster.transport.base import TransportError
from engine.events import HostState, LogLine, ProcessInfo

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


async def write_env(
    pool: HostPool, host: str, procs: list[DetachedProcess]
) -> tuple[str, str] | None:
    """Each process's environment into its 0600 PREFIX.env, sent on stdin (never in `ps`)."""
    command, script = env_files(procs)
    try:
        transport = await pool.get(host)
        result = await transport.run(command, input=script, timeout=START_TIMEOUT_S)
    except TransportError as exc:
        return host, exc.reason
    if result.exit_status != 0:
        return host, f"cannot write the environment files: {result.stderr.strip()[-300:]}"
    return None


async def start_hosts(
    pool: HostPool,
    by_host: dict[str, list[DetachedProcess]],
    watch: Callable[[dict[str, Start]], None],
) -> tuple[str, str] | None:
    """Write every host's environment files, then start its processes through the first channel
    ``watch`` opens to it; None when all started, else (host, why not) for one that did not."""
    written = await asyncio.gather(*(write_env(pool, h, procs) for h, procs in by_host.items()))
    failed = next((w for w in written if w is not None), None)
    if failed is not None:
        return failed
    loop = asyncio.get_running_loop()
    starts = {host: Start(procs, loop.create_future()) for host, procs in by_host.items()}
    watch(starts)
    results = await asyncio.gather(*(started_on(h, s) for h, s in starts.items()))
    return next((r for r in results if r is not None), None)


async def tail_of(pool: HostPool, host: str, path: str, lines: int) -> list[str] | None:
    """The last lines of a log on its host; None if the host or the file cannot be read."""
    try:
        transport = await pool.get(host)
        result = await transport.run(f"tail -n {int(lines)} -- {shell_path(path)}", timeout=10)
    except TransportError:
        return None
    return result.stdout.splitlines() if result.exit_status == 0 else None


async def close_stream(stream: object) -> None:
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


def after(info: ProcessInfo, status: RemoteStatus, stopping: bool) -> ProcessInfo:
    """A process's info once the status loop saw ``status``; while stopping, an end is a kill."""
    if status.state == "pending":
        return replace(info, state="starting")
    if status.state == "alive":
        return replace(info, state="running", pid=status.pid, pgid=status.pgid)
    code = status.exit_status if status.state == "exited" else None  # gone: no exit status
    bad = "killed" if stopping else "failed"
    state = "exited" if status.state == "exited" and code == 0 else bad
    return replace(info, state=state, exit_status=code, pid=status.pid, pgid=status.pgid)


class Processes:
    """What the watchers saw of a job's processes: each one's info and last log lines."""

    def __init__(self, records: Sequence[ProcRecord], last_lines: int) -> None:
        self.last_lines = last_lines
        self.last_output = time.monotonic()  # when the job last printed a line
        self.infos: list[ProcessInfo] = []
        self.tails: list[collections.deque[str]] = []
        self.reset(records)

    def reset(self, records: Sequence[ProcRecord]) -> None:
        self.infos = [ProcessInfo(p.host, p.role, p.rank, log_path=p.log_path) for p in records]
        self.tails = [collections.deque(maxlen=self.last_lines) for _ in self.infos]

    def log(self, index: int, text: str, job: str) -> LogLine:
        info = self.infos[index]
        self.tails[index].append(text)
        self.last_output = time.monotonic()
        return LogLine(info.host, info.role, info.rank, text, level=line_level(text), job=job)

    def update(self, index: int, status: RemoteStatus, stopping: bool) -> bool:
        """Take in a status; True when the process's info changed."""
        old, self.infos[index] = self.infos[index], after(self.infos[index], status, stopping)
        return self.infos[index] != old

    def mark(self, state: str, indices: Sequence[int] | None = None) -> None:
        """Processes still starting or running (of ``indices``, default all) are now ``state``."""
        for i in range(len(self.infos)) if indices is None else indices:
            if self.infos[i].state in LIVE:
                self.infos[i] = replace(self.infos[i], state=state)

    def any_running(self) -> bool:
        return any(i.state in LIVE for i in self.infos)

    def all_ended(self) -> bool:
        return all(i.state in ("exited", "killed", "failed") for i in self.infos)
