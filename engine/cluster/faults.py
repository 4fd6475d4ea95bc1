"""The supervisor's fault and relaunch policy: what the processes' states mean for the job, what a
fault is called, and whether the job is relaunched and on which hosts. Pure decisions; supervisor.Job
carries them out.

A process that exits non-zero (or vanishes without an exit status), a lost host or a stalled job is a
fault: the whole job is stopped and, while restarts are left, relaunched from its newest checkpoint
(why not in place: supervisor.py's docstring and docs/cluster.md).
"""

from __future__ import annotations

import collections
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.events import ProcessInfo

from .jobs import JobRecord

FINAL = ("done", "failed", "stopped")
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
    failed = next((i for i, p in enumerate(infos) if p.state == "failed"), None)
    if failed is not None:
        return FAILED, failed
    if all(p.state == "exited" for p in infos):
        return DONE, None
    if workers_done(infos):
        return WORKERS_DONE, None
    if phase == "starting" and all(p.state != "starting" for p in infos):
        return RUNNING, None
    return "", None


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
