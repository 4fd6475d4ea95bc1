"""torchrun-style environment for each process of a torch job: pure, so any launcher can use it."""

from __future__ import annotations

from collections.abc import Sequence

from engine.errors import UserError

MODULE = "engine.train.torch.run"  # what each process runs: python -m engine.train.torch.run ARGS


def torch_env(
    hosts: Sequence[str],
    procs_per_host: int | Sequence[int],
    master_addr: str | None = None,
    master_port: int = 29500,
) -> list[dict[str, str]]:
    """Environment of every process, host by host, local rank by local rank (torchrun semantics).

    ``procs_per_host`` is one count for all hosts (GPUs per host) or one per host (``host slots=N``).
    Process k of the returned list runs on ``hosts[i]`` where i is its GROUP_RANK; it drives GPU LOCAL_RANK.
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


def worker_argv(python: str, train_args: Sequence[str]) -> list[str]:
    """The command line of one torch worker: the same train flags on every process."""
    return [python, "-m", MODULE, *train_args]
