"""Detached processes through real /bin/sh: quoting, pid/pgid records, exit status, watch and kill."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from engine.cluster.process.detach import (
    DetachedProcess,
    env_files,
    kill_command,
    parse_kill,
    parse_status,
    split_tagged,
    start_command,
    status_loop_command,
    watch_command,
)
from engine.cluster.remote_cmd import shell_path

HOSTILE = "a b;$(touch /tmp/pwned) `id` 'q' \"d\" \\ $HOME\nline2 * ?"
JOB = "job-test-1"


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)  # polling a condition with a deadline
    raise AssertionError(f"timed out waiting for {what}")


def sh(command, timeout=20):
    return subprocess.run(
        ["/bin/sh", "-c", command], check=False, capture_output=True, text=True, timeout=timeout
    )


def start(tmp_path, argv, *, env=None, cwd=None, name="worker-0"):
    proc = DetachedProcess(
        str(tmp_path / "run dir" / name),
        str(cwd or tmp_path),
        tuple(argv),
        {"IMGSCALE_JOB": JOB, **(env or {})},
    )
    write_env([proc])
    result = sh(start_command([proc]))
    assert result.returncode == 0 and result.stdout.strip() == "started", result.stderr
    return proc


def write_env(procs):
    command, script = env_files(procs)
    result = subprocess.run(["/bin/sh", "-c", command], input=script, text=True, check=False,
                            capture_output=True, timeout=20)  # fmt: skip
    assert result.returncode == 0, result.stderr


def record(proc):
    path = Path(proc.pid_path)
    wait_for(path.exists, what="pid record")
    wrapper, pgid, child = map(int, path.read_text().split())
    return wrapper, pgid, child


def status(proc, timeout=10.0):
    path = Path(proc.status_path)
    wait_for(path.exists, timeout, "exit status")
    return int(path.read_text())


def gone(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_hostile_cwd_env_and_argv_survive_quoting(tmp_path):
    cwd = tmp_path / HOSTILE.replace("/", "_")
    cwd.mkdir()
    script = (
        "import os, sys; print(repr(os.getcwd())); print(repr(sys.argv[1:])); "
        "print(repr(os.environ['HOSTILE']))"
    )
    argv = ["python3", "-c", script, HOSTILE, "--x=$(id)"]
    proc = start(tmp_path, argv, env={"HOSTILE": HOSTILE}, cwd=cwd)
    assert status(proc) == 0
    lines = Path(proc.log_path).read_text().splitlines()
    assert lines == [repr(str(cwd)), repr([HOSTILE, "--x=$(id)"]), repr(HOSTILE)]
    assert not os.path.exists("/tmp/pwned")


def test_process_leads_its_own_session_and_group_and_records_it(tmp_path):
    proc = start(tmp_path, ["sleep", "30"])
    wrapper, pgid, child = record(proc)
    try:
        assert wrapper == pgid and os.getsid(wrapper) == wrapper  # setsid: not our session
        assert os.getpgid(child) == pgid and os.getsid(child) != os.getsid(0)
    finally:
        os.killpg(pgid, signal.SIGKILL)
    wait_for(lambda: gone(pgid), what="group gone")


def test_exit_status_and_signal_deaths_are_recorded(tmp_path):
    assert status(start(tmp_path, ["sh", "-c", "exit 3"], name="a")) == 3
    proc = start(tmp_path, ["sleep", "30"], name="b")
    _wrapper, _pgid, child = record(proc)
    os.kill(child, signal.SIGKILL)
    assert status(proc) == 128 + signal.SIGKILL


def test_missing_working_directory_is_reported_in_the_log_and_status(tmp_path):
    proc = start(tmp_path, ["true"], cwd=tmp_path / "does not exist")
    assert status(proc) == 126
    assert "cannot enter working directory" in Path(proc.log_path).read_text()


def test_status_loop_reports_pending_alive_and_exit(tmp_path):
    proc = start(tmp_path, ["sh", "-c", "exit 5"])
    status(proc)
    missing = str(tmp_path / "never")
    out = sh(f"timeout 1 {status_loop_command([proc.prefix, missing], 0.2)}").stdout.splitlines()
    first = [parse_status(line) for line in out[:3]]
    assert first[0].state == "exited" and first[0].exit_status == 5 and first[0].pgid
    assert first[1].state == "pending" and out[2] == "."


def test_watch_tags_each_log_line_with_its_process_and_reports_states(tmp_path):
    a = start(tmp_path, ["sh", "-c", "echo one; echo; echo '==> x <=='"], name="a")
    b = start(tmp_path, ["sh", "-c", "echo two"], name="b")
    status(a), status(b)
    result = sh(f"timeout 2 sh -c {shell_path(watch_command([a.prefix, b.prefix], 0.2))}")
    tagged = sorted(split_tagged(line) for line in result.stdout.splitlines())
    assert tagged == [(0, ""), (0, "==> x <=="), (0, "one"), (1, "two")]
    states = [parse_status(line) for line in result.stderr.splitlines()]
    assert {(s.index, s.state) for s in states if s} == {(0, "exited"), (1, "exited")}


def test_kill_ends_the_whole_group_term_first(tmp_path):
    proc = start(tmp_path, ["sh", "-c", "sleep 30 & sleep 30 & wait"])
    _w, pgid, _c = record(proc)
    report = parse_kill(sh(kill_command(JOB, [proc.prefix], 5)).stdout)
    assert report.complete and report.terminated == (pgid,) and report.killed == ()
    assert gone(pgid)
    assert status(proc) == 128 + signal.SIGTERM


def test_kill_ends_a_stopped_hung_process_with_term_not_after_the_grace_period(tmp_path):
    proc = start(tmp_path, ["sleep", "30"])
    _w, pgid, child = record(proc)
    os.kill(child, signal.SIGSTOP)  # a hung rank: TERM alone would wait until it runs again
    report = parse_kill(sh(kill_command(JOB, [proc.prefix], 5)).stdout)
    assert report.terminated == (pgid,) and report.killed == () and gone(pgid)


def test_kill_escalates_to_sigkill_after_the_grace_period(tmp_path):
    proc = start(tmp_path, ["sh", "-c", "trap '' TERM; sleep 30 & wait; sleep 30"])
    _w, pgid, _c = record(proc)
    report = parse_kill(sh(kill_command(JOB, [proc.prefix], 1)).stdout)
    assert report.killed == (pgid,) and gone(pgid)


def test_kill_leaves_a_recycled_pid_alone(tmp_path):
    # A record whose pids now belong to a process of someone else (no IMGSCALE_JOB=<job>).
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        prefix = tmp_path / "worker-9"
        Path(str(prefix) + ".pid").write_text(f"{stranger.pid} {stranger.pid} {stranger.pid}\n")
        report = parse_kill(sh(kill_command(JOB, [str(prefix)], 1)).stdout)
        assert report.foreign == (stranger.pid, stranger.pid) and report.terminated == ()
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_kill_of_another_job_id_touches_nothing(tmp_path):
    proc = start(tmp_path, ["sleep", "30"])
    _w, pgid, _c = record(proc)
    try:
        report = parse_kill(sh(kill_command("some-other-job", [proc.prefix], 1)).stdout)
        assert report.terminated == () and not gone(pgid)
    finally:
        os.killpg(pgid, signal.SIGKILL)


def test_started_means_every_process_has_left_the_starters_session(tmp_path):
    # Issue 11 item 3: the channel's process group is ended as soon as "started" is read, the way
    # closing a local channel does; no process may die with it, and each has its record already.
    procs = [
        DetachedProcess(
            str(tmp_path / f"p{i}"), str(tmp_path), ("sleep", "30"), {"IMGSCALE_JOB": JOB}
        )
        for i in range(4)
    ]
    write_env(procs)
    starter = subprocess.Popen(["/bin/sh", "-c", start_command(procs)], stdout=subprocess.PIPE,
                               text=True, start_new_session=True)  # fmt: skip
    assert starter.stdout.readline().strip() == "started"
    os.killpg(starter.pid, signal.SIGKILL)
    starter.wait()
    assert all(Path(p.pid_path).exists() for p in procs)  # written before "started"
    groups = [record(p)[1] for p in procs]
    try:
        assert not any(gone(g) for g in groups) and starter.pid not in groups
    finally:
        for g in groups:
            os.killpg(g, signal.SIGKILL)


def test_kill_finds_a_process_started_before_its_pid_record(tmp_path):
    # Issue 11 item 4: stopped while starting, a process can already run without a .pid record.
    env = {**os.environ, "IMGSCALE_JOB": JOB}
    line = "setsid sh -c 'sleep 30 & wait' </dev/null >/dev/null 2>&1 & echo $!"
    leader = int(subprocess.check_output(["sh", "-c", line], env=env, timeout=10))
    wait_for(lambda: os.getpgid(leader) == leader, what="its own session")
    # One not yet in a session of its own: killed alone, never its group (here: this test's).
    joiner = subprocess.Popen(["sleep", "30"], env=env)
    try:
        report = parse_kill(sh(kill_command(JOB, [str(tmp_path / "w0")], 3)).stdout)
        assert report.terminated == (leader,) and report.killed == (joiner.pid,)
        assert joiner.wait(5) == -signal.SIGKILL and gone(leader)
    finally:
        joiner.kill()
        joiner.wait()
        if not gone(leader):
            os.killpg(leader, signal.SIGKILL)


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a process as another user needs root")
def test_kill_leaves_another_users_process_with_the_job_id_alone(tmp_path):
    # Issue 11 item 14: carrying IMGSCALE_JOB=<job> is not enough; the process must be ours too.
    env = {**os.environ, "IMGSCALE_JOB": JOB}
    other = subprocess.Popen(["sleep", "30"], env=env, user=65534, start_new_session=True)
    try:
        prefix = tmp_path / "worker-7"
        Path(str(prefix) + ".pid").write_text(f"{other.pid} {other.pid} {other.pid}\n")
        report = parse_kill(sh(kill_command(JOB, [str(prefix)], 1)).stdout)
        assert report.foreign == (other.pid, other.pid) and report.terminated == ()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_environment_travels_in_a_private_file_not_on_a_command_line(tmp_path):
    # Issue 11 item 7: the values are in the stdin script, never in a command; the file is 0600.
    proc = DetachedProcess(str(tmp_path / "w"), str(tmp_path), ("true",),
                           {"IMGSCALE_JOB": JOB, "SECRET_TOKEN": "s3cr3t-value"})  # fmt: skip
    command, script = env_files([proc])
    assert "s3cr3t" not in command and "s3cr3t" not in start_command([proc])
    write_env([proc])
    assert os.stat(proc.env_path).st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "line, expected",
    [
        ("0 alive 10 10 12", ("alive", None, 10, 10, 12)),
        ("3 exit:137 10 10 12", ("exited", 137, 10, 10, 12)),
        ("1 pending - - -", ("pending", None, None, None, None)),
        ("2 gone 5 5 6", ("gone", None, 5, 5, 6)),
    ],
)
def test_parse_status(line, expected):
    s = parse_status(line)
    assert (s.state, s.exit_status, s.wrapper_pid, s.pgid, s.pid) == expected


@pytest.mark.parametrize("line", [".", "", "tail: cannot open", "x alive 1 2 3", "0 alive 1 2"])
def test_parse_status_ignores_noise(line):
    assert parse_status(line) is None


def test_shell_path_expands_home_only_at_the_start():
    assert shell_path("~/.imgscale/runs/j") == '"$HOME"/.imgscale/runs/j'
    assert shell_path("/a/~/b c") == "'/a/~/b c'"
    assert sh(f"echo {shell_path('~/x y')}").stdout.strip() == os.path.expanduser("~/x y")


def test_parse_kill_needs_the_final_marker_to_be_complete():
    assert not parse_kill("term 5\n").complete
    report = parse_kill("term 5\nforeign 9\ngone 7\nkill 5\ndone\n")
    assert report.complete and report.terminated == (5,) and report.killed == (5,)
    assert report.gone == (7,) and report.foreign == (9,)


def test_kill_ends_a_group_whose_recorded_processes_died_but_whose_children_live(tmp_path):
    # A SIGKILLed torch rank leaves its data loader's workers in its group: they are ended too.
    env = {**os.environ, "IMGSCALE_JOB": JOB}
    leader = subprocess.Popen(
        ["sh", "-c", "sleep 30 & echo $!"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    child = int(leader.stdout.readline())
    leader.wait()  # the recorded wrapper and command are gone; the child lives on in the group
    try:
        prefix = tmp_path / "worker-1"
        Path(str(prefix) + ".pid").write_text(f"{leader.pid} {leader.pid} {leader.pid}\n")
        report = parse_kill(sh(kill_command(JOB, [str(prefix)], 1)).stdout)
        assert report.terminated == (leader.pid,) and report.complete
        assert _state(child) in (None, "Z", "X")  # gone, or dead and not yet reaped
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
