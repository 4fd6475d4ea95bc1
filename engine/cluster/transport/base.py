"""The one interface through which the engine reaches a host: this machine (subprocesses) or SSH.

Commands are shell command lines built by pure functions with ``shlex.quote`` (see remote_cmd.py),
so the same line runs the same way locally (``/bin/sh -c``) and over SSH (the login shell runs it).
Implementations: ``engine.cluster.transport.local.LocalTransport`` and ``engine.cluster.transport.ssh.SshTransport``.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class CommandResult:
    exit_status: int | None  # None when killed by a signal or the connection was lost
    stdout: str
    stderr: str
    signal: str | None = None


@dataclass(frozen=True)
class OutputLine:
    stream: str  # "stdout" | "stderr"
    text: str  # without the trailing newline


class TransportError(Exception):
    """The host could not be reached or the channel broke; ``reason`` is a short human phrase."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason


class CommandTimedOut(TransportError):
    """``run`` gave up waiting for a command (the host may be fine); the command was ended."""

    def __init__(self, host: str, seconds: float | None) -> None:
        super().__init__(host, f"command timed out after {seconds:g} s")
        self.seconds = seconds


class LineSplitter:
    """Bytes in, whole text lines out; a partial last line is kept until more data or ``flush``."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> list[str]:
        *lines, self._rest = (self._rest + data).split(b"\n")
        return [_decode(line) for line in lines]

    def flush(self) -> list[str]:
        rest, self._rest = self._rest, b""
        return [_decode(rest)] if rest else []


def _decode(line: bytes) -> str:
    # Tools print progress with \r; undecodable bytes must never break a log reader.
    return line.rstrip(b"\r").decode("utf-8", errors="replace")


_END = object()
CLOSE_WAIT_S = 5.0


class LineStream:
    """The output lines of one running command, as an async iterator, plus its exit status.

    After iteration ends, ``exit_status`` (None when ended by a signal or a lost connection) and
    ``signal`` say how the command ended. ``aclose()`` ends the command if it still runs.
    Implementations feed it with ``put_line``/``finish`` from their reader tasks.
    """

    def __init__(
        self,
        host: str,
        closer: Callable[[], Awaitable[None]] | None = None,
        signaller: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.host = host
        self._signaller = signaller
        self.exit_status: int | None = None
        self.signal: str | None = None
        self.error: TransportError | None = None
        self._queue: asyncio.Queue = asyncio.Queue()
        self._closer = closer
        self._finished = asyncio.Event()
        self._closed = False

    def put_line(self, stream: str, text: str) -> None:
        self._queue.put_nowait(OutputLine(stream, text))

    def finish(
        self,
        exit_status: int | None,
        signal: str | None = None,
        error: TransportError | None = None,
    ) -> None:
        if self._finished.is_set():
            return
        self.exit_status, self.signal, self.error = exit_status, signal, error
        self._finished.set()
        self._queue.put_nowait(_END)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def __aiter__(self) -> LineStream:
        return self

    async def __anext__(self) -> OutputLine:
        if self._closed:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END:
            self._closed = True
            if self.error is not None:
                raise self.error
            raise StopAsyncIteration
        return item

    async def wait(self) -> int | None:
        """Wait for the command to end (lines keep queueing); return its exit status."""
        await self._finished.wait()
        return self.exit_status

    async def write(self, text: str) -> None:
        """Send text to the command's stdin (streams opened with ``stdin=True`` only)."""
        writer = getattr(self, "_writer", None)
        if writer is None:
            raise TransportError(self.host, "this stream's stdin is closed")
        await writer(text)

    async def send_signal(self, name: str) -> None:
        """Send a signal ("TERM", "INT", "KILL" …) to the command's whole process group."""
        if not self._finished.is_set() and self._signaller is not None:
            await self._signaller(name)

    async def aclose(self) -> None:
        """End the command if it still runs and wait (briefly) until its end is recorded."""
        self._closed = True
        if not self._finished.is_set() and self._closer is not None:
            await self._closer()
            try:
                await asyncio.wait_for(self._finished.wait(), CLOSE_WAIT_S)
            except TimeoutError:
                pass  # the reader task finishes it later; the caller need not wait for that


class Transport(abc.ABC):
    """One host. Safe to use from many tasks at once (channels are multiplexed)."""

    host: str  # the name shown to the user (as written in the hosts file)

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection (no-op locally); raises TransportError with a reason."""

    @abc.abstractmethod
    async def run(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = 30.0,
        input: str | None = None,
    ) -> CommandResult:
        """Run a shell command line to completion and collect its output."""

    @abc.abstractmethod
    def stream(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bool = False,
        kill_on_close: bool = True,
    ) -> LineStream:
        """Run a command and yield its output lines as they come; closing the iterator ends it.

        Both implementations return a ``LineStream`` (exit status after the end, ``aclose``,
        ``send_signal``, and ``write`` to stdin when ``stdin`` is true; otherwise stdin is empty).
        ``aclose`` TERMs (then KILLs) the command's process group; with ``kill_on_close=False``
        an SSH stream only closes its channel (for commands that end on EOF or SIGPIPE).
        A command that cannot be started raises TransportError on the first iteration.
        """

    @abc.abstractmethod
    async def put(self, local_path: str, remote_path: str, *, recurse: bool = False) -> None:
        """Copy a file (or a tree) to the host."""

    @abc.abstractmethod
    async def get(self, remote_path: str, local_path: str) -> None:
        """Copy a file from the host."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection; running detached processes on the host are not affected."""
