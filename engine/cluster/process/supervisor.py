"""Supervision of a detached job: watch every process on every host, stop the job on a fault, relaunch it.

The parts: watcher.HostWatcher follows each host over one long-lived channel (detach.watch_command),
reporting every process's state twice a second and its log (watcher.Processes keeps what they saw);
faults.py decides what states mean and carries a fault through (FaultPolicy.recover: stop, report,
exclude a host, relaunch); kill.kill_processes stops the job on every host. ``Job`` ties them
together and is the API. A process that exits non-zero (or vanishes without an exit status,
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
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from engine.cluster.hostpool import HostPool
from engine.cluster.process import jobs
from engine.cluster.process.alerts import AlertOptions, Notifier, Reader
from engine.cluster.process.detach import DetachedProcess, RemoteStatus
from engine.cluster.process.faults import (
    DONE,
    FAILED,
    FINAL,
    KILLED,
    LIVE,
    RUNNING,
    WORKERS_DONE,
    Fault,
    FaultPolicy,
    describe_status,
    next_step,
)
from engine.cluster.process.jobevents import ClusterJob, JobEvents
from engine.cluster.process.jobs import JobRecord, ProcRecord
from engine.cluster.process.kill import kill_processes
from engine.cluster.process.watcher import (
    START_TIMEOUT_S,
    HostWatcher,
    Processes,
    Start,
    start_hosts,
    tail_of,
)
from engine.errors import UserError
from engine.events import Event, EventSink, HostState, JobState

DRAIN_QUIET_S = 0.6  # a job is final once its logs were quiet this long …
DRAIN_MAX_S = 3.0  # … or after this long
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


class Job(JobEvents, ClusterJob):
    """A job's processes on its hosts, watched; supervised when this object holds the job's lock.

    It is each host watcher's listener (watcher.WatchListener), and what the fault policy drives
    (faults.Recoverable: emit, stop_requested, last_lines, stop_everywhere, drain_then, next_attempt).
    """

    def __init__(
        self,
        record: JobRecord,
        pool: HostPool,
        *,
        planner: Planner | None = None,
        options: SuperviseOptions = SuperviseOptions(),
        sink: EventSink | None = None,
        alerts: AlertOptions | None = None,
        reader: Reader | None = None,
    ) -> None:
        self.record = record
        self.notifier = None if alerts is None else Notifier(record.job, alerts, self.emit, reader)
        self.pool = pool
        self.planner = planner
        self.options = options
        self._init_events(sink)
        self.policy = FaultPolicy(options.max_restarts, options.exclude_after)
        self.lock = jobs.SupervisorLock(record.job)
        self.phase = record.state
        self.message = record.message
        self.procs = Processes(record.processes, options.last_lines)
        self._tasks: list[asyncio.Task] = []
        self._starts: dict[str, Start] = {}  # the current attempt's starts, by host
        self._acting: asyncio.Task | None = None
        self._final = asyncio.Event()
        self._finish_timer: asyncio.TimerHandle | None = None

    # ---- public API ------------------------------------------------------------------------
    @property
    def job_id(self) -> str:
        return self.record.job

    @property
    def supervising(self) -> bool:
        return self.lock.held

    def status(self) -> JobState:
        return JobState(
            self.record.job, self.phase, tuple(self.procs.infos), self.record.restarts, self.message
        )

    async def start(self) -> None:
        """Start the record's attempt on every host (this object supervises it)."""
        self.lock.take(required=True)
        self._start_failed(await self._start_attempt(self.record.attempt))

    async def attach(self) -> None:
        """Watch an already running job; supervise it too unless another process does."""
        if self.lock.take():
            self.record = replace(self.record, launcher_pid=os.getpid())
        self._set_phase(self.record.state)
        if not self.record.active:
            await self._replay_tails(self.options.tail_lines)
            self._final.set()
            return
        self._watch(self.options.tail_lines)
        if not self.supervising:
            self._tasks.append(asyncio.create_task(self._follow_record()))

    async def stop(self, message: str = "stopped on request") -> JobState:
        """Stop every process on every host; the job ends as ``stopped``."""
        if self.phase in FINAL and not self.procs.any_running():
            return self.status()  # nothing left to stop; keep the outcome it had
        await self._cancel_acting()
        if not self.supervising:  # tell the supervising process not to relaunch
            jobs.stop_marker(self.record.job).touch()
        await self._stop_then("stopped", message)
        return self.status()

    async def kill_now(self, message: str = "killed on request") -> JobState:
        """Stop without the grace period (a second Ctrl-C): KILL every process group of the job
        on every host, wait for each host's answer, and end the job as ``stopped``."""
        await self._cancel_acting()
        if not self.supervising:  # tell the supervising process not to relaunch
            jobs.stop_marker(self.record.job).touch()
        self._set_phase("stopping", message)
        await self._starts_answered()
        clean = await kill_processes(self.record, self.pool, 0, self.emit)
        self.record = replace(self.record, clean=clean)
        self.procs.mark("killed")
        self._finish("stopped", message)
        return self.status()

    async def relaunch(self, exclude: Sequence[str] = ()) -> JobState:
        """Stop what still runs and start a new attempt (resume hook applied); on request."""
        self.lock.take(required=True)  # only one process may start attempts
        await self._cancel_acting()
        self.record = replace(self.record, excluded=tuple({*self.record.excluded, *exclude}))
        if self.procs.any_running():
            await self.stop_everywhere()
        self._start_failed(await self.next_attempt())
        return self.status()

    async def wait(self) -> JobState:
        await self._final.wait()
        return self.status()

    async def close(self) -> None:
        """Stop watching and supervising; the job's processes keep running on their hosts."""
        await self._cancel_acting()
        await self._cancel_tasks()
        if self.notifier is not None:
            await self.notifier.drain()
        self.lock.release()
        await self.pool.close()
        self._end_events()

    # ---- what the host watchers report (watcher.WatchListener) ------------------------------
    def watching(self, attempt: int) -> bool:
        return attempt == self.record.attempt and self.phase not in FINAL

    def current(self, attempt: int) -> bool:
        return attempt == self.record.attempt

    def on_log(self, index: int, text: str) -> None:
        self.emit(self.procs.log(index, text, self.record.job))

    def on_status(self, index: int, status: RemoteStatus) -> None:
        stopping = self.phase in ("stopping", "stopped") or self.stop_requested()
        if self.procs.update(index, status, stopping):
            self.emit(self.status())

    def on_round(self) -> None:
        self._evaluate()
        if self.notifier is not None and self.supervising:
            self.notifier.tick()

    def on_host(self, state: HostState) -> None:
        self.emit(state)

    def on_lost(self, host: str, indices: Sequence[int], reason: str) -> None:
        self.procs.mark("lost", indices)
        self.emit(HostState(host, False, reason))
        if self.phase in LIVE:
            self._fault(Fault(f"host {host}", f"lost: {reason}", host))

    # ---- events and the record ---------------------------------------------------------------
    def emit(self, event: Event) -> None:
        super().emit(event)
        if self.notifier is not None and self.supervising:  # only the supervisor alerts
            self.notifier.see(event, self.record.attempt)

    def _set_phase(self, phase: str, message: str | None = None) -> None:
        self.phase = phase
        if message is not None:
            self.message = message
        self.emit(self.status())
        if self.supervising:
            self.record = jobs.save(replace(self.record, state=self.phase, message=self.message))

    def stop_requested(self) -> bool:
        return jobs.stop_marker(self.record.job).exists()

    # ---- starting and watching ---------------------------------------------------------------
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
        self.procs.reset(self.record.processes)
        self._set_phase("starting", f"attempt {attempt}")
        self.procs.last_output = time.monotonic()
        return await self._launch_on_hosts(planned)

    async def _launch_on_hosts(self, planned: list[Planned]) -> tuple[str, str] | None:
        """Start every host's processes through its watch channel (one SSH session per host)."""
        by_host: dict[str, list[DetachedProcess]] = collections.defaultdict(list)
        for p in planned:
            by_host[p.record.host].append(p.process)

        def watch(starts: dict[str, Start]) -> None:
            self._starts = starts
            self._watch(None, starts)

        return await start_hosts(self.pool, by_host, watch)

    def _start_failed(self, failed: tuple[str, str] | None) -> None:
        if failed:
            self._fault(Fault.not_started(*failed))

    def _watch(self, tail_lines: int | None, starts: dict[str, Start] | None = None) -> None:
        """Watch every host; ``starts`` holds the processes a host's first channel starts."""
        by_host: dict[str, list[int]] = collections.defaultdict(list)
        for index, proc in enumerate(self.record.processes):
            by_host[proc.host].append(index)
        for host, indices in by_host.items():
            watcher = HostWatcher(
                self.pool,
                host,
                indices,
                [self.record.processes[i].prefix for i in indices],
                self.record.attempt,
                self,
                poll_s=self.options.poll_s,
                lost_timeout_s=self.options.lost_timeout_s,
                tail=tail_lines,
                start=(starts or {}).get(host),
            )
            self._tasks.append(asyncio.create_task(watcher.run()))
        if self.supervising and self.options.stall_timeout_s:
            self._tasks.append(asyncio.create_task(self._stall_watch(self.record.attempt)))

    async def _replay_tails(self, lines: int | None) -> None:
        """A finished job: the last lines each process wrote, as re-attaching to a running one shows."""
        if not lines:
            return
        if not self.procs.infos:
            self.procs.reset(self.record.processes)
        for index, info in enumerate(self.procs.infos):
            for text in await tail_of(self.pool, info.host, info.log_path, lines) or ():
                self.on_log(index, text)

    async def _stall_watch(self, attempt: int) -> None:
        timeout = float(self.options.stall_timeout_s or 0)
        while self.watching(attempt):
            idle = time.monotonic() - self.procs.last_output
            if idle >= timeout and self.phase in LIVE:
                message = f"stalled: no new log line for {idle:.0f} s"
                self._fault(Fault("job " + self.record.job, message))
                return
            await asyncio.sleep(max(0.2, min(1.0, timeout - idle)))  # the watchdog's tick

    async def _follow_record(self) -> None:
        """Watch-only: another process supervises; follow its record of the job."""
        while True:
            await asyncio.sleep(1.0)  # the record file is polled: another process writes it
            try:
                record = jobs.load(self.record.job)
            except UserError:  # being rewritten or removed: read it on the next tick
                continue
            if record.attempt != self.record.attempt:
                await self._cancel_tasks(keep_current=True)
                self.record = record
                self.procs.reset(record.processes)
                self._watch(None)
            self._follow_state(record)
            if not record.active:
                self._final.set()
                return

    def _follow_state(self, record: JobRecord) -> None:
        self.record = record
        if record.state != self.phase or record.message != self.message:
            self.phase, self.message = record.state, record.message
            self.emit(self.status())

    async def _cancel_tasks(self, keep_current: bool = False) -> None:
        """Cancel the watch tasks but the caller's; only close() waits for them to end."""
        here = asyncio.current_task()
        others = [t for t in self._tasks if t is not here]
        for task in others:
            task.cancel()
        self._tasks = [t for t in self._tasks if t is here] if keep_current else []
        if not keep_current:
            await asyncio.gather(*others, return_exceptions=True)

    # ---- decisions (faults.py) ---------------------------------------------------------------
    def _evaluate(self) -> None:
        """After each status round: act on what the processes' states call for."""
        if not self.supervising or self._acting is not None or self.phase not in LIVE:
            return
        step, index = next_step(self.procs.infos, self.phase, self.stop_requested())
        if step == KILLED:
            self._act(self._stopped_by_kill())
        elif step == FAILED and index is not None:
            info = self.procs.infos[index]
            source = f"{info.role} {info.rank} on {info.host}"
            self._fault(Fault(source, describe_status(info.exit_status), info.host, index))
        elif step == DONE:
            self._act(self.drain_then("done", "every process exited with status 0"))
        elif step == WORKERS_DONE:
            self._arm_finish_timer()
        elif step == RUNNING:
            self._set_phase("running")

    def _arm_finish_timer(self) -> None:
        if self._finish_timer is None:
            loop = asyncio.get_running_loop()
            self._finish_timer = loop.call_later(
                self.options.finish_grace_s, self._finish_leftovers
            )

    def _finish_leftovers(self) -> None:
        if self._acting is None and self.phase not in FINAL:
            grace = f"{self.options.finish_grace_s:g} s"
            message = f"workers finished; servers/scheduler stopped after {grace}"
            self._act(self._stop_then("done", message))

    def _fault(self, fault: Fault) -> None:
        if not self.supervising or self._acting is not None or self.phase in FINAL:
            return
        self.policy.count(fault.host)
        self._act(self.policy.recover(self, fault))

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

    async def last_lines(self, index: int) -> tuple[str, ...]:
        """The failed process's last log lines (for the policy's Failure)."""
        proc = self.record.processes[index]
        lines = await tail_of(self.pool, proc.host, proc.log_path, self.options.last_lines)
        return tuple(self.procs.tails[index] if lines is None else lines)

    async def next_attempt(self) -> tuple[str, str] | None:
        """Relaunch: a new attempt (resume hook applied); (host, why) if a host did not start."""
        await self._cancel_tasks(keep_current=True)
        self._final.clear()
        self._cancel_finish_timer()
        self.record = replace(self.record, restarts=self.record.restarts + 1)
        self._set_phase("relaunching", f"attempt {self.record.attempt + 1}")
        return await self._start_attempt(self.record.attempt + 1)

    # ---- stopping and finishing --------------------------------------------------------------
    async def stop_everywhere(self) -> None:
        """Every recorded process group of every attempt ended on its host (kill.py)."""
        self._set_phase("stopping")
        await self._starts_answered()
        clean = await kill_processes(self.record, self.pool, self.options.grace_s, self.emit)
        self.record = replace(self.record, clean=clean)
        self.procs.mark("killed")

    async def _starts_answered(self) -> None:
        """Wait until every host still starting this attempt has answered (bounded like a start).

        A fault can arrive while another host is still starting: a kill sent then would find no
        process there, and the process would begin after it and outlive the job. Once a host says
        "started", its processes have their pid records, so the kill finds them.
        """
        pending = [s.done for s in self._starts.values() if not s.done.done()]
        if pending:
            await asyncio.wait(pending, timeout=START_TIMEOUT_S)

    async def _stop_then(self, phase: str, message: str) -> None:
        await self.stop_everywhere()
        await self.drain_then(phase, message)

    async def _stopped_by_kill(self) -> None:
        """`imgscale kill` is ending the processes: let it, and step in only if it gives up."""
        self._set_phase("stopping", "stopped by imgscale kill")
        deadline = time.monotonic() + self.options.grace_s + KILL_WAIT_S
        while time.monotonic() < deadline and self.procs.any_running():
            await asyncio.sleep(0.2)  # the status loop updates the processes' states meanwhile
        if self.procs.any_running():
            await self.stop_everywhere()
        else:
            self.record = replace(self.record, clean=True)
        await self.drain_then("stopped", "stopped by imgscale kill")

    async def drain_then(self, phase: str, message: str) -> None:
        """Finish once the logs' last lines have arrived (tail may lag the exit status a little)."""
        start = time.monotonic()
        while time.monotonic() - start < DRAIN_MAX_S:
            if time.monotonic() - max(self.procs.last_output, start) >= DRAIN_QUIET_S:
                break
            await asyncio.sleep(0.1)  # polling the time of the last line, bounded by DRAIN_MAX_S
        self._finish(phase, message)

    def _finish(self, phase: str, message: str) -> None:
        if self.procs.all_ended():
            self.record = replace(self.record, clean=self.record.clean or phase == "done")
        self._cancel_finish_timer()
        self._set_phase(phase, message)
        self._final.set()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()

    def _cancel_finish_timer(self) -> None:
        if self._finish_timer is not None:
            self._finish_timer.cancel()
            self._finish_timer = None
