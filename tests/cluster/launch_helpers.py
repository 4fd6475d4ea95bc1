"""Helpers for the launcher's cluster tests: collect a job's events, wait on them, find leftovers."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from engine.events import Failure, JobState, LogLine

HERE = Path(__file__).parent
MX_JOB = str(HERE / "mx_dist_job.py")


class Events:
    """An EventSink that keeps every event and lets a test wait for one, with a deadline."""

    def __init__(self) -> None:
        self.events: list = []
        self.times: list[float] = []
        self._changed = asyncio.Event()

    def __call__(self, event) -> None:
        self.events.append(event)
        self.times.append(time.monotonic())
        self._changed.set()

    async def wait_for(self, predicate, timeout: float, what: str):
        """The first event (old or new) satisfying ``predicate``; fails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for i in range(seen, len(self.events)):
                if predicate(self.events[i]):
                    return self.events[i], self.times[i]
            seen = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; last events: "
                    f"{self.events[-5:]}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    def logs(self, role=None, rank=None) -> list[LogLine]:
        return [
            e
            for e in self.events
            if isinstance(e, LogLine)
            and (role is None or e.role == role)
            and (rank is None or e.rank == rank)
        ]

    def failures(self) -> list[Failure]:
        return [e for e in self.events if isinstance(e, Failure)]

    def states(self) -> list[str]:
        return [e.state for e in self.events if isinstance(e, JobState)]


def local_group_alive(pgid: int) -> bool:
    """For jobs of the local launcher (no hosts file): their groups are on this machine."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)  # polling a condition with a deadline


def pid_record(prefix: str) -> tuple[int, int, int]:
    wrapper, pgid, child = map(int, Path(prefix + ".pid").read_text().split())
    return wrapper, pgid, child


def watchers_of(run_dir: str) -> list[int]:
    """Pids of our watch processes (status loop, tail) still following logs under ``run_dir``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (b"imgscale-status" in argv or argv[:1] == [b"tail"]) and any(
            a.startswith(run_dir.encode()) for a in argv
        ):
            found.append(int(entry))
    return found


async def run_to_end(spec, events):
    """Launch SPEC, wait for its final state and close it, whatever happens; (job, final state)."""
    from engine.train.launch.launch import launch

    job = await launch(spec, sink=events)
    try:
        final = await job.wait()
    finally:
        await job.close()
    return job, final
