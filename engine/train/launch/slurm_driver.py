"""Inside a SLURM allocation: place a training job's processes on the allocated nodes and run them.

`sbatch` runs this on the first node of the allocation (engine.cluster.slurm.sbatch writes the batch
script). From the plan file it asks the job's Engine to place the processes as `imgscale launch`
places them over SSH — MXNet's scheduler on the first node, servers round-robin, workers filling
each node's tasks; torch ranks node by node with torchrun's variables — and hands them to
engine.cluster.slurm.steps, which starts each as an srun step and stops the rest when one fails. The
batch script's exit status is the job's. ``PREFIX/../procs.json`` tells the login node which
process runs where.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.cluster.process import jobs
from engine.cluster.slurm import sbatch as slurm
from engine.cluster.slurm.steps import (
    Process,
    allocation,
    attempt_dir,
    free_port,
    start,
    supervise,
    write_private,
)
from engine.errors import UserError

from . import registry
from .dmlc_env import identity_env
from .engines import Layout, Rendezvous
from .placement import Placement


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


# ---- placing ------------------------------------------------------------------------------------
def plan_processes(
    plan: Plan, nodes: Sequence[str], tasks: Sequence[int], addresses: Mapping[str, str], port: int
) -> list[Process]:
    """Every process of the job on the allocated ``nodes`` (``tasks``: SLURM's tasks per node)."""
    engine = registry.engine_named(plan.engine)
    placement = engine.place(Layout(plan.num_workers, plan.num_servers), list(tasks))
    used = [p.host for p in placement]
    master = addresses[nodes[used[0] if used else 0]]
    meet = Rendezvous(plan.job, plan.attempt, master, port, plan.interface)
    envs = engine.environments(meet, placement, [addresses[n] for n in nodes])
    workers_on = [
        sum(1 for p in placement if p.role == "worker" and p.host == i) for i in range(len(nodes))
    ]
    procs = []
    for p, engine_env in zip(placement, envs):
        node = nodes[p.host]
        env = {**(plan.env or {}), **engine_env, **identity_env(plan.job, plan.attempt, p, node)}
        gpus = engine.gpus_per_process(p.role, plan.gpus_per_node, workers_on[p.host])
        procs.append(Process(_record(plan, node, p), node, env, gpus, engine.light(p.role)))
    return procs


def _record(plan: Plan, node: str, p: Placement) -> jobs.ProcRecord:
    prefix = jobs.run_prefix(os.path.expanduser(plan.run_root), plan.job, plan.attempt, p.name)
    return jobs.ProcRecord(node, p.role, p.rank, prefix)


def run(plan: Plan) -> int:
    nodes, tasks = allocation()
    procs = plan_processes(plan, nodes, tasks, slurm.node_addresses(nodes), free_port())
    folder = attempt_dir(plan.run_root, plan.job, plan.attempt)
    os.makedirs(folder, exist_ok=True)
    write_private(f"{folder}/procs.json", json.dumps([asdict(p.record) for p in procs]))
    sruns = [start(p, plan.cwd, plan.command) for p in procs]
    code, message = supervise(procs, sruns)
    outcome = {"status": code, "message": message, "time": time.time()}
    write_private(f"{folder}/outcome.json", json.dumps(outcome))
    print(f"imgscale: {message}", flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m engine.train.launch.slurm_driver PLAN.json", file=sys.stderr)
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
