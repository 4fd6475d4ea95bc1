"""A host over SSH: one asyncssh connection per host, every command a channel multiplexed on it.

Host keys are verified against known_hosts (the host's ``known_hosts=``, else ~/.ssh/config's
UserKnownHostsFile, else ~/.ssh/known_hosts); only ``insecure_host_key=yes`` skips that. A failed
connection is retried with exponential backoff: until the next attempt is due, calls fail at once
with the last reason instead of hammering the host. Environment reaches commands inside the
command line (remote_cmd.shell_command), not via SSH setenv, which sshd's AcceptEnv drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shlex
import socket
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from engine.cluster.hosts import HostSpec
from engine.cluster.remote_cmd import shell_command
from engine.cluster.transport.base import (
    CommandResult,
    CommandTimedOut,
    LineSplitter,
    LineStream,
    Transport,
    TransportError,
)

CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 5.0
KEEPALIVE_COUNT = 3  # a host silent for KEEPALIVE_S * KEEPALIVE_COUNT is lost
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
KILL_GRACE_S = 2.0
PGID_WAIT_S = 10.0  # a loaded host may take seconds to start the shell
PGID_MARK = "imgscale-pgid:"
# asyncssh still names DSA keys, and importing it makes cryptography print a four-line warning
# on every SSH command; we never offer DSA, so that one warning says nothing to the user.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh\.")
ENCRYPTION_ALGS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)


class SshTransport(Transport):
    """One host over one SSH connection (opened on first use, reopened after a loss)."""

    def __init__(
        self,
        spec: HostSpec,
        *,
        connect_timeout: float | None = None,
        keepalive: float | None = None,
    ) -> None:
        self.spec = spec
        self.host = spec.name
        self.connect_timeout = connect_timeout or float(
            spec.option("connect_timeout") or CONNECT_TIMEOUT_S
        )
        self.keepalive = keepalive or float(spec.option("keepalive") or KEEPALIVE_S)
        self.failures = 0  # consecutive failed connection attempts
        self.last_error: TransportError | None = None
        self._conn: Any = None
        self._retry_at = 0.0
        self._lock = asyncio.Lock()
        self._sftp: Any = None
        self._sftp_conn: Any = None

    # ---- connection -----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    @property
    def retry_delay(self) -> float:
        """Seconds between the last failed attempt and the next one (exponential backoff)."""
        if not self.failures:
            return 0.0
        return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (self.failures - 1))

    @property
    def retry_in(self) -> float:
        return max(0.0, self._retry_at - time.monotonic())

    async def connect(self) -> None:
        """Connect now (one attempt, whatever the backoff says); TransportError with a reason."""
        async with self._lock:
            if not self.connected:
                await self._attempt()

    async def connect_with_retry(self, timeout: float | None = None) -> None:
        """Keep trying, with backoff, until connected or ``timeout`` seconds have passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return await self.connect()
            except TransportError:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= self.retry_delay:
                    raise
                await asyncio.sleep(self.retry_delay)  # the backoff itself

    async def _connection(self) -> Any:
        async with self._lock:
            if self.connected:
                return self._conn
            if self.last_error is not None and self.retry_in > 0:
                raise TransportError(self.host, self.last_error.reason)
            await self._attempt()
            return self._conn

    async def _attempt(self) -> None:
        import asyncssh

        self._conn = None
        try:
            self._conn = await asyncssh.connect(self.spec.address, **self.client_options())
        except Exception as exc:  # every failure becomes a reason; nothing escapes raw
            error = TransportError(self.host, classify(exc, self.spec))
            self.failures += 1
            self.last_error = error
            self._retry_at = time.monotonic() + self.retry_delay
            raise error from None
        self.failures = 0
        self.last_error = None

    def client_options(self) -> dict[str, Any]:
        """asyncssh.connect keyword arguments for this host (see client_options())."""
        return client_options(self.spec, self.connect_timeout, self.keepalive)

    def _lost(self, exc: BaseException) -> TransportError:
        """A channel failed: forget a dead connection so the next call reconnects."""
        if self._conn is not None and self._conn.is_closed():
            self._conn = None
            return TransportError(self.host, "connection lost")
        return TransportError(self.host, classify(exc, self.spec))

    # ---- commands -------------------------------------------------------------------------
    def _line(self, command: str, env: Mapping[str, str] | None, cwd: str | None) -> str:
        # The first stderr line names the command's process group: sshd puts every session in
        # its own group, and "exec" keeps that pid. SSH "signal" requests are refused for root
        # sessions by OpenSSH, so ending a command is "kill -- -PGID" on a second channel.
        body = shell_command(
            command,
            env={**self.spec.env, **(env or {})},
            cwd=cwd,
            path_prepend=self.spec.path_prepend,
        )
        return f"echo {PGID_MARK}$$ >&2; {body}"

    async def _start(self, line: str) -> _RemoteCommand:
        import asyncssh

        conn = await self._connection()
        try:
            proc = await conn.create_process(line, encoding=None)
        except asyncssh.ChannelOpenError as exc:
            if conn.is_closed():
                raise self._lost(exc) from None
            raise TransportError(
                self.host,
                f"could not open a channel ({exc.reason}; "
                "raise MaxSessions in the host's sshd_config)",
            ) from None
        except (asyncssh.Error, OSError) as exc:
            raise self._lost(exc) from None
        return _RemoteCommand(self, proc)

    async def signal_group(self, pgid: int, name: str) -> None:
        """Send signal ``name`` to process group ``pgid`` on the host (a second channel)."""
        conn = await self._connection()
        await conn.run(f"kill -s {shlex.quote(name)} -- -{int(pgid)}", check=False, timeout=10)

    async def run(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = 30.0,
        input: str | None = None,
    ) -> CommandResult:
        cmd = await self._start(self._line(command, env, cwd))
        out, err = bytearray(), bytearray()
        try:
            cmd.send_input(input)
        except Exception as exc:  # the channel broke at once: say why
            raise self._lost(exc) from None
        # The reader keeps running while a timed-out command is ended: it is what learns the
        # command's process group from the first stderr line.
        pump = asyncio.ensure_future(cmd.pump(out.extend, err.extend))
        try:
            done, _ = await asyncio.wait([pump], timeout=timeout)
        except asyncio.CancelledError:
            await cmd.end()
            pump.cancel()
            raise
        if not done:
            await cmd.end()
            pump.cancel()
            raise CommandTimedOut(self.host, timeout)
        error = pump.exception()
        if error is not None:
            raise self._lost(error) from None
        status, sig = cmd.exit()
        return CommandResult(
            status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), sig
        )

    def stream(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bool = False,
        kill_on_close: bool = True,
    ) -> LineStream:
        """See Transport.stream. ``kill_on_close=False`` only closes the channel on ``aclose``:
        cheaper for commands that end by themselves on EOF or SIGPIPE (the probes' loops)."""
        holder: dict[str, _RemoteCommand] = {}

        async def closer() -> None:
            if "cmd" in holder:
                await (holder["cmd"].end() if kill_on_close else holder["cmd"].hang_up())
            else:  # still connecting or opening the channel: stop that instead
                await _cancel_start(lines)

        async def signaller(name: str) -> None:
            if "cmd" in holder:
                await holder["cmd"].signal(name)

        lines = LineStream(self.host, closer, signaller)
        if stdin:
            lines._writer = self._stdin_writer(lines, holder)  # type: ignore[attr-defined]
        line = self._line(command, env, cwd)
        lines._task = asyncio.get_running_loop().create_task(  # type: ignore[attr-defined]
            self._pump(lines, line, holder, stdin)
        )
        return lines

    def _stdin_writer(self, lines: LineStream, holder: dict) -> Callable:
        async def write(text: str) -> None:
            await holder["started"].wait()
            if "cmd" not in holder or lines.finished:
                raise lines.error or TransportError(self.host, "the command has ended")
            holder["cmd"].proc.stdin.write(text.encode())

        holder["started"] = asyncio.Event()
        return write

    async def _pump(self, lines: LineStream, line: str, holder: dict, stdin: bool) -> None:
        try:
            try:
                cmd = holder["cmd"] = await self._start(line)
            finally:
                if "started" in holder:
                    holder["started"].set()
            if not stdin:
                cmd.send_input(None)
            out, err = LineSplitter(), LineSplitter()
            await cmd.pump(
                lambda b: _put(lines, "stdout", out.feed(b)),
                lambda b: _put(lines, "stderr", err.feed(b)),
            )
            _put(lines, "stdout", out.flush())
            _put(lines, "stderr", err.flush())
            status, sig = cmd.exit()
        except TransportError as exc:
            lines.finish(None, error=exc)
            return
        except asyncio.CancelledError:  # closed before the command got going
            if "cmd" in holder:
                await holder["cmd"].end()
            lines.finish(None, "TERM")
            return
        except Exception as exc:  # a broken channel mid-stream: say why, never hang
            lines.finish(None, error=self._lost(exc))
            return
        lines.finish(status, sig)

    # ---- files ----------------------------------------------------------------------------
    async def _sftp_client(self) -> Any:
        conn = await self._connection()
        if self._sftp is None or self._sftp_conn is not conn:
            try:
                self._sftp = await conn.start_sftp_client()
            except Exception as exc:
                raise self._lost(exc) from None
            self._sftp_conn = conn
        return self._sftp

    async def put(self, local_path: str, remote_path: str, *, recurse: bool = False) -> None:
        sftp = await self._sftp_client()
        await self._sftp_call(sftp.put, local_path, remote_path, recurse=recurse, preserve=True)

    async def get(self, remote_path: str, local_path: str) -> None:
        sftp = await self._sftp_client()
        await self._sftp_call(sftp.get, remote_path, local_path, preserve=True)

    async def _sftp_call(
        self, method: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> None:
        import asyncssh

        try:
            await method(*args, **kwargs)
        except asyncssh.SFTPNoSuchFile as exc:
            raise FileNotFoundError(f"{self.host}: {exc.reason}: {args[0]}") from None
        except asyncssh.SFTPPermissionDenied as exc:
            raise PermissionError(f"{self.host}: {exc.reason}: {args[0]}") from None
        except asyncssh.SFTPError as exc:
            raise OSError(f"{self.host}: copy failed: {exc.reason}") from None
        except (asyncssh.Error, ConnectionError) as exc:
            raise self._lost(exc) from None

    async def close(self) -> None:
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.close()
            try:
                await asyncio.wait_for(conn.wait_closed(), 5)
            except (TimeoutError, OSError):
                pass


def client_options(spec: HostSpec, connect_timeout: float, keepalive: float) -> dict[str, Any]:
    """asyncssh.connect keywords from a hosts-file line; unset fields defer to ~/.ssh/config."""
    opts: dict[str, Any] = {
        # The same ciphers as asyncssh's default, AES-GCM first: with AES-NI it costs the console
        # far less CPU per packet than chacha20-poly1305 (measured by benchmarks/bench_probe.py).
        "encryption_algs": ENCRYPTION_ALGS,
        "connect_timeout": connect_timeout,
        "login_timeout": connect_timeout,
        "keepalive_interval": keepalive,
        "keepalive_count_max": KEEPALIVE_COUNT,
    }
    if spec.port:
        opts["port"] = spec.port
    if spec.user:
        opts["username"] = spec.user
    if spec.option("identity"):
        opts["client_keys"] = _paths(spec.option("identity"))
    if spec.option("ssh_config"):
        opts["config"] = _paths(spec.option("ssh_config"))
    if spec.flag("insecure_host_key"):
        opts["known_hosts"] = None  # the explicit per-host opt-out; never a default
    elif spec.option("known_hosts"):
        opts["known_hosts"] = _paths(spec.option("known_hosts"))[0]
    if spec.flag("forward_agent"):
        opts["agent_forwarding"] = True
    return opts


def _paths(value: str | None) -> list[str]:
    return [os.path.expanduser(p) for p in (value or "").split(",") if p]


def classify(exc: BaseException, spec: HostSpec | None = None) -> str:
    """A short phrase saying why a host could not be reached or a channel broke."""
    import asyncssh

    if isinstance(exc, socket.gaierror):
        return "name resolution failed"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return _host_key_reason(spec)
    if isinstance(exc, asyncssh.PermissionDenied):
        return "authentication failed"
    if isinstance(
        exc,
        (
            asyncssh.ConnectionLost,
            ConnectionResetError,
            BrokenPipeError,
            asyncssh.DisconnectError,
            EOFError,
        ),
    ):
        return "connection lost"
    if isinstance(exc, asyncssh.KeyImportError):
        return f"cannot read the private key ({exc})"
    if isinstance(exc, asyncssh.ConfigParseError):
        return f"bad ssh config ({exc})"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "host unreachable"
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)) and exc.filename:
        # a key or config file named by identity=, known_hosts= or ssh_config= (or ~/.ssh's)
        return (
            f"cannot read {exc.filename} ({exc.strerror}); "
            "fix identity=, known_hosts= or ssh_config= in the hosts file"
        )
    return f"{type(exc).__name__}: {exc}"


