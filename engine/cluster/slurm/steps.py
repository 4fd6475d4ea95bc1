"""Inside a SLURM allocation: start planned processes as srun steps and supervise them.

Generic over what runs (engine.train.launch.slurm_driver places a training job's processes and
calls these): each process is one `srun` step running the same wrapper as a detached SSH process
(PREFIX.log, .pid, .status under the job's run folder), its environment passed through srun's own
(never on a command line). The first process that fails stops the others, so no survivor waits in a
collective.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.cluster.process import jobs
from engine.cluster.process.detach import WRAPPER
from engine.cluster.slurm import sbatch as slurm
from engine.paths import write_text_atomic

POLL_S = 0.2
GRACE_S = 5.0
# After the last main process ends well, light ones (ps-lite's scheduler and servers) end by
# themselves; wait this long.
DRAIN_S = 30.0


@dataclass(frozen=True)
class Process:
    """One process of the job: where it runs, its files, and its environment."""

    record: jobs.ProcRecord
    node: str
    env: Mapping[str, str]
    gpus: int = 0
    light: bool = False  # holds no GPU, shares a node's tasks (--overlap), ends after the others


def write_private(path: str, text: str) -> None:
    """Write ``path`` atomically, readable by its owner alone (it may hold --env secrets)."""
    write_text_atomic(path, text, private=True)


def attempt_dir(run_root: str, job: str, attempt: int) -> str:
    return os.path.dirname(jobs.run_prefix(os.path.expanduser(run_root), job, attempt, "x"))


# ---- starting ------------------------------------------------------------------------------------
def srun_argv(proc: Process, cwd: str, command: Sequence[str]) -> list[str]:
    """One srun step running the detach wrapper around ``command`` on ``proc.node``."""
    argv = [
        "srun",
        "--nodes=1",
        "--ntasks=1",
        f"--nodelist={proc.node}",
        f"--job-name={proc.record.name}",
        "--kill-on-bad-exit=0",
        "--output=/dev/null",
        "--error=/dev/null",
        "--input=none",
    ]
    if proc.light:
        argv.append("--overlap")  # light processes beside the workers' tasks, holding no GPU
    else:
        argv.append("--exact")
        if proc.gpus:
            argv.append(f"--gpus={proc.gpus}")
    return argv + ["sh", "-c", WRAPPER, "imgscale-run", proc.record.prefix, cwd, *command]


def start(proc: Process, cwd: str, command: Sequence[str]) -> subprocess.Popen:
    env = {**os.environ, **proc.env}
    for key in ("SLURM_NTASKS", "SLURM_NPROCS", "SLURM_NNODES", "SLURM_NTASKS_PER_NODE"):
        env.pop(key, None)  # the batch step's totals would override the step's own -n/-N
    return subprocess.Popen(
        srun_argv(proc, cwd, command),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def exit_status(proc: Process, srun: subprocess.Popen) -> int:
    """The command's own status (the wrapper's .status file), else srun's."""
    try:
        return int(Path(proc.record.prefix + ".status").read_text().strip())
    except (OSError, ValueError):
        return srun.returncode if srun.returncode is not None else 1


# ---- supervising -----------------------------------------------------------------------------------
def supervise(procs: Sequence[Process], sruns: Sequence[subprocess.Popen]) -> tuple[int, str]:
    """Wait for the job; the first failure stops the rest. (exit status, message)."""
    workers = [i for i, p in enumerate(procs) if not p.light]
    drain_since = None
    while True:
        ended = {i: exit_status(procs[i], s) for i, s in enumerate(sruns) if s.poll() is not None}
        failed = [i for i, code in ended.items() if code != 0]
        if failed:
            # a process killed by a signal is the cause; peers failing in a collective follow it
            i = ([j for j in failed if ended[j] > 128] or failed)[0]
            stop_all(sruns)
            return ended[
                i
            ], f"{procs[i].record.name} on {procs[i].node} exited with status {ended[i]}"
        if all(srun.poll() is not None for srun in sruns):
            return 0, "every process ended well"
        if all(sruns[i].poll() is not None for i in workers):
            drain_since = drain_since or time.monotonic()
            if time.monotonic() - drain_since > DRAIN_S:
                stop_all(sruns)
                return 0, "workers ended well; scheduler and servers stopped"
        time.sleep(POLL_S)


def stop_all(sruns: Sequence[subprocess.Popen]) -> None:
    """TERM every step still running (srun passes it to the task), KILL after the grace period."""
    for srun in sruns:
        if srun.poll() is None:
            os.killpg(srun.pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(s.poll() is None for s in sruns):
        time.sleep(POLL_S)
    for srun in sruns:
        if srun.poll() is None:
            os.killpg(srun.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def allocation() -> tuple[list[str], list[int]]:
    """The allocated nodes and how many tasks each holds."""
    nodes = list(slurm.expand_nodes(os.environ["SLURM_JOB_NODELIST"]))
    tasks = slurm.parse_tasks_per_node(os.environ["SLURM_TASKS_PER_NODE"])
    return nodes, tasks
