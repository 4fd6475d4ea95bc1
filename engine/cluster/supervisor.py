"""Supervision of a detached job: watch every process on every host, stop the job on a fault, relaunch it.

One long-lived channel per host (detach.watch_command) reports every process's state twice a
second and follows its log. A process that exits non-zero (or vanishes without an exit status,
e.g. SIGKILLed with its wrapper), a host that stays unreachable for ``lost_timeout_s``, or a job
with no new log line for ``stall_timeout_s`` is a fault: the whole job is stopped on every host
(TERM to each recorded process group, KILL after the grace period), a ``Failure`` names the
process, host, exit status and last log lines, and the job is relaunched (a new attempt, the
command rewritten by the resume hook) while restarts are left.

What ps-lite allows: with heartbeats (PS_HEARTBEAT_INTERVAL/TIMEOUT on every process) the scheduler
marks a silent node dead, and a node of the same role that registers afterwards takes over its id
(MXNet skips the start-up barrier for it), so one failed *worker* could be restarted in place. In
practice (MXNet 1.9.1, dist_async, measured) the restarted worker hangs while registering, and in
dist_sync its restarted data iterator would desynchronise the step counts anyway; so the whole job
is relaunched from the newest checkpoint instead.
Never recoverable in place: the scheduler (the rendezvous), a server (its parameter shard and
optimizer state), and any death without heartbeats (ps-lite never notices; dist_sync hangs).
Details: docs/cluster.md, "What ps-lite can and cannot recover".

The ``Job`` API (used by ``imgscale launch/attach`` and the console)::

    job = await launcher.launch(spec)            # or: job = launcher.open_job(job_id); await job.attach()
    async for event in job.events(): ...         # LogLine, JobState, Failure, HostState
    job.status() -> JobState                     # a snapshot, any time
    await job.stop()                             # stop every process on every host
    await job.relaunch(exclude=("node3",))       # a new attempt, on request
    await job.wait() -> JobState                 # until done / failed / stopped
    await job.close()                            # stop watching; the processes keep running
"""

from __future__ import annotations

import asyncio
import collections
import os
import shlex
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from engine.errors import UserError
from engine.events import Event, EventSink, Failure, HostState, JobState, LogLine, ProcessInfo

from . import jobs
from .detach import (
    DetachedProcess,
    kill_command,
    parse_kill,
    parse_status,
    shell_path,
    split_tagged,
    env_files,
    start_command,
    watch_command,
)
from .hostpool import TransportPool
from .jobs import JobRecord, ProcRecord
from .transport import TransportError

FINAL = ("done", "failed", "stopped")
DRAIN_QUIET_S = 0.6  # a job is final once its logs were quiet this long …
DRAIN_MAX_S = 3.0  # … or after this long
START_TIMEOUT_S = 60.0  # a host that has not started its processes by then has failed
KILL_WAIT_S = 15.0  # beyond the grace period, how long `imgscale kill` may take before we step in


@dataclass(frozen=True)
class SuperviseOptions:
    """How a job is watched and when it is stopped or relaunched."""

    max_restarts: int = 0  # automatic relaunches after a fault
    stall_timeout_s: float | None = None  # no new log line for this long is a fault
    poll_s: float = 0.5  # status rounds per host
    grace_s: int = 5  # TERM, then KILL after this many seconds
    lost_timeout_s: float = 10.0  # a host unreachable this long is lost
    finish_grace_s: float = 30.0  # servers/scheduler still up this long after the workers ended
    exclude_after: int = 0  # leave a host out after this many faults on it (0: never)
    tail_lines: int | None = None  # on attach: follow from the last N lines (None: from the start)
    last_lines: int = 20  # log lines quoted in a Failure


@dataclass(frozen=True)
class Planned:
    """One process of a new attempt: its record and how to start it."""

    record: ProcRecord
    process: DetachedProcess


# (attempt, hosts to use) -> the processes of that attempt
Planner = Callable[[int, Sequence[str]], Awaitable[list[Planned]]]


def _settle(future: asyncio.Future, reason: str | None) -> None:
    if not future.done():
        future.set_result(reason)


async def _close_stream(stream) -> None:
    closer = getattr(stream, "aclose", None)
    if closer is not None:
        try:
            await asyncio.shield(closer())
        except (TransportError, OSError, asyncio.CancelledError):
            pass  # the channel is gone already


