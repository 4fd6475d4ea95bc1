"""Reaching the nodes of a running SLURM job: commands run as `srun --overlap` steps of that job.

Many sites refuse SSH to compute nodes (or allow it only through pam_slurm_adopt); a step that
overlaps the job's own steps always works for the job's owner. The hosts grid of a SLURM job probes
its allocated nodes this way: the same shell line a LocalTransport would run, wrapped in a step
pinned to one node. Everything else is LocalTransport's (a process group per command, streams).
"""

from __future__ import annotations

from engine.cluster.hosts import HostSpec
from engine.cluster.transport.local import LocalTransport


def srun_prefix(slurm_job: str, node: str) -> list[str]:
    """The srun words that run one task on ``node`` inside ``slurm_job``, beside its steps."""
    return [
        "srun",
        f"--jobid={slurm_job}",
        "--overlap",
        "--nodes=1",
        "--ntasks=1",
        f"--nodelist={node}",
        "--quiet",
    ]


class SrunTransport(LocalTransport):
    """One allocated node of one SLURM job."""

    def __init__(self, spec: HostSpec) -> None:
        super().__init__(spec.name, env=spec.env, path_prepend=spec.path_prepend)
        self.slurm_job = spec.option("slurm_job") or ""

    def _argv(self, line: str) -> list[str]:
        return [*srun_prefix(self.slurm_job, self.host), "/bin/sh", "-c", line]


def node_spec(node: str, address: str, slurm_job: str) -> HostSpec:
    """A node of a SLURM job as a host the probes can reach (through srun, not SSH)."""
    return HostSpec(
        name=node, address=address, options={"transport": "srun", "slurm_job": slurm_job}
    )
