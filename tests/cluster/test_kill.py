"""`imgscale kill` and `imgscale attach` from the shell: exactly our processes end, on every host;
a job launched with --detach outlives its launcher and can be re-attached."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from launch_helpers import Events, group_alive, pid_record, processes_of, wait_until

from engine.cluster import jobs
from engine.cluster.launcher import open_job
from engine.events import JobState

pytestmark = [pytest.mark.cluster]

TICKER = (
    'i=0; while [ $i -lt 600 ]; do echo "tick $i on $IMGSCALE_HOST"; i=$((i+1)); sleep 0.1; done'
)


@pytest.fixture()
def env(tmp_path):
    return {**os.environ, "IMGSCALE_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}


def imgscale(env, *args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn(argv, **kwargs):
    return subprocess.Popen(argv, **kwargs)


@pytest.fixture()
def launched(env):
    """Job names launched by a test; whatever a failing test left running is killed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        if processes_of(name):
            imgscale(env, "kill", name, "--grace", "1")


def unique(tmp_path, stem):
    return f"{stem}-{tmp_path.name[-12:].strip('_-.')}-{os.getpid()}"


def launch_detached(env, cluster, tmp_path, name, workers=3):
    out = imgscale(
        env,
        "launch",
        "-n",
        str(workers),
        "-s",
        "0",
        "-H",
        str(cluster.hosts_file),
        "--run-dir",
        str(tmp_path / "runs"),
        "--job",
        name,
        "--detach",
        "--",
        "sh",
        "-c",
        TICKER,
    )
    assert out.returncode == 0, out.stderr
    return name