def describe_status(code: int | None) -> str:
    """``exited with status 3`` / ``was killed by SIGKILL`` (sh reports signal N as 128+N)."""
    if code is None:
        return "vanished without an exit status (its wrapper was killed too)"
    if code > 128:
        try:
            return f"was killed by {signal.Signals(code - 128).name} (status {code})"
        except ValueError:
            pass
    return f"exited with status {code}"


def line_level(text: str) -> str:
    """A rough level for the console's colouring; the text itself is never changed."""
    head = text[:200]
    if "Traceback" in head or "Error" in head or "error:" in head or "FATAL" in head:
        return "error"
    if "WARN" in head or "Warning" in head:
        return "warning"
    return "info"


class Job:
    """A job's processes on its hosts, watched; supervised when this object holds the job's lock."""

    def __init__(
        self,
        record: JobRecord,
        pool: TransportPool,
        *,
        planner: Planner | None = None,
        options: SuperviseOptions = SuperviseOptions(),
        sink: EventSink | None = None,
    ) -> None:
        self.record = record
        self.pool = pool
        self.planner = planner
        self.options = options
        self.sink = sink
        self.supervising = False
        self.phase = record.state
        self.message = record.message
        self.infos: list[ProcessInfo] = []
        self.tails: list[collections.deque[str]] = []
        self.last_output = time.monotonic()
        self.host_faults: collections.Counter[str] = collections.Counter()
        self._queues: list[asyncio.Queue] = []
        self._tasks: list[asyncio.Task] = []
        self._acting: asyncio.Task | None = None
        self._final = asyncio.Event()
        self._lock_fd: int | None = None
        self._finish_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._reset_infos()

    # ---- public API ------------------------------------------------------------------------
    @property
    def job_id(self) -> str:
        return self.record.job

    def status(self) -> JobState:
        return JobState(
            self.record.job, self.phase, tuple(self.infos), self.record.restarts, self.message
        )

    async def events(self) -> AsyncIterator[Event]:
        """Every event from now on, until the job is final and no longer watched."""
        queue: asyncio.Queue = asyncio.Queue()
        self._queues.append(queue)
        queue.put_nowait(self.status())
        if self._closed:
            queue.put_nowait(None)
        try:
            while True:
                event = await queue.get()
                if event is None:
                    return
                yield event
        finally:
            self._queues.remove(queue)

    async def start(self) -> None:
        """Start the record's attempt on every host (this object supervises it)."""
        self._take_lock(required=True)
        failed = await self._start_attempt(self.record.attempt)
        if failed:
            self._fault(
                f"host {failed[0]}", f"could not start processes: {failed[1]}", host=failed[0]
            )

    async def attach(self) -> None:
        """Watch an already running job; supervise it too unless another process does."""
        self.supervising = self._take_lock(required=False)
        if self.supervising:
            self.record = replace(self.record, launcher_pid=os.getpid())
        self._set_phase(self.record.state)
        if not self.record.active:
            await self._replay_tails(self.options.tail_lines)
            self._final.set()
            return
        self._watch(self.options.tail_lines)
        if not self.supervising:
            self._tasks.append(asyncio.create_task(self._follow_record()))

    async def _replay_tails(self, lines: int | None) -> None:
        """A finished job: the last lines each process wrote, as re-attaching to a running one shows."""
        if not lines:
            return
        if not self.infos:
            self._reset_infos()
        for index, info in enumerate(self.infos):
            try:
                transport = await self.pool.get(info.host)
                result = await transport.run(
                    f"tail -n {int(lines)} {shlex.quote(info.log_path)}", timeout=10
                )
            except TransportError:
                continue  # the host is gone; its state line already says the job's outcome
            for text in result.stdout.splitlines():
                self._on_log(index, text)

    async def stop(self, message: str = "stopped on request") -> JobState:
        """Stop every process on every host; the job ends as ``stopped``."""
        if self.phase in FINAL and not self._any_running():
            return self.status()  # nothing left to stop; keep the outcome it had
        await self._cancel_acting()
        if not self.supervising:  # tell the supervising process not to relaunch
            jobs.stop_marker(self.record.job).touch()
        await self._stop_everywhere("stopping")
        await self._drain_then("stopped", message)
        return self.status()

    async def relaunch(self, exclude: Sequence[str] = ()) -> JobState:
        """Stop what still runs and start a new attempt (resume hook applied); on request."""
        if not self.supervising:
            self._take_lock(required=True)  # only one process may start attempts
        await self._cancel_acting()
        self.record = replace(self.record, excluded=tuple({*self.record.excluded, *exclude}))
        if any(i.state in ("starting", "running") for i in self.infos):
            await self._stop_everywhere("stopping")
        failed = await self._relaunch()
        if failed:
            self._fault(
                f"host {failed[0]}", f"could not start processes: {failed[1]}", host=failed[0]
            )
        return self.status()

    async def wait(self) -> JobState:
        await self._final.wait()
        return self.status()

    async def close(self) -> None:
        """Stop watching and supervising; the job's processes keep running on their hosts."""
        self._closed = True
        await self._cancel_acting()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._release_lock()
        await self.pool.close()
        for queue in self._queues:
            queue.put_nowait(None)

    # ---- events ------------------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        if self.sink is not None:
            self.sink(event)
        for queue in self._queues:
            queue.put_nowait(event)

    def _set_phase(self, phase: str, message: str | None = None) -> None:
        self.phase = phase
        if message is not None:
            self.message = message
        self._emit(self.status())
        if self.supervising:
            self._save()

    def _save(self) -> None:
        self.record = jobs.save(replace(self.record, state=self.phase, message=self.message))

    # ---- the supervisor lock -----------------------------------------------------------------
    def _take_lock(self, required: bool) -> bool:
        self._lock_fd = jobs.take_supervisor_lock(self.record.job, required)
        if self._lock_fd is None:
            return False
        self.supervising = True
        return True

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---- starting ----------------------------------------------------------------------------
    def _reset_infos(self) -> None:
        self.infos = [
            ProcessInfo(p.host, p.role, p.rank, log_path=p.log_path) for p in self.record.processes
        ]
        self.tails = [collections.deque(maxlen=self.options.last_lines) for _ in self.infos]

    def _hosts_in_use(self) -> list[str]:
        return [h for h in self.record.host_names if h not in self.record.excluded]

    async def _start_attempt(self, attempt: int) -> tuple[str, str] | None:
        """Plan and start an attempt, then watch it; returns (host, reason) if a host refused."""
        if self.planner is None:
            raise RuntimeError("this job was opened without a planner; it cannot be (re)started")
        jobs.stop_marker(self.record.job).unlink(missing_ok=True)
        planned = await self.planner(attempt, self._hosts_in_use())
        past = self.record.past_processes + (self.record.processes if attempt else ())
        self.record = replace(
            self.record,
            attempt=attempt,
            past_processes=past,
            processes=tuple(p.record for p in planned),
            launcher_pid=os.getpid(),
        )
        self._reset_infos()
        self._set_phase("starting", f"attempt {attempt}")
        self.last_output = time.monotonic()
        return await self._launch_on_hosts(planned)

    async def _launch_on_hosts(self, planned: list[Planned]) -> tuple[str, str] | None:
        """Start every host's processes through its watch channel (one SSH session per host)."""
        by_host: dict[str, list[DetachedProcess]] = collections.defaultdict(list)
        for p in planned:
            by_host[p.record.host].append(p.process)
        written = await asyncio.gather(*(self._write_env(h, procs) for h, procs in by_host.items()))
        if any(written):
            return next(w for w in written if w is not None)
        loop = asyncio.get_running_loop()
        started = {host: loop.create_future() for host in by_host}
        self._watch(None, {h: (procs, started[h]) for h, procs in by_host.items()})
        results = await asyncio.gather(*(self._started_on(h, f) for h, f in started.items()))
        return next((r for r in results if r is not None), None)

    async def _write_env(self, host: str, procs: list[DetachedProcess]) -> tuple[str, str] | None:
        """Each process's environment into its 0600 PREFIX.env, sent on stdin (never in `ps`)."""
        command, script = env_files(procs)
        try:
            transport = await self.pool.get(host)
            result = await transport.run(command, input=script, timeout=START_TIMEOUT_S)
        except TransportError as exc:
            return host, exc.reason
        if result.exit_status != 0:
            return host, f"cannot write the environment files: {result.stderr.strip()[-300:]}"
        return None

    @staticmethod
    async def _started_on(host: str, started: asyncio.Future) -> tuple[str, str] | None:
        try:
            reason = await asyncio.wait_for(started, START_TIMEOUT_S)
        except TimeoutError:
            reason = f"no answer within {START_TIMEOUT_S:.0f} s"
        return None if reason is None else (host, reason)

    # ---- watching ----------------------------------------------------------------------------
    def _watch(self, tail_lines: int | None, starts: dict | None = None) -> None:
        """Watch every host; ``starts`` maps a host to (processes to start first, future)."""
        by_host: dict[str, list[int]] = collections.defaultdict(list)
        for index, proc in enumerate(self.record.processes):
            by_host[proc.host].append(index)
        attempt = self.record.attempt
        for host, indices in by_host.items():
            start = (starts or {}).get(host)
            self._tasks.append(
                asyncio.create_task(self._watch_host(host, indices, attempt, tail_lines, start))
            )
        if self.supervising and self.options.stall_timeout_s:
            self._tasks.append(asyncio.create_task(self._stall_watch(attempt)))

    async def _watch_host(
        self, host: str, indices: list[int], attempt: int, tail: int | None, start=None
    ) -> None:
        prefixes = [self.record.processes[i].prefix for i in indices]
        lost_since: float | None = None
        while attempt == self.record.attempt and self.phase not in FINAL:
            command = watch_command(prefixes, self.options.poll_s, tail)
            if start is not None:  # the first channel of an attempt starts the processes too
                command = start_command(start[0]) + "\n" + command
            errors: list[str] = []
            try:
                transport = await self.pool.get(host)
                stream = transport.stream(command)
                try:
                    async for line in stream:
                        if lost_since is not None:
                            lost_since = None
                            self._emit(HostState(host, True))
                        if start is not None and line.text == "started":
                            _settle(start[1], None)
                        elif (
                            line.stream == "stderr"
                            and len(errors) < 20
                            and parse_status(line.text) is None
                        ):
                            errors.append(line.text)
                        self._on_watch_line(line.stream, line.text, indices, attempt)
                finally:  # a cancelled watcher must end its channel and the host's tails
                    await _close_stream(stream)
                reason = (
                    "; ".join(e for e in errors if e != ".")[-300:] or "the watch channel closed"
                )
            except TransportError as exc:
                reason = exc.reason
            if start is not None:
                if not start[1].done():  # it never said "started": the start failed
                    _settle(start[1], reason)
                    return
                start = None
            if attempt != self.record.attempt or self.phase in FINAL:
                return
            tail = 0  # after a reconnect follow only new lines
            if lost_since is None:
                lost_since = time.monotonic()
                self._emit(HostState(host, False, reason))
            if time.monotonic() - lost_since >= self.options.lost_timeout_s:
                self._host_lost(host, indices, reason)
                return
            await asyncio.sleep(min(1.0, self.options.lost_timeout_s / 5))  # reconnect backoff

    def _on_watch_line(self, stream: str, text: str, indices: list[int], attempt: int) -> None:
        if attempt != self.record.attempt:
            return
        if stream == "stderr":
            status = parse_status(text)
            if status is not None and status.index < len(indices):
                self._on_status(indices[status.index], status)
            elif text == ".":
                self._evaluate()
            return
        tagged = split_tagged(text)
        if tagged is not None and tagged[0] < len(indices):
            self._on_log(indices[tagged[0]], tagged[1])

    def _on_log(self, index: int, text: str) -> None:
        info = self.infos[index]
        self.tails[index].append(text)
        self.last_output = time.monotonic()
        self._emit(
            LogLine(
                info.host, info.role, info.rank, text, level=line_level(text), job=self.record.job
            )
        )

    def _on_status(self, index: int, status) -> None:
        info = self.infos[index]
        stopping = self.phase in ("stopping", "stopped") or self._stop_requested()
        if status.state == "pending":
            new = replace(info, state="starting")
        elif status.state == "alive":
            new = replace(info, state="running", pid=status.pid, pgid=status.pgid)
        elif status.state == "exited":
            bad = "killed" if stopping else "failed"
            new = replace(
                info,
                state="exited" if status.exit_status == 0 else bad,
                exit_status=status.exit_status,
                pid=status.pid,
                pgid=status.pgid,
            )
        else:  # gone: no exit status and no process
            new = replace(
                info,
                state="killed" if stopping else "failed",
                exit_status=None,
                pid=status.pid,
                pgid=status.pgid,
            )
        if new != info:
            self.infos[index] = new
            self._emit(self.status())

    def _stop_requested(self) -> bool:
        return jobs.stop_marker(self.record.job).exists()

    # ---- decisions ---------------------------------------------------------------------------
    def _evaluate(self) -> None:
        if not self.supervising or self._acting is not None or self.phase in FINAL:
            return
        if self.phase not in ("starting", "running"):
            return
        if self._stop_requested():
            self._act(self._stopped_by_kill())
            return
        failed = next((i for i, p in enumerate(self.infos) if p.state == "failed"), None)
        if failed is not None:
            info = self.infos[failed]
            self._fault(
                f"{info.role} {info.rank} on {info.host}",
                describe_status(info.exit_status),
                host=info.host,
                index=failed,
            )
        elif all(p.state == "exited" for p in self.infos):
            self._act(self._drain_then("done", "every process exited with status 0"))
        elif self._workers_done():
            self._arm_finish_timer()
        elif self.phase == "starting" and all(p.state != "starting" for p in self.infos):
            self._set_phase("running")

    def _workers_done(self) -> bool:
        workers = [p for p in self.infos if p.role not in ("scheduler", "server")]
        return bool(workers) and all(p.state == "exited" for p in workers)

    def _arm_finish_timer(self) -> None:
        if self._finish_timer is None:
            loop = asyncio.get_running_loop()
            self._finish_timer = loop.call_later(
                self.options.finish_grace_s, self._finish_leftovers
            )

    def _finish_leftovers(self) -> None:
        if self._acting is None and self.phase not in FINAL:
            self._act(
                self._stop_then(
                    "done",
                    "workers finished; servers/scheduler stopped after "
                    f"{self.options.finish_grace_s:g} s",
                )
            )

    async def _stop_then(self, phase: str, message: str) -> None:
        await self._stop_everywhere("stopping")
        await self._drain_then(phase, message)

    async def _stopped_by_kill(self) -> None:
        """`imgscale kill` is ending the processes: let it, and step in only if it gives up."""
        self._set_phase("stopping", "stopped by imgscale kill")
        deadline = time.monotonic() + self.options.grace_s + KILL_WAIT_S
        while time.monotonic() < deadline and self._any_running():
            await asyncio.sleep(0.2)  # the status loop updates the processes' states meanwhile
        if self._any_running():
            await self._stop_everywhere("stopping")
        else:
            self.record = replace(self.record, clean=True)
        await self._drain_then("stopped", "stopped by imgscale kill")

    def _any_running(self) -> bool:
        return any(i.state in ("starting", "running") for i in self.infos)

    async def _drain_then(self, phase: str, message: str) -> None:
        """Finish once the logs' last lines have arrived (tail may lag the exit status a little)."""
        start = time.monotonic()
        while time.monotonic() - start < DRAIN_MAX_S:
            if time.monotonic() - max(self.last_output, start) >= DRAIN_QUIET_S:
                break
            await asyncio.sleep(0.1)  # polling the time of the last line, bounded by DRAIN_MAX_S
        self._finish(phase, message)

    async def _stall_watch(self, attempt: int) -> None:
        timeout = float(self.options.stall_timeout_s or 0)
        while attempt == self.record.attempt and self.phase not in FINAL:
            idle = time.monotonic() - self.last_output
            if idle >= timeout and self.phase in ("starting", "running"):
                self._fault("job " + self.record.job, f"stalled: no new log line for {idle:.0f} s")
                return
            await asyncio.sleep(max(0.2, min(1.0, timeout - idle)))  # the watchdog's tick

    def _host_lost(self, host: str, indices: list[int], reason: str) -> None:
        for i in indices:
            if self.infos[i].state in ("starting", "running"):
                self.infos[i] = replace(self.infos[i], state="lost")
        self._emit(HostState(host, False, reason))
        if self.phase in ("starting", "running"):
            self._fault(f"host {host}", f"lost: {reason}", host=host)

    def _fault(
        self, source: str, message: str, *, host: str | None = None, index: int | None = None
    ) -> None:
        if not self.supervising or self._acting is not None or self.phase in FINAL:
            return
        if host is not None:
            self.host_faults[host] += 1
        self._act(self._handle_fault(source, message, host, index))

    def _act(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            finally:
                self._acting = None

        self._acting = asyncio.create_task(run())

    async def _cancel_acting(self) -> None:
        task, self._acting = self._acting, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _handle_fault(
        self, source: str, message: str, host: str | None, index: int | None
    ) -> None:
        while True:
            last = await self._last_lines(index) if index is not None else ()
            await self._stop_everywhere("stopping")
            self._emit(
                Failure(
                    source,
                    message,
                    diagnosis=self._diagnosis(message),
                    last_lines=last,
                    job=self.record.job,
                )
            )
            self._exclude_if_failing(host)
            if self._stop_requested() or self.record.restarts >= self.options.max_restarts:
                await self._drain_then("failed", f"{source} {message}")
                return
            failed = await self._relaunch()
            if failed is None:
                return
            host, index = failed[0], None
            source, message = f"host {host}", f"could not start processes: {failed[1]}"
            self.host_faults[host] += 1

    def _diagnosis(self, message: str) -> str:
        if "SIGKILL" in message:
            return "killed with SIGKILL: the kernel's OOM killer or a person; check memory"
        if "stalled" in message:
            return "no process printed anything; a dead peer can hang ps-lite's dist_sync"
        return ""

    def _exclude_if_failing(self, host: str | None) -> None:
        if not host:
            return
        limit = self.options.exclude_after
        keeps_failing = bool(limit and self.host_faults[host] >= limit)
        if keeps_failing and host not in self.record.excluded and len(self._hosts_in_use()) > 1:
            self.record = replace(self.record, excluded=self.record.excluded + (host,))

    async def _last_lines(self, index: int) -> tuple[str, ...]:
        proc = self.record.processes[index]
        try:
            transport = await self.pool.get(proc.host)
            result = await transport.run(
                f"tail -n {self.options.last_lines} -- {shell_path(proc.log_path)}", timeout=10
            )
            if result.exit_status == 0:
                return tuple(result.stdout.splitlines())
        except TransportError:
            pass
        return tuple(self.tails[index])

    async def _relaunch(self) -> tuple[str, str] | None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self._final.clear()
        if self._finish_timer is not None:
            self._finish_timer.cancel()
            self._finish_timer = None
        self.record = replace(self.record, restarts=self.record.restarts + 1)
        self._set_phase("relaunching", f"attempt {self.record.attempt + 1}")
        return await self._start_attempt(self.record.attempt + 1)

    # ---- stopping ----------------------------------------------------------------------------
    async def _stop_everywhere(self, phase: str) -> None:
        self._set_phase(phase)
        by_host: dict[str, list[str]] = collections.defaultdict(list)
        for proc in self.record.processes + self.record.past_processes:
            by_host[proc.host].append(proc.prefix)
        done = await asyncio.gather(*(self._kill_on(h, p) for h, p in by_host.items()))
        self.record = replace(self.record, clean=all(done))
        for i, info in enumerate(self.infos):
            if info.state in ("starting", "running"):
                self.infos[i] = replace(info, state="killed")

    async def _kill_on(self, host: str, prefixes: list[str]) -> bool:
        """End the job's process groups on one host; False if some may be left there."""
        grace = self.options.grace_s
        try:
            transport = await self.pool.get(host)
            result = await transport.run(
                kill_command(self.record.job, prefixes, grace), timeout=grace + 20
            )
        except TransportError as exc:
            self._emit(
                Failure(
                    f"host {host}",
                    f"could not stop the job's processes: {exc.reason}",
                    advice=(f"run `imgscale kill {self.record.job}` when it is back",),
                    job=self.record.job,
                )
            )
            return False
        report = parse_kill(result.stdout)
        if not report.complete:
            self._emit(
                Failure(
                    f"host {host}",
                    "stopping did not finish: " + result.stderr[-300:],
                    job=self.record.job,
                )
            )
        return report.complete and not report.stuck

    def _finish(self, phase: str, message: str) -> None:
        if all(i.state in ("exited", "killed", "failed") for i in self.infos):
            self.record = replace(self.record, clean=self.record.clean or phase == "done")
        if self._finish_timer is not None:
            self._finish_timer.cancel()
            self._finish_timer = None
        self._set_phase(phase, message)
        self._final.set()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()

    # ---- watch-only: follow the supervising process's record ---------------------------------
    async def _follow_record(self) -> None:
        while True:
            await asyncio.sleep(1.0)  # the record file is polled: another process writes it
            try:
                record = jobs.load(self.record.job)
            except UserError:  # being rewritten or removed: read it on the next tick
                continue
            if record.attempt != self.record.attempt:
                for task in self._tasks:
                    if task is not asyncio.current_task():
                        task.cancel()
                self._tasks = [t for t in self._tasks if t is asyncio.current_task()]
                self.record = record
                self._reset_infos()
                self._watch(None)
            self.record = record
            if record.state != self.phase or record.message != self.message:
                self.phase, self.message = record.state, record.message
                self._emit(self.status())
            if not record.active:
                self._final.set()
                return