def _host_key_reason(spec: HostSpec | None) -> str:
    """Mismatch when known_hosts has keys for this host but none matched, else unknown."""
    path = _known_hosts_path(spec)
    if spec is not None and path and _has_entry(path, spec):
        return (
            f"host key mismatch (the host's key differs from {path}; if the host was "
            "reinstalled, replace its line there)"
        )
    where = path or "known_hosts"
    return f"host key unknown (add the host's key to {where}, e.g. with ssh-keyscan)"


def _known_hosts_path(spec: HostSpec | None) -> str | None:
    if spec is not None and spec.option("known_hosts"):
        return _paths(spec.option("known_hosts"))[0]
    default = os.path.expanduser("~/.ssh/known_hosts")
    return default if os.path.exists(default) else None


def _has_entry(path: str, spec: HostSpec) -> bool:
    import asyncssh

    try:
        known = asyncssh.read_known_hosts(path)
    except (OSError, ValueError):
        return False
    address = _numeric(spec.address)
    keys = known.match(spec.address, address, spec.port if spec.port != 22 else None)[0]
    return bool(keys)


def _numeric(host: str) -> str:
    try:
        return str(socket.getaddrinfo(host, None)[0][4][0])  # an IP address string
    except OSError:
        return host


def _put(lines: LineStream, name: str, texts: list[str]) -> None:
    for text in texts:
        lines.put_line(name, text)


