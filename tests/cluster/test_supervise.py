"""Supervision: a SIGKILLed worker, a stalled job and a failing worker are detected, stopped everywhere
(no process left on any host) and relaunched with the resume hook's command."""

from __future__ import annotations

import shutil
import signal

import pytest
from launch_helpers import (
    MX_JOB,
    Events,
    local_group_alive,
    pid_record,
    run_to_end,
    wait_until,
    watchers_of,
)

from engine.cluster.process import jobs
from engine.events import JobState
from engine.train.launch.engines import set_option
from engine.train.launch.launch import LaunchSpec, launch

pytestmark = [pytest.mark.cluster]


FAIL_RANK_1 = 'echo "about to fail on $IMGSCALE_HOST"; if [ "$IMGSCALE_RANK" = 1 ]; then exit 3; fi; exec sleep 60'


def resume_short(command, attempt):
    """The relaunch resumes 'from epoch 0' and runs a short job (stands in for --load-epoch N)."""
    command = set_option(command, "--batches", "4")
    command = set_option(command, "--pause", "0")
    return set_option(command, "--load-epoch", "0")


@pytest.mark.mxnet
@pytest.mark.slow
async def test_sigkilled_worker_is_detected_stopped_everywhere_and_relaunched(cluster, state_home):
    events = Events()
    spec = LaunchSpec(
        command=("python", MX_JOB, "--batches", "100000", "--pause", "0.05"),
        num_workers=2,
        num_servers=2,
        hosts_file=str(cluster.hosts_file),
        run_root=str(state_home / "runs"),
        max_restarts=1,
        grace_s=3,
    )
    job = await launch(spec, sink=events, resume=resume_short)
    try:
        await events.wait_for(
            lambda e: getattr(e, "role", "") == "worker" and e.rank == 1 and "Speed:" in e.text,
            120,
            "worker 1 progress",
        )
        first = job.record.processes
        victim = next(p for p in first if p.role == "worker" and p.rank == 1)
        groups = [(p.host, pid_record(p.prefix)[1]) for p in first]
        # the pid record holds the pid as the victim's own host numbers it
        cluster.kill(victim.host, pid_record(victim.prefix)[2], signal.SIGKILL)

        # how fast it is noticed is measured in benchmarks; here: that it is, with a deadline
        await events.wait_for(
            lambda e: isinstance(e, JobState) and e.state == "stopping", 60, "the job stopping"
        )
        failure, _ = await events.wait_for(
            lambda e: type(e).__name__ == "Failure", 60, "the failure"
        )
        assert failure.source == f"worker 1 on {victim.host}"
        assert "SIGKILL" in failure.message and "137" in failure.message
        assert any("Speed:" in line for line in failure.last_lines)
        # stopped on every host: every process group of the first attempt is gone
        assert [g for g in groups if cluster.group_alive(*g)] == []

        final = await job.wait()
        old_run = str(state_home / "runs" / job.job_id / "a0")
        await wait_until(lambda: watchers_of(old_run) == [], 10, "attempt 0's watchers to end")
    finally:
        await job.close()
    assert final.state == "done" and final.restarts == 1, events.failures()
    assert job.record.attempt == 1
    run_dir = str(state_home / "runs" / job.job_id)
    await wait_until(lambda: watchers_of(run_dir) == [], 10, "every watcher to end after close")
    texts = [e.text for e in events.logs("worker")]
    assert sum("load_epoch=0" in t for t in texts) == 2  # both workers ran the resumed command
    assert "relaunching" in events.states()
    assert cluster.processes_of(job.job_id) == {}


