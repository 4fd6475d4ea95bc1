"""Inside a SLURM allocation: place the job's processes on the allocated nodes and run each with srun.

`sbatch` runs this on the first node of the allocation (engine.cluster.slurm writes the batch
script). From the plan file it places the processes as `imgscale launch` places them over SSH —
MXNet's scheduler on the first node, servers round-robin, workers filling each node's tasks; torch
ranks node by node with torchrun's variables — gives each its environment (never on a command line:
srun passes this process's environment on), and starts each as one `srun` step running the same
wrapper as a detached SSH process (PREFIX.log, .pid, .status under the job's run folder). The first
process that fails stops the others, so no survivor waits in a collective; the batch script's exit
status is the job's. ``PREFIX/../procs.json`` tells the login node which process runs where.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import UserError
from engine.paths import write_text_atomic

from . import jobs, slurm
from .detach import WRAPPER
from .dmlc_env import ClusterEnv, identity_env, process_env
from .placement import SCHEDULER, SERVER, WORKER, Placement, place
from .torch_env import interface_env, torch_env

POLL_S = 0.2
GRACE_S = 5.0
# After the last worker ends well, ps-lite's scheduler and servers end by themselves; wait this long.
DRAIN_S = 30.0


@dataclass(frozen=True)
class Plan:
    """What the login node asked for (the JSON file the batch script names; mode 0600)."""

    job: str
    attempt: int
    engine: str  # mxnet | torch
    command: tuple[str, ...]
    num_workers: int
    num_servers: int = 0
    env: Mapping[str, str] | None = None
    cwd: str = "."
    run_root: str = jobs.DEFAULT_RUN_ROOT
    gpus_per_node: int = 0
    interface: str | None = None

    @classmethod
    def read(cls, path: str) -> Plan:
        data = json.loads(Path(path).read_text())
        data["command"] = tuple(data["command"])
        return cls(**data)

    def write(self, path: str) -> None:
        write_private(path, json.dumps(asdict(self), indent=1))


@dataclass(frozen=True)
class Process:
    """One process of the job: where it runs, its files, and its environment."""

    record: jobs.ProcRecord
    node: str
    env: Mapping[str, str]
    gpus: int = 0


def write_private(path: str, text: str) -> None:
    """Write ``path`` atomically, readable by its owner alone (it may hold --env secrets)."""
    write_text_atomic(path, text, private=True)


def attempt_dir(run_root: str, job: str, attempt: int) -> str:
    return os.path.dirname(jobs.run_prefix(os.path.expanduser(run_root), job, attempt, "x"))


# ---- placing ------------------------------------------------------------------------------------
def plan_processes(
    plan: Plan, nodes: Sequence[str], tasks: Sequence[int], addresses: Mapping[str, str], port: int
) -> list[Process]:
    """Every process of the job on the allocated ``nodes`` (``tasks``: SLURM's tasks per node)."""
    if plan.engine == "torch":
        return _torch_processes(plan, nodes, tasks, addresses, port)
    return _mxnet_processes(plan, nodes, tasks, addresses, port)


def _mxnet_processes(plan, nodes, tasks, addresses, port) -> list[Process]:
    places = place(plan.num_workers, plan.num_servers, list(tasks))
    cluster = ClusterEnv(
        plan.job,
        addresses[nodes[0]],
        port,
        plan.num_workers,
        sum(1 for p in places if p.role == SERVER),
        plan.interface,
        attempt=plan.attempt,
    )
    workers_on = [
        sum(1 for p in places if p.role == WORKER and p.host == i) for i in range(len(nodes))
    ]
    procs = []
    for p in places:
        node = nodes[p.host]
        env = process_env(cluster, p, addresses[node], node, plan.env)
        gpus = plan.gpus_per_node // max(1, workers_on[p.host]) if p.role == WORKER else 0
        procs.append(Process(_record(plan, node, p), node, env, gpus))
    return procs


def _torch_processes(plan, nodes, tasks, addresses, port) -> list[Process]:
    envs = torch_env([addresses[n] for n in nodes], list(tasks), addresses[nodes[0]], port)
    user_env = {**(plan.env or {}), **interface_env(plan.interface)}
    procs = []
    for env in envs:
        node = nodes[int(env["GROUP_RANK"])]
        p = Placement(WORKER, int(env["RANK"]), int(env["GROUP_RANK"]))
        full = {**user_env, **env, **identity_env(plan.job, plan.attempt, p, node)}
        procs.append(Process(_record(plan, node, p), node, full, 1 if plan.gpus_per_node else 0))
    return procs


def _record(plan: Plan, node: str, p: Placement) -> jobs.ProcRecord:
    prefix = jobs.run_prefix(os.path.expanduser(plan.run_root), plan.job, plan.attempt, p.name)
    return jobs.ProcRecord(node, p.role, p.rank, prefix)


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
    if proc.record.role in (SCHEDULER, SERVER):
        argv.append("--overlap")  # light processes beside the workers' tasks, holding no GPU
    else:
        argv.append("--exact")
        if proc.gpus:
            argv.append(f"--gpus={proc.gpus}")
    return argv + ["sh", "-c", WRAPPER, "imgscale-run", proc.record.prefix, cwd, *command]


def start(proc: Process, plan: Plan) -> subprocess.Popen:
    env = {**os.environ, **proc.env}
    for key in ("SLURM_NTASKS", "SLURM_NPROCS", "SLURM_NNODES", "SLURM_NTASKS_PER_NODE"):
        env.pop(key, None)  # the batch step's totals would override the step's own -n/-N
    return subprocess.Popen(
        srun_argv(proc, plan.cwd, plan.command),
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
    workers = [i for i, p in enumerate(procs) if p.record.role == WORKER]
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


def run(plan: Plan) -> int:
    nodes, tasks = allocation()
    procs = plan_processes(plan, nodes, tasks, slurm.node_addresses(nodes), free_port())
    folder = attempt_dir(plan.run_root, plan.job, plan.attempt)
    os.makedirs(folder, exist_ok=True)
    write_private(f"{folder}/procs.json", json.dumps([asdict(p.record) for p in procs]))
    sruns = [start(p, plan) for p in procs]
    code, message = supervise(procs, sruns)
    outcome = {"status": code, "message": message, "time": time.time()}
    write_private(f"{folder}/outcome.json", json.dumps(outcome))
    print(f"imgscale: {message}", flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m engine.cluster.slurm_driver PLAN.json", file=sys.stderr)
        return 2
    signal.signal(
        signal.SIGTERM, lambda *_: sys.exit(143)
    )  # scancel: the job's end stops the steps
    try:
        return run(Plan.read(args[0]))
    except UserError as exc:
        print(f"imgscale: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
