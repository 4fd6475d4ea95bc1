"""`imgscale kill` and `imgscale attach` from the shell: exactly our processes end, on every host;
a job launched with --detach outlives its launcher and can be re-attached."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from launch_helpers import Events, pid_record, wait_until

from engine.cluster.process import jobs
from engine.events import JobState
from engine.train.launch.launch import open_job

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
def launched(env, ssh_cluster):
    """Job names launched by a test; whatever a failing test left running is killed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        if ssh_cluster.processes_of(name):
            imgscale(env, "kill", name, "--grace", "1")


def unique(tmp_path, stem):
    return f"{stem}-{tmp_path.name[-12:].strip('_-.')}-{os.getpid()}"


def launch_detached(env, cluster, tmp_path, name, workers=3, run_dir=None, hosts_file=None):
    out = imgscale(
        env,
        "launch",
        "-n",
        str(workers),
        "-s",
        "0",
        "-H",
        str(hosts_file or cluster.hosts_file),
        "--run-dir",
        run_dir or str(tmp_path / "runs"),
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


async def running_groups(env, name, monkeypatch, cluster):
    """[(host, process group as that host numbers it)] of every process of job ``name``."""
    monkeypatch.setenv("IMGSCALE_HOME", env["IMGSCALE_HOME"])
    procs = jobs.load(name).processes
    # read each pid record on its own host: a private run folder exists only there
    files = [(p.host, cluster.host_path(p.host, p.prefix + ".pid")) for p in procs]
    await wait_until(lambda: all(f.exists() for _h, f in files), 30, "pid records")
    await wait_until(
        lambda: pid_alive(jobs.load(name).launcher_pid), 30, "the background supervisor"
    )
    return [(h, pid_record(str(f)[: -len(".pid")])[1]) for h, f in files]


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
            groups += await running_groups(env, name, monkeypatch, cluster)
        assert all(cluster.group_alive(*g) for g in groups)
        out = imgscale(env, "kill", "--all", "--grace", "2")
        assert out.returncode == 0, out.stderr
        assert "ended 6 process group(s)" in out.stdout
        assert [g for g in groups if cluster.group_alive(*g)] == []
        assert cluster.processes_of(names[0]) == {} and cluster.processes_of(names[1]) == {}
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
    groups = await running_groups(env, name, monkeypatch, cluster)
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
    assert all(
        cluster.group_alive(*g) for g in groups
    )  # closing the attached view left the job running

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
    assert all(cluster.group_alive(*g) for g in groups)

    out = imgscale(env, "kill", name)
    assert out.returncode == 0 and "ended 2 process group(s)" in out.stdout
    assert cluster.processes_of(name) == {}


async def test_kill_all_with_hosts_sweeps_jobs_whose_records_here_are_gone(
    cluster, tmp_path, env, monkeypatch, launched
):
    import shutil

    launched.append(unique(tmp_path, "orphan"))
    # a run folder outside the shared test folder: each host has its own, as on real machines
    run_dir = f"/tmp/{launched[0]}"
    name = launch_detached(env, cluster, tmp_path, launched[0], workers=3, run_dir=run_dir)
    groups = await running_groups(env, name, monkeypatch, cluster)
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
            run_dir,
            "--grace",
            "1",
        )
        assert out.returncode == 0, out.stderr
        # each host's sweep found its own process's record and ended exactly that group
        assert "ended 3 process group(s)" in out.stdout, out.stdout
        assert [g for g in groups if cluster.group_alive(*g)] == []
        assert cluster.processes_of(name) == {}
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
    assert cluster.processes_of(name) == {}
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
    groups = await running_groups(env, name, monkeypatch, cluster)
    os.kill(jobs.load(name).launcher_pid, signal.SIGKILL)  # the supervisor dies without a word
    await wait_until(lambda: not pid_alive(jobs.load(name).launcher_pid), 30, "supervisor gone")
    jobs.save(replace(jobs.load(name), state="failed", clean=True))
    assert all(cluster.group_alive(*g) for g in groups)
    out = imgscale(env, "kill", "--all", "--grace", "2")
    assert out.returncode == 0, out.stderr
    assert "ended 3 process group(s)" in out.stdout
    assert [g for g in groups if cluster.group_alive(*g)] == [] and cluster.processes_of(name) == {}


def hosts_file_of(cluster, tmp_path, names):
    """A hosts file listing only the test hosts ``names``."""
    path = tmp_path / ("hosts-" + "-".join(names))
    keep = [i for i, h in enumerate(cluster.hosts) if h.name in names]
    lines = cluster.hosts_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2] + [lines[2 + i] for i in keep]))
    return str(path)


def run_files(cluster, host, run_dir):
    """{job/attempt: {process names}} in host's own run folder."""
    root = cluster.host_path(host, run_dir)
    found: dict[str, set[str]] = {}
    for path in root.glob("*/a*/*.*"):
        found.setdefault(str(path.parent.relative_to(root)), set()).add(path.stem)
    return found


async def test_kill_one_job_leaves_another_hosts_processes_and_files_alone(
    cluster, tmp_path, env, monkeypatch, launched
):
    here, there = unique(tmp_path, "here"), unique(tmp_path, "there")
    launched += [here, there]
    run_dir = f"/tmp/{here}-runs"  # outside the shared test folder: each host has its own
    for name, hosts, workers in ((here, ["node1", "node2"], 2), (there, ["node3"], 1)):
        hosts_file = hosts_file_of(cluster, tmp_path, hosts)
        launch_detached(env, cluster, tmp_path, name, workers, run_dir, hosts_file)
    groups_here = await running_groups(env, here, monkeypatch, cluster)
    groups_there = await running_groups(env, there, monkeypatch, cluster)

    # processes run where the records say, and nowhere else (not on the launching machine)
    assert sorted(cluster.processes_of(here)) == ["node1", "node2"]
    assert sorted(cluster.processes_of(there)) == ["node3"]
    # each host's run folder holds its own process's files only; this machine has none
    assert run_files(cluster, "node1", run_dir) == {f"{here}/a0": {"worker-0"}}
    assert run_files(cluster, "node2", run_dir) == {f"{here}/a0": {"worker-1"}}
    assert run_files(cluster, "node3", run_dir) == {f"{there}/a0": {"worker-0"}}
    assert not os.path.exists(run_dir)

    out = imgscale(env, "kill", here, "--grace", "1")
    assert out.returncode == 0 and "ended 2 process group(s)" in out.stdout, out.stdout
    assert cluster.processes_of(here) == {}
    assert [g for g in groups_here if cluster.group_alive(*g)] == []
    # the other job's host was not touched
    assert all(cluster.group_alive(*g) for g in groups_there)
    assert sorted(cluster.processes_of(there)) == ["node3"]

    out = imgscale(env, "kill", there, "--grace", "1")
    assert out.returncode == 0 and "ended 1 process group(s)" in out.stdout, out.stdout
    assert cluster.processes_of(there) == {}
