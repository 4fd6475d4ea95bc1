"""How fast a SIGKILLed rank stops a SLURM job: kill to 'failed' seen on the login node (goal ≤ 5 s).

Starts the tests' local SLURM (tests/slurm.py: munged, slurmctld, two slurmd), launches a torch
Gloo job of world size 2 through `--launcher slurm`, SIGKILLs rank 1 once it is stepping, and
measures the time until the login node's SlurmJob reports the job failed, the other rank gone.

    .venv/bin/python benchmarks/bench_slurm.py --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "cluster")]

from launch_helpers import Events  # noqa: E402
from slurm import SlurmCluster, slurm_available  # noqa: E402

from engine.cluster.process import jobs  # noqa: E402
from engine.events import JobState  # noqa: E402
from engine.train.launch.launch import LaunchSpec, launch  # noqa: E402

TORCH_JOB = str(ROOT / "tests" / "cluster" / "torch_dist_job.py")


async def one_run(folder: Path) -> float:
    events = Events()
    spec = LaunchSpec(
        command=("python", TORCH_JOB, "--steps", "100000", "--pause", "0.05", "--engine", "torch"),
        num_workers=2,
        launcher="slurm",
        run_root=str(folder / "runs"),
        cwd=str(folder),
        slurm={"nodes": 2},
    )
    job = await launch(spec, sink=events)
    try:
        await events.wait_for(lambda e: "step 3 " in getattr(e, "text", ""), 120, "progress")
        victim = next(p for p in jobs.load(job.job_id).processes if p.rank == 1)
        pid = int(Path(victim.prefix + ".pid").read_text().split()[2])
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        _event, seen = await events.wait_for(
            lambda e: isinstance(e, JobState) and e.state == "failed", 60, "the job failed"
        )
        return seen - killed
    finally:
        await job.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    reason = slurm_available()
    if reason:
        print(f"no local SLURM: {reason}")
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as tmp:
        folder = Path(tmp)
        os.environ["IMGSCALE_HOME"] = str(folder / "home")
        os.environ["PYTHONPATH"] = str(ROOT)
        cluster = SlurmCluster.start(folder / "slurm", nodes=2)
        os.environ.update(cluster.env)
        try:
            times = [asyncio.run(one_run(folder)) for _ in range(args.runs)]
        finally:
            cluster.close()
    print("kill -> job failed on the login node: " + ", ".join(f"{t:.2f} s" for t in times))
    print(
        f"median {statistics.median(times):.2f} s (goal <= 5 s); load average {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
