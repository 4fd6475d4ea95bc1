"""`--launcher slurm` against a real SLURM (munged, slurmctld, two slurmd and one node that never came up).

MXNet's roles and torch's ranks are placed on the allocated nodes and started with srun; a SIGKILLed
rank fails the job at once and the relaunch resumes from the newest checkpoint; `imgscale kill`
cancels; a job asking for more nodes than are up waits with SLURM's reason and can be cancelled.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from launch_helpers import MX_JOB, Events, wait_until
from slurm import SlurmCluster, slurm_available
from webhook import Webhook

from engine.cluster.process import jobs
from engine.cluster.slurm import sbatch as slurm
from engine.events import JobState
from engine.train.launch.launch import LaunchSpec, launch

pytestmark = [pytest.mark.cluster]
EPOCHS = 4  # a kill during epoch 1 leaves epochs to resume, even when training runs fast
TORCH_JOB = str(Path(__file__).parent / "torch_dist_job.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    reason = slurm_available()
    if reason:
        pytest.skip(f"no local SLURM cluster: {reason}")
    cluster = SlurmCluster.start(tmp_path_factory.mktemp("slurm"), nodes=2, spare=1)
    yield cluster
    cluster.close()


@pytest.fixture()
def sl(slurm_cluster, state_home, monkeypatch):
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the batch script's python finds this checkout
    yield slurm_cluster
    slurm_cluster.cancel_all()


def processes_of(job: str) -> list[int]:
    """Pids whose environment names ``job``: the test's slurmd nodes run their steps on this machine."""
    needle = f"IMGSCALE_JOB={job}".encode()
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                found.append(int(entry))
        except OSError:
            continue
    return found


