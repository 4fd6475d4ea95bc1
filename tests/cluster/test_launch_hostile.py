"""Hostile values survive the trip to every host: env values, arguments, working and sync directories."""

from __future__ import annotations

import pytest
from launch_helpers import Events, run_to_end

from engine.train.launch.launch import LaunchSpec

pytestmark = [pytest.mark.cluster]

HOSTILE = "a b;$(touch /tmp/pwned-imgscale) `id` 'q' \"d\" \\ $HOME\nnext line * ?"
SCRIPT = (
    "import os, sys; print(repr((os.getcwd(), sys.argv[1:], os.environ['HOSTILE'], "
    "os.environ['IMGSCALE_HOST'])))"
)


async def run_job(spec) -> Events:
    events = Events()
    _, final = await run_to_end(spec, events)
    assert final.state == "done", events.failures()
    return events


async def test_env_argv_and_cwd_survive_quoting_on_every_host(cluster, state_home):
    cwd = state_home / HOSTILE.replace("/", "_")
    cwd.mkdir()
    spec = LaunchSpec(
        command=("python", "-c", SCRIPT, HOSTILE, "--flag=$(id)"),
        num_workers=3,
        num_servers=0,
        hosts_file=str(cluster.hosts_file),
        env={"HOSTILE": HOSTILE},
        cwd=str(cwd),
        run_root=str(state_home / "runs"),
    )
    events = await run_job(spec)
    seen = {e.host: e.text for e in events.logs("worker")}
    for host in ("node1", "node2", "node3"):
        assert seen[host] == repr((str(cwd), [HOSTILE, "--flag=$(id)"], HOSTILE, host))
    assert not __import__("os").path.exists("/tmp/pwned-imgscale")


async def test_sync_dst_dir_copies_this_directory_and_runs_there(cluster, state_home, monkeypatch):
    source = state_home / "project"
    source.mkdir()
    (source / "job.py").write_text("import os; print('ran in', os.getcwd())\n")
    (source / "data").mkdir()
    (source / "data" / "x.txt").write_text("payload")
    target = state_home / "synced dir 'x'"
    monkeypatch.chdir(source)
    spec = LaunchSpec(
        command=("python", "job.py"),
        num_workers=2,
        num_servers=0,
        hosts_file=str(cluster.hosts_file),
        sync_dst_dir=str(target),
        run_root=str(state_home / "runs"),
    )
    events = await run_job(spec)
    assert {e.text for e in events.logs("worker")} == {f"ran in {target}"}
    assert (target / "data" / "x.txt").read_text() == "payload"


async def test_attaching_to_a_finished_job_shows_the_last_lines_of_every_process(
    cluster, state_home
):
    """Reopening the console after a job ended shows how it ended, not an empty log."""
    from engine.train.launch.launch import open_job

    spec = LaunchSpec(
        command=("sh", "-c", 'for i in 1 2 3 4 5; do echo "line $i on $IMGSCALE_HOST"; done'),
        num_workers=2,
        num_servers=0,
        hosts_file=str(cluster.hosts_file),
        run_root=str(state_home / "runs"),
    )
    job, final = await run_to_end(spec, Events())
    assert final.state == "done"
    later = Events()
    again = open_job(job.job_id, sink=later, tail_lines=3)
    try:
        await again.attach()
    finally:
        await again.close()
    shown = sorted((e.host, e.text) for e in later.logs("worker"))
    assert shown == sorted(
        (host, f"line {i} on {host}") for host in ("node1", "node2") for i in (3, 4, 5)
    )


async def test_env_values_never_show_in_ps_on_any_host(cluster, state_home):
    """Issue 11 item 7: `--env SECRET=…` reaches the job but no command line on a host shows it."""
    import subprocess

    from engine.train.launch.launch import launch

    secret = "s3cr3t-token-a8f2"
    spec = LaunchSpec(
        command=("sh", "-c", 'echo "token=$SECRET_TOKEN"; exec sleep 600'),
        num_workers=3,
        num_servers=0,
        hosts_file=str(cluster.hosts_file),
        env={"SECRET_TOKEN": secret},
        run_root=str(state_home / "runs"),
    )
    events = Events()
    job = await launch(spec, sink=events)
    try:
        for host in ("node1", "node2", "node3"):
            await events.wait_for(
                lambda e, h=host: (
                    getattr(e, "host", "") == h and getattr(e, "text", "") == f"token={secret}"
                ),
                60,
                f"the job's output on {host}",
            )
        # every sshd host is this machine: one `ps` sees every host's command lines
        args = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
        assert secret not in args.stdout
        assert not list(state_home.rglob("*.env"))  # read once, then removed
    finally:
        await job.stop()
        await job.close()
