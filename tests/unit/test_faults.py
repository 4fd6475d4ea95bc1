"""The supervisor's decisions, as pure functions: each scenario named after the mistake it prevents."""

from engine.cluster.process.detach import RemoteStatus
from engine.cluster.process.faults import (
    DONE,
    FAILED,
    KILLED,
    RUNNING,
    WORKERS_DONE,
    FaultPolicy,
    describe_status,
    next_step,
)
from engine.cluster.process.jobs import JobRecord
from engine.cluster.process.watcher import after
from engine.events import ProcessInfo


def procs(*states, roles=None):
    roles = roles or ["worker"] * len(states)
    return [ProcessInfo("h", role, i, state=s) for i, (role, s) in enumerate(zip(roles, states))]


def record(hosts=("a", "b"), excluded=(), restarts=0):
    return JobRecord("j", "train", ("x",), None, hosts, excluded=excluded, restarts=restarts)


def test_a_kill_in_progress_wins_over_the_failures_it_causes():
    assert next_step(procs("failed", "running"), "running", stop_requested=True) == (KILLED, None)


def test_the_first_failed_process_is_the_fault():
    assert next_step(procs("running", "failed", "failed"), "running", False) == (FAILED, 1)


def test_servers_left_running_after_the_workers_ended_are_not_yet_done():
    infos = procs("running", "exited", "exited", roles=["scheduler", "worker", "worker"])
    assert next_step(infos, "running", False) == (WORKERS_DONE, None)
    assert next_step(procs("exited", "exited"), "running", False) == (DONE, None)


def test_a_job_is_running_only_once_no_process_is_still_starting():
    assert next_step(procs("running", "starting"), "starting", False) == ("", None)
    assert next_step(procs("running", "running"), "starting", False) == (RUNNING, None)


def test_a_kill_signal_is_named_from_the_shell_status():
    assert describe_status(137) == "was killed by SIGKILL (status 137)"
    assert describe_status(3) == "exited with status 3"
    assert "vanished" in describe_status(None)


def test_a_failing_host_is_left_out_only_after_the_limit_and_never_the_last_one():
    policy = FaultPolicy(max_restarts=3, exclude_after=2)
    policy.count("a")
    assert policy.excluded(record(), "a") == ()
    policy.count("a")
    assert policy.excluded(record(), "a") == ("a",)
    assert policy.excluded(record(hosts=("a",)), "a") == ()
    assert FaultPolicy(exclude_after=0).excluded(record(), "a") == ()


def test_no_relaunch_after_a_kill_or_past_the_restarts():
    policy = FaultPolicy(max_restarts=1)
    assert policy.relaunch(record(restarts=0), stop_requested=False)
    assert not policy.relaunch(record(restarts=0), stop_requested=True)
    assert not policy.relaunch(record(restarts=1), stop_requested=False)


def test_an_end_while_stopping_is_a_kill_not_a_failure():
    info = ProcessInfo("h", "worker", 0, state="running")
    ended = RemoteStatus(0, "exited", exit_status=143, pid=5, pgid=5)
    assert after(info, ended, stopping=False).state == "failed"
    assert after(info, ended, stopping=True).state == "killed"
    assert after(info, RemoteStatus(0, "exited", exit_status=0), stopping=True).state == "exited"
    gone = after(info, RemoteStatus(0, "gone", exit_status=9), stopping=False)
    assert gone.state == "failed" and gone.exit_status is None


def test_a_process_killed_by_a_signal_is_blamed_before_peers_that_failed_after_it():
    from engine.cluster.process.faults import FAILED, next_step
    from engine.events import ProcessInfo

    infos = [
        ProcessInfo("a", "worker", 0, state="failed", exit_status=1),
        ProcessInfo("b", "worker", 1, state="failed", exit_status=137),
    ]
    assert next_step(infos, "running", False) == (FAILED, 1)
    assert next_step(infos[:1], "running", False) == (FAILED, 0)
