"""torchrun's environment for each process of a torch job: pure functions, so any launcher can use them.

``imgscale launch`` (ssh/local), the single-host spawn of ``imgscale train --engine torch --gpus 0,1``
and a batch scheduler's launcher all derive the same variables from the same layout: hosts in
order, a process count per host. Ranks run host by host, local rank by local rank (torchrun's
order), so GROUP_RANK is the host's index and LOCAL_RANK the GPU a process drives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.errors import UserError

# What torch.distributed's env:// rendezvous and torchrun's workers read; set by the launcher only.
TORCH_VARS = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
)
DEFAULT_PORT = 29500  # torchrun's


def torch_env(
    hosts: Sequence[str],
    procs_per_host: int | Sequence[int],
    master_addr: str | None = None,
    master_port: int = DEFAULT_PORT,
) -> list[dict[str, str]]:
    """Environment of every process, host by host, local rank by local rank (torchrun semantics).

    ``procs_per_host`` is one count for all hosts (GPUs per host) or one per host (``host slots=N``).
    Process k of the returned list runs on ``hosts[GROUP_RANK]`` and drives GPU LOCAL_RANK there.
    ``master_addr`` is rank 0's host as the others reach it (default: ``hosts[0]``).
    """
    counts = _counts(hosts, procs_per_host)
    if not 0 < int(master_port) < 65536:
        raise UserError(f"master port {master_port}: choose a TCP port between 1 and 65535")
    world = sum(counts)
    envs, rank = [], 0
    for node, count in enumerate(counts):
        for local in range(count):
            envs.append(
                {
                    "MASTER_ADDR": master_addr or hosts[0],
                    "MASTER_PORT": str(int(master_port)),
                    "WORLD_SIZE": str(world),
                    "RANK": str(rank),
                    "LOCAL_RANK": str(local),
                    "LOCAL_WORLD_SIZE": str(count),
                    "GROUP_RANK": str(node),
                    "GROUP_WORLD_SIZE": str(len(hosts)),
                }
            )
            rank += 1
    return envs


def interface_env(interface: str | None) -> dict[str, str]:
    """--interface for torch: the NIC Gloo and NCCL open their sockets on."""
    if not interface:
        return {}
    return {"GLOO_SOCKET_IFNAME": interface, "NCCL_SOCKET_IFNAME": interface}


def describe(
    host_names: Sequence[str], counts: Sequence[int], master: str, port: int | str
) -> list[str]:
    """One line per host: the ranks it runs (``--dry-run`` and the console's plan dialog)."""
    lines, rank = [f"rendezvous: MASTER_ADDR={master} MASTER_PORT={port}"], 0
    for name, count in zip(host_names, counts):
        ranks = ", ".join(f"rank {rank + i} (local {i})" for i in range(count))
        lines.append(f"{name}: {ranks or '(nothing)'}")
        rank += count
    return lines


def refuse_without_world(env: Mapping[str, str]) -> str | None:
    """Why a torch process must not train alone: a launcher started it but gave no WORLD_SIZE."""
    if "WORLD_SIZE" in env:
        return None
    launcher = next((k for k in sorted(env) if k.startswith("DMLC_") or k == "IMGSCALE_JOB"), None)
    if launcher is None:
        return None
    return (
        f"started by a launcher ({launcher} is set) but WORLD_SIZE is not: this process would "
        "train alone. Launch torch jobs with `imgscale launch --engine torch …` (or a command "
        "with --engine torch), which sets MASTER_ADDR, RANK and WORLD_SIZE"
    )


def _counts(hosts: Sequence[str], procs_per_host: int | Sequence[int]) -> list[int]:
    if not hosts:
        raise UserError("no hosts: the hosts file lists no host to run the torch job on")
    counts = (
        [procs_per_host] * len(hosts) if isinstance(procs_per_host, int) else list(procs_per_host)
    )
    if len(counts) != len(hosts):
        raise UserError(f"{len(hosts)} hosts but {len(counts)} process counts; give one per host")
    for host, count in zip(hosts, counts):
        if count < 1:
            raise UserError(
                f"host {host}: {count} processes; each host needs at least one (one per GPU)"
            )
    return counts