async def running_groups(env, name, monkeypatch):
    monkeypatch.setenv("IMGSCALE_HOME", env["IMGSCALE_HOME"])
    record = jobs.load(name)
    prefixes = [p.prefix for p in record.processes]
    await wait_until(lambda: all(os.path.exists(p + ".pid") for p in prefixes), 30, "pid records")
    await wait_until(
        lambda: pid_alive(jobs.load(name).launcher_pid), 30, "the background supervisor"
    )
    return [pid_record(p)[1] for p in prefixes]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_kill_all_ends_every_job_on_every_host_and_nothing_else(
    cluster, tmp_path, env, monkeypatch, launched
):
    names = [unique(tmp_path, "kill-a"), unique(tmp_path, "kill-b")]
    launched += names
    bystander = spawn(["sh", "-c", TICKER], stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        groups = []
        for name in names:
            launch_detached(env, cluster, tmp_path, name)
            groups += await running_groups(env, name, monkeypatch)
        assert all(group_alive(g) for g in groups)
        out = imgscale(env, "kill", "--all", "--grace", "2")
        assert out.returncode == 0, out.stderr
        assert "ended 6 process group(s)" in out.stdout
        assert [g for g in groups if group_alive(g)] == []
        assert processes_of(names[0]) == [] and processes_of(names[1]) == []
        assert bystander.poll() is None  # not ours: untouched
        for name in names:
            record = jobs.load(name)
            assert record.state == "stopped" and record.clean
            # the background supervisor saw the kill, did not relaunch, and ended
            await wait_until(
                lambda n=name: not pid_alive(jobs.load(n).launcher_pid), 30, "supervisor"
            )
            assert jobs.load(name).attempt == 0
    finally:
        bystander.kill()
        bystander.wait()
    assert imgscale(env, "kill", "--all").stdout.strip() == "ended 0 process group(s)"


async def test_attach_after_the_launcher_exited_sees_the_running_job(
    cluster, tmp_path, env, monkeypatch, launched
):
    launched.append(unique(tmp_path, "attach"))
    name = launch_detached(env, cluster, tmp_path, launched[0], workers=2)
    groups = await running_groups(env, name, monkeypatch)
    events = Events()
    job = open_job(name, sink=events, tail_lines=3)
    await job.attach()
    try:
        assert not job.supervising  # the background supervisor holds the job
        await events.wait_for(
            lambda e: isinstance(e, JobState) and e.state == "running", 30, "running"
        )
        for host in ("node1", "node2"):
            await events.wait_for(
                lambda e, h=host: (
                    getattr(e, "host", "") == h and getattr(e, "text", "").startswith("tick")
                ),
                30,
                f"ticks from {host}",
            )
        assert {e.role for e in events.logs()} == {"worker"}
        state = job.status()
        assert [(p.host, p.state) for p in state.processes] == [
            ("node1", "running"),
            ("node2", "running"),
        ]
    finally:
        await job.close()
    assert all(group_alive(g) for g in groups)  # closing the attached view left the job running

    attach = spawn(
        [sys.executable, "-m", "engine.cli", "attach", name, "--lines", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = attach.stdout.readline()
        assert line.startswith(("node1 worker 0 | tick", "node2 worker 1 | tick")), line
    finally:
        attach.send_signal(signal.SIGINT)
        assert attach.wait(timeout=30) == 130
    assert all(group_alive(g) for g in groups)

    out = imgscale(env, "kill", name)
    assert out.returncode == 0 and "ended 2 process group(s)" in out.stdout
    assert processes_of(name) == []


async def test_kill_all_with_hosts_sweeps_jobs_whose_records_here_are_gone(
    cluster, tmp_path, env, monkeypatch, launched
):
    import shutil

    launched.append(unique(tmp_path, "orphan"))
    name = launch_detached(env, cluster, tmp_path, launched[0], workers=3)
    groups = await running_groups(env, name, monkeypatch)
    supervisor = jobs.load(name).launcher_pid
    os.kill(supervisor, signal.SIGKILL)  # the launching machine's state is lost, as if it burned
    shutil.rmtree(tmp_path / "home")
    bystander = spawn(["sh", "-c", TICKER], stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        out = imgscale(
            env,
            "kill",
            "--all",
            "-H",
            str(cluster.hosts_file),
            "--run-dir",
            str(tmp_path / "runs"),
            "--grace",
            "1",
        )
        assert out.returncode == 0, out.stderr
        # the three test hosts are one machine sharing one run directory, so several hosts' sweeps
        # may signal the same group: at least the three groups were ended
        assert int(out.stdout.split()[1]) >= 3, out.stdout
        assert [g for g in groups if group_alive(g)] == [] and processes_of(name) == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_in_a_foreground_launch_stops_the_job_on_every_host(
    cluster, tmp_path, env, launched, sig
):
    launched.append(unique(tmp_path, f"stop-{sig.name.lower()}"))
    name = launched[0]
    launch = spawn(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "launch",
            "-n",
            "3",
            "-s",
            "0",
            "-H",
            str(cluster.hosts_file),
            "--run-dir",
            str(tmp_path / "runs"),
            "--job",
            name,
            "--",
            "sh",
            "-c",
            TICKER,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        seen = set()
        while len(seen) < 3:  # every host's worker has printed (attributed) lines
            line = launch.stdout.readline()
            assert line, "the launcher ended early"
            seen.add(line.split(" | ")[0])
        assert seen == {"node1 worker 0", "node2 worker 1", "node3 worker 2"}
        launch.send_signal(sig)
        assert launch.wait(timeout=60) == 130
    finally:
        if launch.poll() is None:
            launch.kill()
        launch.wait()
    assert processes_of(name) == []
    listing = imgscale(env, "jobs").stdout
    assert any(line.split()[:2] == [name, "stopped"] for line in listing.splitlines()), listing


async def test_kill_all_trusts_the_hosts_not_a_record_that_says_clean(
    cluster, tmp_path, env, monkeypatch, launched
):
    """A launcher killed mid-stop can leave a record saying 'failed, clean' while processes live on."""
    from dataclasses import replace

    name = unique(tmp_path, "kill-stale")
    launched.append(name)
    launch_detached(env, cluster, tmp_path, name)
    groups = await running_groups(env, name, monkeypatch)
    os.kill(jobs.load(name).launcher_pid, signal.SIGKILL)  # the supervisor dies without a word
    await wait_until(lambda: not pid_alive(jobs.load(name).launcher_pid), 30, "supervisor gone")
    jobs.save(replace(jobs.load(name), state="failed", clean=True))
    assert all(group_alive(g) for g in groups)
    out = imgscale(env, "kill", "--all", "--grace", "2")
    assert out.returncode == 0, out.stderr
    assert "ended 3 process group(s)" in out.stdout
    assert [g for g in groups if group_alive(g)] == [] and processes_of(name) == []
