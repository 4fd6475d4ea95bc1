"""Benchmark: launch 2 processes on each of 16 SSH hosts (16 real sshd on loopback) - target under 5 s.

Measures, for `engine.train.launch.launch.launch`: the time until launch() returns (every process
started detached) and the time until every process is seen running by the supervisor's status
channels, then stops the job on every host. Not a test; run:

    .venv/bin/python benchmarks/bench_launch.py [--hosts 16] [--per-host 2] [--rounds 3]

MXNet's tools/launch.py is not run as the reference: it fails on Python >= 3.9 (Thread.isAlive)
and starts one `ssh` client process per remote process; the figure printed is ours alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from sshd import SshCluster  # noqa: E402  (tests/ holds the sshd fixture code)

TARGET_S = 5.0


async def one_round(cluster: SshCluster, per_host: int, run_root: str) -> tuple[float, float]:
    from engine.events import JobState
    from engine.train.launch.launch import LaunchSpec, launch

    hosts = len(cluster.hosts)
    running = asyncio.Event()

    def sink(event) -> None:
        if isinstance(event, JobState) and event.state == "running":
            running.set()

    spec = LaunchSpec(
        command=("sleep", "60"),
        num_workers=hosts * per_host,
        num_servers=0,
        hosts_file=str(cluster.hosts_file),
        run_root=run_root,
        grace_s=1,
    )
    t0 = time.perf_counter()
    job = await launch(spec, sink=sink)
    started = time.perf_counter() - t0
    await asyncio.wait_for(running.wait(), 60)
    all_running = time.perf_counter() - t0
    await job.stop("benchmark done")
    await job.close()
    return started, all_running


def write_hosts(cluster: SshCluster, per_host: int) -> None:
    cluster.hosts_file.write_text(cluster.hosts_text(slots=per_host))


async def main_async(
    args: argparse.Namespace, cluster: SshCluster, root: Path
) -> list[tuple[float, float]]:
    results = []
    for _ in range(args.rounds):
        results.append(await one_round(cluster, args.per_host, str(root / "runs")))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--per-host", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="bench-launch-") as tmp:
        root = Path(tmp)
        os.environ["IMGSCALE_HOME"] = str(root / "home")
        cluster = SshCluster.start(root / "sshd", count=args.hosts, first_address=10)
        try:
            write_hosts(cluster, args.per_host)
            results = asyncio.run(main_async(args, cluster, root))
        finally:
            cluster.close()
    procs = args.hosts * args.per_host
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"launch of {procs} processes on {args.hosts} sshd hosts (loopback, {os.cpu_count()} cores, "
        f"load average {load})"
    )
    for i, (started, running) in enumerate(results, 1):
        print(
            f"  round {i}: launch() returned in {started:.2f} s, all {procs} running in {running:.2f} s"
        )
    best = min(r for _, r in results)
    worst = max(r for _, r in results)
    verdict = "within" if worst <= TARGET_S else "OVER"
    print(
        f"all running: best {best:.2f} s, worst {worst:.2f} s - {verdict} the {TARGET_S:.0f} s target"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
