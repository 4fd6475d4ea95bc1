"""How fast a dead or hung torch rank stops the whole job over SSH, against torchrun (goal <= 5 s).

Starts two sshd test hosts (tests/sshd.py), launches `imgscale train --engine torch` of world size 2
(one rank per host, Gloo on CPU, tiny demo data) through `imgscale launch`, and once rank 1 steps:

  kill: SIGKILL rank 1; time until every process group of the job is gone on every host;
  hang: SIGSTOP rank 1; time until the job has failed and every group is gone.

The reference runs the same training under torchrun (one host, --nproc-per-node 2, its default
monitoring) with the same fault, timing until torchrun exits with every rank gone. Prints each
figure and ours/torchrun.

    .venv/bin/python benchmarks/bench_torch_failfast.py [--runs 2] [--dist-timeout 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "cluster")]

from launch_helpers import Events, pid_record  # noqa: E402
from sshd import SshCluster, sshd_available  # noqa: E402
from torchdata import demo_rec  # noqa: E402

from engine.events import JobState  # noqa: E402
from engine.train.launch.launch import LaunchSpec, launch  # noqa: E402

REFERENCE_LIMIT_S = 120.0  # torchrun with a hung rank waits for Gloo's 30 min default: cut here


def train_args(data: Path, dist_timeout: float) -> list[str]:
    return [
        "--engine", "torch", "--network", "resnet", "--num-layers", "18", "--width", "8",
        "--image-shape", "3,16,16", "--num-classes", "4", "--batch-size", "16",
        "--disp-batches", "2", "--data-nthreads", "1", "--num-epochs", "1000",
        "--kv-store", "dist_sync", "--dist-timeout", str(dist_timeout),
        "--data-train", str(data / "demo_train.rec"),
    ]  # fmt: skip


async def ours(cluster: SshCluster, folder: Path, data: Path, fault: str, timeout: float) -> float:
    events = Events()
    spec = LaunchSpec(
        command=("python", "-m", "engine", "train", *train_args(data, timeout)),
        num_workers=2,
        hosts_file=str(cluster.hosts_file),
        env={"OMP_NUM_THREADS": "1"},
        cwd=str(ROOT),
        run_root=str(folder / "runs"),
    )
    job = await launch(spec, sink=events)
    try:
        await events.wait_for(
            lambda e: getattr(e, "rank", None) == 1 and "Batch [" in getattr(e, "text", ""),
            300,
            "rank 1 stepping",
        )
        procs = job.record.processes
        groups = [(p.host, pid_record(p.prefix)[1]) for p in procs]
        victim = next(p for p in procs if p.rank == 1)
        fault_at = time.monotonic()
        cluster.kill(victim.host, pid_record(victim.prefix)[2], FAULTS[fault])
        await events.wait_for(
            lambda e: isinstance(e, JobState) and e.state in ("failed", "stopped"),
            120,
            "the job stopped",
        )
        while any(cluster.group_alive(h, g) for h, g in groups):
            await asyncio.sleep(0.05)  # the measurement's own poll: every group gone
        return time.monotonic() - fault_at
    finally:
        await job.close()


FAULTS = {"kill": signal.SIGKILL, "hang": signal.SIGSTOP}


def reference(data: Path, fault: str, timeout: float) -> float:
    """torchrun --nproc-per-node 2 on this machine, the same training, the same fault."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    argv = [*torchrun, "-m", "engine.train.torch.run", *train_args(data, timeout)[2:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("IMGSCALE_JOB", None)
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # until rank 1 steps (torchrun's workers log Node[1@host])
            if "Node[1@" in line and "Batch [" in line:  # Node[rank@host]
                break
        rank1 = _rank_pid(proc.pid, "1")
        fault_at = time.monotonic()
        os.kill(rank1, FAULTS[fault])
        try:
            proc.wait(timeout=REFERENCE_LIMIT_S)
        except subprocess.TimeoutExpired:
            return float("inf")
        return time.monotonic() - fault_at
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _rank_pid(root: int, rank: str) -> int:
    """The pid of torchrun's worker with RANK=rank: a descendant of ``root`` whose parent is not
    itself that rank (its data loader's workers inherit RANK too)."""
    parents = {pid: _ppid(pid) for pid in map(int, filter(str.isdigit, os.listdir("/proc")))}
    ranked = {pid for pid in parents if f"RANK={rank}".encode() in _environ(pid)}
    for pid in ranked:
        if parents[pid] not in ranked and _descends(pid, root, parents):
            return pid
    raise RuntimeError(f"torchrun's rank {rank} not found")


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _descends(pid: int, root: int, parents: dict[int, int]) -> bool:
    while pid > 1:
        if pid == root:
            return True
        pid = parents.get(pid, 0)
    return False


def show(name: str, times: list[float]) -> float:
    median = statistics.median(times)
    print(f"{name:<34} " + "  ".join(f"{t:6.2f}" for t in times) + f"   median {median:.2f} s")
    return median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--dist-timeout", type=float, default=5.0)
    parser.add_argument("--faults", default="kill,hang")
    args = parser.parse_args()
    reason = sshd_available()
    if reason:
        sys.exit(f"needs sshd test hosts: {reason}")
    folder = Path(tempfile.mkdtemp(prefix="bench-failfast-"))
    os.environ["IMGSCALE_HOME"] = str(folder / "home")
    data = demo_rec(folder, classes=4, per_class=200, train_ratio=0.8, edge=20)
    cluster = SshCluster.start(folder / "sshd", count=2, shared=(folder,))
    try:
        for fault in args.faults.split(","):
            mine = [
                asyncio.run(ours(cluster, folder, data, fault, args.dist_timeout))
                for _ in range(args.runs)
            ]
            a = show(f"{fault}: imgscale launch (2 hosts)", mine)
            ref = [reference(data, fault, args.dist_timeout) for _ in range(args.runs)]
            b = show(f"{fault}: torchrun (1 host)", ref)
            print(f"{fault}: ours/torchrun = {a / b:.2f}   goal: ours <= 5 s")
    finally:
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