async def test_stalled_job_is_stopped_and_reported(cluster, state_home):
    events = Events()
    spec = LaunchSpec(
        command=("sh", "-c", "echo working; exec sleep 60"),
        num_workers=2,
        num_servers=0,
        hosts_file=str(cluster.hosts_file),
        run_root=str(state_home / "runs"),
        stall_timeout_s=2,
        grace_s=1,
    )
    job, final = await run_to_end(spec, events)
    assert final.state == "failed"
    failure = events.failures()[0]
    assert "stalled: no new log line for 2 s" in failure.message
    assert {p.state for p in final.processes} == {"killed"}
    assert cluster.processes_of(job.job_id) == {}


async def test_failing_worker_exhausts_restarts_and_names_process_host_status_and_lines(
    cluster, state_home
):
    events = Events()
    spec = LaunchSpec(
        command=("sh", "-c", FAIL_RANK_1),
        num_workers=2,
        num_servers=0,
        hosts_file=str(cluster.hosts_file),
        run_root=str(state_home / "runs"),
        max_restarts=1,
        grace_s=1,
    )
    job, final = await run_to_end(spec, events)
    assert final.state == "failed" and final.restarts == 1
    failures = events.failures()
    assert len(failures) == 2  # the first attempt and its relaunch
    for failure in failures:
        assert failure.source == "worker 1 on node2"
        assert failure.message == "exited with status 3"
        assert failure.last_lines == ("about to fail on node2",)
    assert jobs.load(job.job_id).state == "failed"
    assert cluster.processes_of(job.job_id) == {}


async def test_a_fault_while_another_host_still_starts_leaves_nothing_running_there(
    cluster, state_home
):
    """node2's worker fails at once while node1 is still starting its own (a slow mkdir there, the
    start's first step): a kill sent before node1 answered would find nothing to end, and node1's
    worker would begin after it and outlive the job."""
    slow = state_home / "slow-bin"
    slow.mkdir()
    mkdir = slow / "mkdir"
    mkdir.write_text(f'#!/bin/sh\nsleep 1\nexec {shutil.which("mkdir")} "$@"\n')
    mkdir.chmod(0o755)
    events = Events()
    spec = LaunchSpec(
        command=("sh", "-c", FAIL_RANK_1),
        num_workers=2,
        num_servers=0,
        hosts_file=str(cluster.write_hosts_file(state_home / "hosts", {0: f"path_prepend={slow}"})),
        run_root=str(state_home / "runs"),
        grace_s=1,
    )
    job, final = await run_to_end(spec, events)
    assert final.state == "failed"
    assert [f.source for f in events.failures()] == ["worker 1 on node2"]
    assert cluster.processes_of(job.job_id) == {}


async def test_host_that_keeps_failing_is_excluded_from_the_relaunch(cluster, state_home):
    events = Events()
    spec = LaunchSpec(
        command=(
            "sh",
            "-c",
            'if [ "$IMGSCALE_HOST" = node2 ]; then exit 4; fi; echo "ok on $IMGSCALE_HOST"',
        ),
        num_workers=2,
        num_servers=0,
        hosts_file=str(cluster.hosts_file),
        run_root=str(state_home / "runs"),
        max_restarts=1,
        exclude_after=1,
        grace_s=1,
    )
    job, final = await run_to_end(spec, events)
    assert final.state == "done"
    assert job.record.excluded == ("node2",)
    assert [p.host for p in final.processes] == ["node1", "node3"]


async def test_a_host_that_cannot_start_fails_the_job_naming_the_host(cluster, state_home):
    events = Events()
    spec = LaunchSpec(
        command=("true",),
        num_workers=2,
        num_servers=0,
        hosts_file=str(cluster.hosts_file),
        run_root="/proc/no-such-dir",
    )
    _, final = await run_to_end(spec, events)
    assert final.state == "failed"
    failure = events.failures()[0]
    assert failure.source in ("host node1", "host node2")
    assert "could not start processes" in failure.message and "/proc/no-such-dir" in failure.message


