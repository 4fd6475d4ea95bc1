"""`imgscale train` as the launcher runs it: a 2-worker dist_sync job across the sshd test hosts."""

from __future__ import annotations

import pytest
from trainrun import COMMON, ROOT, data_args

from engine.events import EpochSummary, LogLine
from engine.train import checkpoints as ck
from engine.train.logparse import LogParser, latest_summaries

pytestmark = [pytest.mark.cluster, pytest.mark.mxnet, pytest.mark.slow]


async def test_dist_sync_across_ssh_hosts_learns_and_the_console_parser_reads_every_worker(
    ssh_cluster, demo_rec, tmp_path, monkeypatch
):
    from engine.cluster.launcher import LaunchSpec, launch

    monkeypatch.setenv("IMGSCALE_HOME", str(tmp_path / "home"))
    prefix = str(tmp_path / "ck" / "r18")
    argv = [*COMMON, *data_args(demo_rec), "--kv-store", "dist_sync", "--num-epochs", "3"]
    argv += [
        "--batch-size",
        "16",
        "--lr-step-epochs",
        "10",
        "--disp-batches",
        "5",
        "--model-prefix",
        prefix,
    ]
    spec = LaunchSpec(
        command=("python", "-m", "engine.train.run", *argv),
        num_workers=2,
        num_servers=1,
        hosts_file=str(ssh_cluster.hosts_file),
        env={"OMP_NUM_THREADS": "1", "MXNET_CPU_WORKER_NTHREADS": "1"},
        cwd=ROOT,
        run_root=str(tmp_path / "runs"),
        stall_timeout_s=180,
    )
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
