"""`imgscale train` as the launcher runs it: a 2-worker dist_sync job across the sshd test hosts."""

from __future__ import annotations

import re
import signal
from dataclasses import replace

import pytest
from trainrun import COMMON, ROOT, data_args

from engine.events import EpochSummary, LogLine
from engine.train import checkpoints as ck
from engine.train.logparse import LogParser, latest_summaries

pytestmark = [pytest.mark.cluster, pytest.mark.mxnet, pytest.mark.slow]


def three_epochs(cluster, data, tmp_path, prefix, *extra):
    """A 2-worker dist_sync resnet-18 job on the test hosts, 3 epochs, checkpoints at PREFIX."""
    from engine.train.launch.launch import LaunchSpec

    argv = [*COMMON, *data_args(data), "--kv-store", "dist_sync", "--num-epochs", "3"]
    argv += ["--batch-size", "16", "--lr-step-epochs", "10", "--model-prefix", prefix, *extra]
    return LaunchSpec(
        command=("python", "-m", "engine.train.run", *argv),
        num_workers=2,
        num_servers=1,
        hosts_file=str(cluster.hosts_file),
        env={"OMP_NUM_THREADS": "1", "MXNET_CPU_WORKER_NTHREADS": "1"},
        cwd=ROOT,
        run_root=str(tmp_path / "runs"),
        stall_timeout_s=180,
    )


async def test_dist_sync_across_ssh_hosts_learns_and_the_console_parser_reads_every_worker(
    ssh_cluster, demo_rec, tmp_path, monkeypatch
):
    from engine.train.launch.launch import launch

    monkeypatch.setenv("IMGSCALE_HOME", str(tmp_path / "home"))
    prefix = str(tmp_path / "ck" / "r18")
    spec = three_epochs(ssh_cluster, demo_rec, tmp_path, prefix, "--disp-batches", "5")
    lines: list[LogLine] = []
    job = await launch(spec, sink=lambda e: lines.append(e) if isinstance(e, LogLine) else None)
    try:
        final = await job.wait()
    finally:
        await job.close()
    assert final.state == "done", [x.text for x in lines[-20:]]
    parsers: dict[tuple[str, int], LogParser] = {}
    events = []
    for line in lines:
        if line.role == "worker":
            key = (line.host, line.rank)
            events += parsers.setdefault(key, LogParser(*key)).feed(line.text)
    summaries = latest_summaries(events)
    workers = {(s.host, s.rank) for s in summaries if isinstance(s, EpochSummary)}
    assert len(workers) == 2  # both workers' epochs, attributed to their host and rank
    finals = [dict(s.validation)["accuracy"] for s in summaries if s.epoch == 2]
    # each worker scores its half of the validation set; chance is 0.10 (the same job run
    # without ssh, tests/train/test_train_mxnet.py, reaches 0.52 and 0.55)
    assert len(finals) == 2 and sum(finals) / 2 >= 0.3, finals
    assert ck.newest_checkpoint(prefix) == 3


def resume_line(text: str) -> tuple[str, int, int] | None:
    """(params path, epoch, batch) of the trainer's 'resume: from P at epoch E batch B' line."""
    match = re.search(r"resume: from (\S+) at epoch (\d+) batch (\d+)", text)
    return None if match is None else (match[1], int(match[2]), int(match[3]))


async def test_a_sigkilled_worker_relaunches_every_worker_from_the_newest_checkpoint(
    ssh_cluster, demo_rec, tmp_path, monkeypatch
):
    """The real --resume-prefix path: no hook of the test's own, the launcher's checkpoint_resume."""
    from cluster.launch_helpers import Events, pid_record

    from engine.train.launch.launch import launch

    monkeypatch.setenv("IMGSCALE_HOME", str(tmp_path / "home"))
    prefix = str(tmp_path / "ck" / "r18")  # in the shared folder: rank 0 writes, all read
    spec = replace(
        three_epochs(ssh_cluster, demo_rec, tmp_path, prefix),
        max_restarts=1,
        grace_s=3,
        resume_prefix=prefix,
    )
    events = Events()
    job = await launch(spec, sink=events)
    try:
        # a checkpoint exists: seen in rank 0's log, not guessed from the time
        await events.wait_for(
            lambda e: isinstance(e, LogLine) and f'Saved checkpoint to "{prefix}-0001' in e.text,
            300,
            "the first checkpoint",
        )
        victim = next(p for p in job.record.processes if p.role == "worker" and p.rank == 1)
        ssh_cluster.kill(victim.host, pid_record(victim.prefix)[2], signal.SIGKILL)
        final = await job.wait()
    finally:
        await job.close()
    assert final.state == "done" and final.restarts == 1, events.failures()
    assert "SIGKILL" in events.failures()[0].message

    resumes = [(e.rank, resume_line(e.text)) for e in events.logs("worker") if resume_line(e.text)]
    assert sorted(rank for rank, _ in resumes) == [0, 1]  # every worker of the relaunch resumed
    (point,) = {where for _, where in resumes}  # from the same checkpoint
    epoch = point[1]
    assert point == (ck.params_path(prefix, epoch), epoch, 0) and epoch >= 1
    # the relaunch continued at that epoch and finished the run
    first_resume = next(e for e in events.logs("worker") if resume_line(e.text))
    relaunched = events.events.index(first_resume)
    later = [e.text for e in events.events[relaunched:] if isinstance(e, LogLine)]
    trained = sorted({int(m[1]) for t in later if (m := re.search(r"Epoch\[(\d+)\] Train-", t))})
    assert trained == list(range(epoch, 3))
    assert ck.newest_checkpoint(prefix) == 3