class _RemoteCommand:
    """One command on one channel: its output, its process group and how it ended."""

    def __init__(self, transport: SshTransport, proc: Any) -> None:
        self.transport = transport
        self.proc = proc
        self.pgid: int | None = None
        self.pgid_known = asyncio.Event()

    def send_input(self, text: str | None) -> None:
        if text is not None:
            self.proc.stdin.write(text.encode())
        self.proc.stdin.write_eof()

    async def pump(
        self, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]
    ) -> None:
        await asyncio.gather(self._copy(self.proc.stdout, on_stdout), self._stderr(on_stderr))
        await self.proc.wait_closed()

    @staticmethod
    async def _copy(reader: Any, sink: Callable[[bytes], None]) -> None:
        while chunk := await reader.read(65536):
            sink(chunk)

    async def _stderr(self, sink: Callable[[bytes], None]) -> None:
        head = b""
        while b"\n" not in head:
            chunk = await self.proc.stderr.read(65536)
            if not chunk:
                break
            head += chunk
        first, newline, rest = head.partition(b"\n")
        if first.startswith(PGID_MARK.encode()) and newline:
            self.pgid = int(first[len(PGID_MARK) :])
            head = rest
        self.pgid_known.set()
        if head:
            sink(head)
        await self._copy(self.proc.stderr, sink)

    def exit(self) -> tuple[int | None, str | None]:
        """(exit status, signal name); TransportError when the connection went away instead."""
        sig = self.proc.exit_signal[0] if self.proc.exit_signal else None
        status = self.proc.exit_status
        status = status if status is not None and status >= 0 else None
        if status is None and sig is None and not self.transport.connected:
            raise TransportError(self.transport.host, "connection lost")
        return status, sig

    async def signal(self, name: str) -> None:
        try:  # known as soon as the shell starts, or when its stderr closes
            await asyncio.wait_for(self.pgid_known.wait(), PGID_WAIT_S)
        except TimeoutError:
            return
        if self.pgid is not None:
            await self.transport.signal_group(self.pgid, name)

    async def hang_up(self) -> None:
        """Close stdin and the channel; the command sees EOF, and SIGPIPE on its next write."""
        with contextlib.suppress(Exception):  # the channel may already be gone
            self.proc.stdin.write_eof()
        self.proc.close()

    async def end(self) -> None:
        """TERM the command's process group, KILL it after a grace period, close the channel."""
        for name in ("TERM", "KILL"):
            try:
                await self.signal(name)
                if self.pgid is None:  # the shell never announced itself: only closing is left
                    break
                await asyncio.wait_for(self.proc.wait_closed(), KILL_GRACE_S)
                return
            except TimeoutError:
                continue
            except Exception:  # the connection is gone: nothing left to signal through
                break
        self.proc.close()


async def _cancel_start(lines: LineStream) -> None:
    """Close a stream whose command has not started: cancel the start and end the stream."""
    task = lines._task  # type: ignore[attr-defined]
    task.cancel()
    await asyncio.wait([task])  # unlike "await task", never raises the cancellation here
    lines.finish(None, "TERM")
