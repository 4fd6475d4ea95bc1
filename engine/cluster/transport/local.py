"""This machine as a host: subprocesses running the same shell line an SSH host would get."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

from engine.cluster.remote_cmd import shell_command
from engine.cluster.transport.base import (
    CommandResult,
    CommandTimedOut,
    LineSplitter,
    LineStream,
    Transport,
    TransportError,
)

KILL_GRACE_S = 2.0


class LocalTransport(Transport):
    """Subprocesses via ``/bin/sh -c``; env merges over os.environ; one session per command."""

    def __init__(
        self,
        host: str = "localhost",
        *,
        env: Mapping[str, str] | None = None,
        path_prepend: Iterable[str] = (),
    ) -> None:
        self.host = host
        self.env = dict(env or {})  # the host's own variables (hosts-file env.NAME=)
        self.path_prepend = tuple(path_prepend)
        self._streams: set[LineStream] = set()

    async def connect(self) -> None:
        return None

    def _line(self, command: str, env: Mapping[str, str] | None, cwd: str | None) -> str:
        # The same line an SSH host's shell gets, so both transports behave alike (cd errors too).
        return shell_command(
            command, env={**self.env, **(env or {})}, cwd=cwd, path_prepend=self.path_prepend
        )

    def _argv(self, line: str) -> list[str]:
        return ["/bin/sh", "-c", line]

    async def _spawn(self, line: str, stdin: int) -> asyncio.subprocess.Process:
        argv = self._argv(line)
        try:
            return await asyncio.create_subprocess_exec(
                *argv,
                stdin=stdin,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group: a timeout ends all of it
            )
        except OSError as exc:
            raise TransportError(self.host, f"cannot start {argv[0]}: {exc.strerror}") from None

    async def run(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = 30.0,
        input: str | None = None,
    ) -> CommandResult:
        stdin = asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL
        proc = await self._spawn(self._line(command, env, cwd), stdin)
        data = input.encode() if input is not None else None
        try:
            out, err = await asyncio.wait_for(proc.communicate(data), timeout)
        except TimeoutError:
            await _end_group(proc)
            raise CommandTimedOut(self.host, timeout) from None
        except asyncio.CancelledError:
            await _end_group(proc)
            raise
        return _result(proc.returncode, out, err)

    def stream(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bool = False,
        kill_on_close: bool = True,
    ) -> LineStream:
        # kill_on_close is accepted for parity with SSH; ending a local group is always cheap
        line = self._line(command, env, cwd)
        holder: dict[str, asyncio.subprocess.Process] = {}
        started = asyncio.Event()

        async def closer() -> None:
            # Never cancel a subprocess start (asyncio can then hang waiting for the child):
            # let it finish, then end the process group.
            await started.wait()
            if "proc" in holder:
                await _end_group(holder["proc"])

        async def signaller(name: str) -> None:
            if "proc" in holder:
                _signal_group(holder["proc"], name)

        lines = LineStream(self.host, closer, signaller)
        if stdin:
            lines._writer = _stdin_writer(self.host, lines, holder, started)  # type: ignore[attr-defined]
        task = asyncio.get_running_loop().create_task(
            self._pump(lines, line, holder, stdin, started)
        )
        lines._task = task  # type: ignore[attr-defined]  # keep the task referenced
        return lines

    async def _pump(
        self, lines: LineStream, line: str, holder: dict, stdin: bool, started: asyncio.Event
    ) -> None:
        mode = asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL
        try:
            try:
                proc = holder["proc"] = await self._spawn(line, mode)
            finally:
                started.set()
            assert proc.stdout is not None and proc.stderr is not None  # _spawn pipes both
            await asyncio.gather(
                _read_lines(proc.stdout, "stdout", lines), _read_lines(proc.stderr, "stderr", lines)
            )
            code = await proc.wait()
        except TransportError as exc:
            lines.finish(None, error=exc)
            return
        except asyncio.CancelledError:  # closed before it got going
            if "proc" in holder:
                await _end_group(holder["proc"])
            lines.finish(None, "TERM")
            return
        lines.finish(code if code >= 0 else None, _signal_name(code))

    async def put(self, local_path: str, remote_path: str, *, recurse: bool = False) -> None:
        await asyncio.to_thread(copy_path, local_path, remote_path, recurse)

    async def get(self, remote_path: str, local_path: str) -> None:
        await asyncio.to_thread(copy_path, remote_path, local_path, False)

    async def close(self) -> None:
        return None


def _stdin_writer(
    host: str, lines: LineStream, holder: dict, started: asyncio.Event
) -> Callable[[str], Awaitable[None]]:
    async def write(text: str) -> None:
        await started.wait()
        if "proc" not in holder or lines.finished:
            raise lines.error or TransportError(host, "the command has ended")
        holder["proc"].stdin.write(text.encode())
        try:
            await holder["proc"].stdin.drain()
        except ConnectionError:
            raise TransportError(host, "the command has ended") from None

    return write


def copy_path(source: str, target: str, recurse: bool) -> None:
    """Copy like SFTP put/get: into ``target`` when it is a directory; trees only with recurse."""
    src, dst = Path(source), Path(target)
    if dst.is_dir():
        dst = dst / src.name
    if src.is_dir():
        if not recurse:
            raise IsADirectoryError(f"{src} is a directory (copy it with recurse)")
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)


async def _read_lines(reader: asyncio.StreamReader, name: str, lines: LineStream) -> None:
    splitter = LineSplitter()
    while chunk := await reader.read(65536):
        for text in splitter.feed(chunk):
            lines.put_line(name, text)
    for text in splitter.flush():
        lines.put_line(name, text)


async def _end_group(proc: asyncio.subprocess.Process) -> None:
    """TERM the command's process group, then KILL what is left after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
            return
        except TimeoutError:
            continue


def _signal_group(proc: asyncio.subprocess.Process, name: str) -> None:
    try:
        os.killpg(proc.pid, signal.Signals["SIG" + name.upper().removeprefix("SIG")])
    except (ProcessLookupError, PermissionError):
        pass


def _result(code: int | None, out: bytes, err: bytes) -> CommandResult:
    status = code if code is not None and code >= 0 else None
    return CommandResult(
        status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), _signal_name(code)
    )


def _signal_name(code: int | None) -> str | None:
    if code is None or code >= 0:
        return None
    try:
        return signal.Signals(-code).name.removeprefix("SIG")
    except ValueError:
        return str(-code)
