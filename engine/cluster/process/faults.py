"""The supervisor's fault and relaunch policy: what the processes' states mean for the job, what a
fault is called, and whether the job is relaunched and on which hosts; ``FaultPolicy.recover`` carries
a fault through (stop, report, exclude, relaunch) on the job it is given (supervisor.Job).

A process that exits non-zero (or vanishes without an exit status), a lost host or a stalled job is a
fault: the whole job is stopped and, while restarts are left, relaunched from its newest checkpoint
(why not in place: supervisor.py's docstring and docs/cluster.md).
"""

from __future__ import annotations

import collections
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from engine.cluster.process.jobs import JobRecord
from engine.events import Event, Failure, ProcessInfo

FINAL = ("done", "failed", "stopped")  # a job state that never changes again (JobState.state)
LIVE = ("starting", "running")  # a process (or a job's phase) that may still change by itself
# What the states of a job's processes call for (see next_step).
KILLED, FAILED, DONE, WORKERS_DONE, RUNNING = "killed", "failed", "done", "workers-done", "running"


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


def diagnosis(message: str) -> str:
    """A likely cause for a fault's message, or ""."""
    if "SIGKILL" in message:
        return "killed with SIGKILL: the kernel's OOM killer or a person; check memory"
    if "stalled" in message:
        return "no process printed anything; a dead peer can hang ps-lite's dist_sync"
    return ""


def workers_done(infos: Sequence[ProcessInfo]) -> bool:
    workers = [p for p in infos if p.role not in ("scheduler", "server")]
    return bool(workers) and all(p.state == "exited" for p in workers)


def next_step(
    infos: Sequence[ProcessInfo], phase: str, stop_requested: bool
) -> tuple[str, int | None]:
    """What a running job's process states call for: (one of the steps above or "", failed index)."""
    if stop_requested:
        return KILLED, None
    failed = [i for i, p in enumerate(infos) if p.state == "failed"]
    if failed:
        # A process killed by a signal is the cause; peers that then failed in a collective are not.
        killed = [i for i in failed if (infos[i].exit_status or 0) > 128]
        return FAILED, (killed or failed)[0]
    if all(p.state == "exited" for p in infos):
        return DONE, None
    if workers_done(infos):
        return WORKERS_DONE, None
    if phase == "starting" and all(p.state != "starting" for p in infos):
        return RUNNING, None
    return "", None


@dataclass(frozen=True)
class Fault:
    """Why the job must stop: ``source`` (a process or host) and what happened to it."""

    source: str
    message: str
    host: str | None = None  # the host to blame, if any
    index: int | None = None  # the failed process, whose last log lines are quoted

    @classmethod
    def not_started(cls, host: str, reason: str) -> Fault:
        return cls(f"host {host}", f"could not start processes: {reason}", host=host)


class Recoverable(Protocol):
    """What the policy needs of a job to stop, report and relaunch it (supervisor.Job)."""

    record: JobRecord

    def emit(self, event: Event) -> None: ...

    def stop_requested(self) -> bool: ...

    async def last_lines(self, index: int) -> tuple[str, ...]: ...

    async def stop_everywhere(self) -> None: ...

    async def drain_then(self, phase: str, message: str) -> None: ...

    async def next_attempt(self) -> tuple[str, str] | None:
        """Start a new attempt; (host, why) if a host could not start its processes."""
        ...


@dataclass
class FaultPolicy:
    """Counts faults per host; decides exclusions and relaunches."""

    max_restarts: int = 0  # automatic relaunches after a fault
    exclude_after: int = 0  # leave a host out after this many faults on it (0: never)
    host_faults: collections.Counter[str] = field(default_factory=collections.Counter)

    def count(self, host: str | None) -> None:
        if host is not None:
            self.host_faults[host] += 1

    def excluded(self, record: JobRecord, host: str | None) -> tuple[str, ...]:
        """The record's excluded hosts, plus ``host`` if it keeps failing and others are left."""
        limit = self.exclude_after
        if not host or not limit or self.host_faults[host] < limit or host in record.excluded:
            return record.excluded
        in_use = [h for h in record.host_names if h not in record.excluded]
        return record.excluded + (host,) if len(in_use) > 1 else record.excluded

    def relaunch(self, record: JobRecord, stop_requested: bool) -> bool:
        return not stop_requested and record.restarts < self.max_restarts

    async def recover(self, job: Recoverable, fault: Fault) -> None:
        """Stop the job, report the fault, and relaunch it while restarts are left."""
        while True:
            await self._report(job, fault)
            job.record = replace(job.record, excluded=self.excluded(job.record, fault.host))
            if not self.relaunch(job.record, job.stop_requested()):
                await job.drain_then("failed", f"{fault.source} {fault.message}")
                return
            failed = await job.next_attempt()
            if failed is None:
                return
            fault = Fault.not_started(*failed)
            self.count(fault.host)

    @staticmethod
    async def _report(job: Recoverable, fault: Fault) -> None:
        last = await job.last_lines(fault.index) if fault.index is not None else ()
        await job.stop_everywhere()
        job.emit(
            Failure(
                fault.source,
                fault.message,
                diagnosis=diagnosis(fault.message),
                last_lines=last,
                job=job.record.job,
            )
        )