def spec(state_home: Path, command, workers: int, **options) -> LaunchSpec:
    slurm_options = options.pop("slurm", {"nodes": 2})
    return LaunchSpec(
        command=tuple(command),
        num_workers=workers,
        launcher="slurm",
        run_root=str(state_home / "runs"),
        cwd=str(state_home),
        slurm=slurm_options,
        **options,
    )


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_dry_run_prints_the_batch_script(tmp_path):
    out = cli(
        "launch", "--launcher", "slurm", "-n", "4", "--nodes", "2", "--gpus-per-node", "2",
        "--partition", "gpu", "--time", "1:00:00", "--sbatch-arg=--qos=high", "--dry-run",
        "--", "imgscale", "train", "--engine", "torch",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for line in ("#SBATCH --ntasks=4", "#SBATCH --nodes=2", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --partition=gpu", "#SBATCH --time=1:00:00", "#SBATCH --qos=high"):  # fmt: skip
        assert line in out.stdout
    assert "-m engine.train.launch.slurm_driver" in out.stdout
    assert "# torch job: 4 ranks" in out.stdout


def test_without_slurm_commands_launch_says_so_in_one_line(tmp_path):
    out = cli(
        "launch", "--launcher", "slurm", "-n", "2", "--", "true",
        env={"PATH": "/nonexistent", "IMGSCALE_HOME": str(tmp_path)},
    )  # fmt: skip
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "SLURM's commands" in out.stderr


def test_preflight_refuses_an_unknown_partition_and_a_time_over_the_limit(sl, state_home):
    out = cli("launch", "--launcher", "slurm", "-n", "2", "--partition", "nope", "--", "true")
    assert out.returncode == 2 and "no such partition" in out.stderr, out.stderr
    out = cli("launch", "--launcher", "slurm", "-n", "2", "--time", "2:00:00", "--", "true")
    assert out.returncode == 2 and "allows 1:00:00" in out.stderr, out.stderr
    assert sl.job_ids() == []


@pytest.mark.mxnet
async def test_mxnet_dist_sync_job_runs_to_the_end_with_roles_on_both_nodes(sl, state_home):
    events = Events()
    job = await launch(
        spec(state_home, ["python", MX_JOB, "--batches", "4"], 2, num_servers=1), sink=events
    )
    try:
        state = await job.wait()
    finally:
        await job.close()
    assert state.state == "done", (state, events.failures())
    record = jobs.load(job.job_id)
    assert record.scheduler_id and record.launch_args["launcher"] == "slurm"
    placed = {(p.role, p.rank): p.host for p in record.processes}
    assert placed == {
        ("scheduler", 0): "n1",
        ("server", 0): "n1",
        ("worker", 0): "n1",
        ("worker", 1): "n2",
    }
    texts = [e.text for e in events.logs("worker")]
    assert any("worker rank 0 of 2" in t or "worker rank 1 of 2" in t for t in texts)
    assert {e.host for e in events.logs("worker") if "Speed:" in e.text} == {"n1", "n2"}
    assert processes_of(job.job_id) == []


async def test_torch_gloo_job_of_world_size_2_runs_across_both_nodes(sl, state_home):
    events = Events()
    command = ["python", TORCH_JOB, "--steps", "3", "--engine", "torch"]
    job = await launch(spec(state_home, command, 2), sink=events)
    try:
        state = await job.wait()
    finally:
        await job.close()
    assert state.state == "done", (state, events.failures())
    lines = {(e.host, e.rank): e.text for e in events.logs("worker") if e.text.startswith("rank")}
    assert sorted(lines) == [("n1", 0), ("n2", 1)]
    assert lines[("n1", 0)].startswith("rank 0 of 2") and lines[("n2", 1)].startswith("rank 1 of 2")
    sums = {e.text for e in events.logs("worker") if e.text.startswith("step 2")}
    assert sums == {"step 2 sum=3"}  # both ranks reduced over the same group


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Tiny packed demo data for a real `imgscale train --engine torch` job."""
    pytest.importorskip("torch", reason="the torch engine is an extra: pip install -e .[torch]")
    import torchdata

    return torchdata.demo_rec(tmp_path_factory.mktemp("slurmdemo"), 4, 200, 0.8, 20)


async def test_a_sigkilled_rank_fails_the_job_and_the_relaunch_resumes_training(
    sl, demo, state_home
):
    from test_launch_torch import train_command  # the same real training as over SSH

    prefix = str(state_home / "ck" / "r18")
    events = Events()
    job = await launch(
        spec(state_home, train_command(demo, prefix, EPOCHS), 2, max_restarts=1, resume_prefix=prefix,
             env={"OMP_NUM_THREADS": "1"}),
        sink=events,
    )  # fmt: skip
    try:
        # rank 1 logs a batch of epoch 1: rank 0 has written r18-0001.pt before joining that step
        await events.wait_for(
            lambda e: getattr(e, "rank", None) == 1 and "Epoch[1] Batch" in getattr(e, "text", ""),
            300,
            "rank 1 training in epoch 1",
        )
        victim = next(p for p in jobs.load(job.job_id).processes if p.rank == 1)
        _w, _g, pid = (int(x) for x in Path(victim.prefix + ".pid").read_text().split())
        os.kill(pid, signal.SIGKILL)
        relaunching, _t = await events.wait_for(
            lambda e: isinstance(e, JobState) and e.state == "relaunching", 60, "the relaunch"
        )
        failure = events.failures()[0]
        # rank 1 itself (SIGKILL), or rank 0 when its failed collective ended first
        assert (failure.source == "worker 1 on n2" and "SIGKILL" in failure.message) or (
            failure.source == "worker 0 on n1"
        ), failure
        final = await job.wait()
    finally:
        await job.close()
    assert final.state == "done" and final.restarts == 1, events.failures()
    after = events.events[events.events.index(relaunching) :]
    # every rank of the new attempt resumed from the same newest epoch checkpoint, before the end
    pattern = re.compile(rf"Resuming from {re.escape(prefix)}-(\d+)\.pt: epoch")
    resumed = {(e.rank, m[1]) for e in after if (m := pattern.search(getattr(e, "text", "")))}
    assert {rank for rank, _ in resumed} == {0, 1} and len({n for _, n in resumed}) == 1, resumed
    assert 1 <= int(next(iter(resumed))[1]) < EPOCHS
    assert jobs.load(job.job_id).attempt == 1 and Path(f"{prefix}-{EPOCHS:04d}.pt").is_file()
    assert processes_of(job.job_id) == []


async def test_probe_reaches_the_allocated_nodes_and_kill_cancels_the_job(sl, state_home):
    events = Events()
    command = ["python", TORCH_JOB, "--steps", "100000", "--pause", "0.05", "--engine", "torch"]
    job = await launch(spec(state_home, command, 2), sink=events)
    try:
        await events.wait_for(lambda e: "step 1 " in getattr(e, "text", ""), 120, "progress")
        probe = cli("probe", "--job", job.job_id, "--once")
        assert probe.returncode == 0, probe.stderr
        probed = {line.split()[0] for line in probe.stdout.splitlines() if line.strip()}
        assert {"n1", "n2"} <= probed, probe.stdout
        out = cli("kill", job.job_id)
        assert out.returncode == 0, out.stderr
        state = await job.wait()
    finally:
        await job.close()
    assert state.state == "stopped"
    slurm_state = slurm.job_state(jobs.load(job.job_id).scheduler_id)
    assert slurm_state is not None and slurm_state.state == "CANCELLED"
    assert processes_of(job.job_id) == []


async def test_a_job_asking_for_more_nodes_than_are_up_waits_with_its_reason(sl, state_home):
    events = Events()
    job = await launch(
        spec(state_home, ["python", TORCH_JOB, "--engine", "torch"], 3, slurm={"nodes": 3}),
        sink=events,
    )
    try:
        pending, _t = await events.wait_for(
            lambda e: isinstance(e, JobState) and "PENDING (" in e.message, 60, "the pending state"
        )
        assert pending.state == "starting"
        assert "position 1 in the queue" in pending.message
        state = await job.stop()
    finally:
        await job.close()
    assert state.state == "stopped"
    assert slurm.job_state(jobs.load(job.job_id).scheduler_id).state == "CANCELLED"


def test_detached_launch_then_attach_and_jobs_from_the_command_line(sl, state_home):
    env = {"IMGSCALE_HOME": os.environ["IMGSCALE_HOME"]}
    started = cli(
        "launch", "--launcher", "slurm", "-n", "2", "--nodes", "2", "--detach", "--job", "sl1",
        "--run-dir", str(state_home / "runs"), "--",
        "python", TORCH_JOB, "--steps", "3", "--engine", "torch", env=env,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    attached = cli("attach", "sl1", env=env)
    assert attached.returncode == 0, attached.stderr
    assert "n1 worker 0 | rank 0 of 2" in attached.stdout
    assert "n2 worker 1 | rank 1 of 2" in attached.stdout
    # `attach` ends when SLURM says the job ended; the background supervisor records it on its
    # next poll of SLURM (within POLL_S), so the record may still say running for that moment
    asyncio.run(wait_until(lambda: not jobs.load("sl1").active, 30, "the supervisor's record"))
    listed = cli("jobs", env=env)
    record = jobs.load("sl1")
    assert record.state == "done" and f"SLURM {record.scheduler_id}" in listed.stdout


async def test_a_slurm_workspace_plans_launches_and_shows_the_allocated_nodes(sl, tmp_path):
    """The console's way: workspace.toml says launcher = "slurm"; the hosts grid is the job's nodes."""
    from engine import api
    from engine import workspace as wsmod

    folder = api.create_demo_workspace(tmp_path / "ws")
    ws = wsmod.load(folder)
    ws.config.update(launcher="slurm", slurm={"nodes": 2, "time": "10"})
    ws.config["train"].update(
        engine="torch", workers=2, num_epochs=1, extra_args=["--num-batches", "400"]
    )
    wsmod.save_config(ws.path, ws.config)
    session = await api.open_workspace(folder)
    seen: list = []

    async def collect() -> None:
        async for event in session.events():
            seen.append(event)

    reader = asyncio.create_task(collect())
    try:
        plan = await session.plan_launch("benchmark")
        assert not plan.blocking, plan.findings
        assert plan.hosts == ("SLURM",) and plan.engine == "torch"
        await wait_until(lambda: _state_of(seen, "SLURM", "no job yet"), 30, "the waiting row")
        job_id = await session.launch("benchmark")
        await wait_until(
            lambda: {"n1", "n2"} <= {e.host for e in seen if type(e).__name__ == "HostSample"},
            120,
            "samples of both allocated nodes",
        )
        record = jobs.load(job_id)
        assert record.scheduler_id and record.launch_args["slurm"] == {"nodes": 2, "time": "10"}
        await session.stop_job()
    finally:
        reader.cancel()
        await session.close()
    assert jobs.load(job_id).state == "stopped"


def _state_of(events, host: str, words: str) -> bool:
    return any(
        type(e).__name__ == "HostState" and e.host == host and words in e.reason for e in events
    )


def test_no_value_runs_as_a_line_of_the_batch_script_under_real_slurm(sl, state_home, tmp_path):
    """A newline in --sbatch-arg is refused before sbatch; shell words in the folder stay words."""
    folder = tmp_path / "a $(touch INJECTED) b"
    folder.mkdir()
    env = {**os.environ, "IMGSCALE_HOME": os.environ["IMGSCALE_HOME"]}

    def launch_here(*flags: str) -> subprocess.CompletedProcess:
        argv = ["launch", "--launcher", "slurm", "-n", "1", "-s", "0", *flags,
                "--run-dir", str(state_home / "runs"), "--", "sh", "-c", "pwd"]  # fmt: skip
        return subprocess.run([sys.executable, "-m", "engine", *argv], capture_output=True,
                              text=True, timeout=120, cwd=folder, env=env)  # fmt: skip

    refused = launch_here("--sbatch-arg=--comment=x\ntouch INJECTED")
    assert refused.returncode == 2 and "--sbatch-arg" in refused.stderr, refused.stderr
    assert sl.job_ids() == []
    ran = launch_here("--job", "quoted", "--sbatch-arg=--comment=$(touch INJECTED)")
    assert ran.returncode == 0, ran.stderr
    assert f"| {folder}" in ran.stdout, ran.stdout  # the job ran in the odd folder, as written
    assert jobs.load("quoted").state == "done"
    assert not list(tmp_path.rglob("INJECTED")) and not list(state_home.rglob("INJECTED"))


async def test_a_second_ctrl_c_kills_a_slurm_job_whose_ranks_ignore_term(sl, state_home):
    """kill_now (the launcher's second Ctrl-C): every step KILLed, the job cancelled and stopped."""
    events = Events()
    ignores_term = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                    "print('ready', flush=True); time.sleep(600)")  # fmt: skip
    job = await launch(
        spec(state_home, ["python", "-c", ignores_term], 2, num_servers=0), sink=events
    )
    try:
        await events.wait_for(lambda e: getattr(e, "text", "") == "ready", 120, "a running rank")
        state = await asyncio.wait_for(job.kill_now("killed (Ctrl-C twice)"), 60)
    finally:
        await job.close()
    assert state.state == "stopped" and jobs.load(job.job_id).state == "stopped"
    assert slurm.job_state(jobs.load(job.job_id).scheduler_id).state == "CANCELLED"
    assert processes_of(job.job_id) == []


async def test_a_finished_slurm_job_posts_its_alert_to_a_webhook(sl, state_home):
    hook = Webhook()
    command = ["python", TORCH_JOB, "--steps", "3", "--engine", "torch"]
    try:
        job = await launch(spec(state_home, command, 2, alerts={"notify": hook.url + "/sl"}))
        try:
            state = await job.wait()
        finally:
            await job.close()  # waits for the delivery under way
        assert state.state == "done"
        path, alert = hook.next()
        assert path == "/sl" and (alert["job"], alert["kind"]) == (job.job_id, "finished")
        shared = [
            p for p in (state_home / "runs").rglob("*") if p.is_file()
        ]  # the nodes read these
        assert shared and not [p for p in shared if hook.url.encode() in p.read_bytes()]
    finally:
        hook.close()