async def test_lost_host_stops_the_job_elsewhere_and_kill_cleans_it_when_back(cluster, state_home):
    from engine.cluster.process.kill import kill_job

    events = Events()
    spec = LaunchSpec(
        command=("sh", "-c", "echo up; exec sleep 120"),
        num_workers=3,
        num_servers=0,
        hosts_file=str(cluster.hosts_file),
        run_root=str(state_home / "runs"),
        lost_timeout_s=3,
        grace_s=1,
    )
    job = await launch(spec, sink=events)
    try:
        await events.wait_for(
            lambda e: isinstance(e, JobState) and e.state == "running", 30, "running"
        )
        groups = {p.host: pid_record(p.prefix)[1] for p in job.record.processes}
        cluster.stop_host(2)
        final = await job.wait()
    finally:
        await job.close()
        cluster.start_host(2)
    assert final.state == "failed"
    lost = [
        f for f in events.failures() if f.source == "host node3" and f.message.startswith("lost")
    ]
    assert len(lost) == 1 and "refused" in lost[0].message
    unstoppable = [f for f in events.failures() if f.message.startswith("could not stop")]
    assert [f.source for f in unstoppable] == ["host node3"] and "imgscale kill" in unstoppable[
        0
    ].advice[0]
    assert not cluster.group_alive("node1", groups["node1"])
    assert not cluster.group_alive("node2", groups["node2"])
    assert cluster.group_alive(
        "node3", groups["node3"]
    )  # unreachable: nothing could end it, and the record says so
    assert not jobs.load(job.job_id).clean
    reports = await kill_job(job.job_id, grace_s=1)
    assert reports["node3"].terminated == (groups["node3"],)
    assert cluster.processes_of(job.job_id) == {} and jobs.load(job.job_id).clean


async def test_relaunch_on_request_replaces_a_running_attempt(ssh_cluster, state_home):
    events = Events()
    spec = LaunchSpec(
        command=("sh", "-c", 'echo "attempt $IMGSCALE_ATTEMPT"; exec sleep 60'),
        num_workers=2,
        num_servers=0,
        run_root=str(state_home / "runs"),
        grace_s=1,
    )
    job = await launch(spec, sink=events)
    try:
        await events.wait_for(
            lambda e: isinstance(e, JobState) and e.state == "running", 30, "running"
        )
        first = [pid_record(p.prefix)[1] for p in job.record.processes]  # all alive: all recorded
        state = await job.relaunch()
        assert state.restarts == 1 and job.record.attempt == 1
        await events.wait_for(lambda e: getattr(e, "text", "") == "attempt 1", 30, "attempt 1")
        assert [g for g in first if local_group_alive(g)] == []
        # the new attempt's wrappers and commands, all on this machine (no hosts file)
        assert set(ssh_cluster.processes_of(job.job_id)) == {"local"}
        old_run = str(state_home / "runs" / job.job_id / "a0")
        await wait_until(
            lambda: watchers_of(old_run) == [], 10, "the first attempt's watchers to end"
        )
        final = await job.stop("test over")
    finally:
        await job.close()
    assert final.state == "stopped" and final.message == "test over"
    assert ssh_cluster.processes_of(job.job_id) == {}


async def test_events_iterator_delivers_states_lines_and_ends_on_close(state_home):
    go = state_home / "go"
    wait_go = f"while [ ! -f '{go}' ]; do sleep 0.05; done; echo hello from $IMGSCALE_RANK"
    spec = LaunchSpec(
        command=("sh", "-c", wait_go),
        num_workers=2,
        num_servers=0,
        run_root=str(state_home / "runs"),
    )
    job = await launch(spec)
    seen = []
    async for event in job.events():
        seen.append(event)
        if len(seen) == 1:
            go.touch()  # subscribed: now let the workers print
        if isinstance(event, JobState) and event.state == "done":
            await job.close()  # ends the iteration
    texts = sorted(e.text for e in seen if getattr(e, "role", None) == "worker")
    assert texts == ["hello from 0", "hello from 1"]
    assert isinstance(seen[0], JobState) and seen[-1].state == "done"
