"""Reopening the console on a finished job shows its newest attempt's last lines (no lost events)."""

from __future__ import annotations

import asyncio
import sys

from engine import workspace as wsmod
from engine.api import jobs as console_jobs
from engine.cluster.process import jobs
from engine.events import JobState, LogLine
from engine.train.launch.launch import LaunchSpec, launch, open_job

SAY = "import os; print('hello from', os.environ.get('IMGSCALE_JOB'), flush=True)"


def say_hello(tmp_path) -> LaunchSpec:
    """One local worker that prints a line naming its job."""
    return LaunchSpec(
        command=(sys.executable, "-c", SAY),
        num_workers=1,
        num_servers=0,
        launcher="local",
        run_root=str(tmp_path / "runs"),
        cwd=str(tmp_path),
    )


async def run_to_end(job) -> None:
    await asyncio.wait_for(job.wait(), 60)
    await job.close()


async def lines_of(console, count: int) -> list[LogLine]:
    """The first `count` log lines the console's stream gives."""
    found: list[LogLine] = []

    async def read() -> None:
        async for event in console.events():
            if isinstance(event, LogLine):
                found.append(event)
                if len(found) >= count:
                    return

    await asyncio.wait_for(read(), 30)
    return found


async def test_reopening_a_stopped_relaunched_job_shows_its_newest_attempts_log(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("IMGSCALE_HOME", str(tmp_path / "home"))
    ws = wsmod.create(tmp_path / "ws", {"root": "images"})
    spec = say_hello(tmp_path)
    first = await launch(spec)
    await run_to_end(first)
    again = open_job(first.job_id)
    await again.attach()
    await again.relaunch()  # a second attempt, in its own run folder
    await run_to_end(again)
    record = jobs.load(first.job_id)
    assert record.attempt == 1 and record.state == "done"

    console = await console_jobs.attach(ws, first.job_id, lambda event: None)
    lines = await lines_of(console, 1)
    assert "hello from" in lines[0].text
    assert "/a1/" in record.processes[0].log_path  # the lines come from the newest attempt's log
    assert console.job.status().state == "done" and isinstance(console.job.status(), JobState)
    await console.detach()


async def test_a_relaunch_from_the_console_shows_each_line_once(tmp_path, monkeypatch):
    from engine import api

    monkeypatch.setenv("IMGSCALE_HOME", str(tmp_path / "home"))
    ws = wsmod.create(tmp_path / "ws", {"root": "images"})
    session = api.Session(ws, asyncio.get_running_loop())
    spec = say_hello(tmp_path)
    session.follower.follow(console_jobs.ConsoleJob(await launch(spec), "test-io"))
    seen: list = []

    async def until(predicate) -> None:
        while not predicate():
            seen.append(await session.stream.queue.get())

    def finished(attempts: int) -> bool:
        done = [e for e in seen if isinstance(e, JobState) and e.state == "done"]
        return len(done) >= attempts

    await asyncio.wait_for(until(lambda: finished(1)), 60)
    await session.relaunch()
    await asyncio.wait_for(until(lambda: finished(2)), 60)
    while not session.stream.queue.empty():
        seen.append(session.stream.queue.get_nowait())
    hello = [e for e in seen if isinstance(e, LogLine) and "hello from" in e.text]
    assert len(hello) == 2, hello  # one per attempt, not the second one twice
    await session.close()
