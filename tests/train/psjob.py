"""A real ps-lite job on this machine: scheduler, servers and workers as subprocesses with DMLC_* env on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DistResult:
    worker_logs: list[str]
    worker_status: list[int]


def run_dist(
    worker_args: list[str],
    workers: int = 2,
    servers: int = 1,
    timeout: float = 240,
    extra_env: dict | None = None,
) -> DistResult:
    """Run `python -m engine.train.run ARGS` as `workers` dist workers; returns each worker's output and status."""
    base = dict(
        os.environ,
        DMLC_PS_ROOT_URI="127.0.0.1",
        DMLC_PS_ROOT_PORT=str(free_port()),
        DMLC_NUM_SERVER=str(servers),
        DMLC_NUM_WORKER=str(workers),
        DMLC_INTERFACE="lo",
        DMLC_NODE_HOST="127.0.0.1",
        OMP_NUM_THREADS="1",
        MXNET_CPU_WORKER_NTHREADS="1",
        PYTHONPATH=ROOT,
        **(extra_env or {}),
    )
    # importing mxnet with DMLC_ROLE=scheduler/server runs that role until the workers finish
    serve = [sys.executable, "-c", "import mxnet"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    helpers: list[subprocess.Popen] = []
    procs: list[subprocess.Popen] = []
    try:  # everything started is ended, whatever fails
        helpers.append(subprocess.Popen(serve, env=dict(base, DMLC_ROLE="scheduler"), **quiet))
        for _ in range(servers):
            helpers.append(subprocess.Popen(serve, env=dict(base, DMLC_ROLE="server"), **quiet))
        for r in range(workers):
            env = dict(base, DMLC_ROLE="worker", IMGSCALE_HOST=f"host{r}", IMGSCALE_RANK=str(r))
            command = [sys.executable, "-m", "engine.train.run", *map(str, worker_args)]
            procs.append(
                subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
        for h in helpers:
            h.wait(timeout=60)
    finally:
        for p in procs + helpers:
            if p.poll() is None:
                p.kill()
                p.wait()
    return DistResult(outputs, [p.returncode for p in procs])
