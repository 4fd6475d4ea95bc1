"""Where a job's scheduler, servers and workers run: launch.py's round-robin, or slots and --servers-per-host.

Rules (docs/cluster.md, "Placement"):

* The scheduler runs on the first host of the hosts file (the master; ``DMLC_PS_ROOT_URI`` is its
  address), so it survives the console's machine going away. With ``-s 0`` there is no parameter
  server and no scheduler (as launch.py); the workers run alone.
* Default, as MXNet's ``tools/launch.py``: servers first, then workers, process ``i`` of that
  sequence on host ``i % len(hosts)``.
* ``slots=N`` on any host line: workers fill the hosts in file order, ``N`` per host (a host without
  ``slots=`` offers 1); servers keep the round-robin from host 0. More workers than slots is an error.
* ``--servers-per-host K``: exactly ``K`` servers on every host (``-s`` becomes ``K * hosts``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import UserError

SCHEDULER = "scheduler"
SERVER = "server"
WORKER = "worker"


@dataclass(frozen=True)
class Placement:
    """One process of the job: its role, its rank within the role, and the index of its host."""

    role: str
    rank: int
    host: int

    @property
    def name(self) -> str:
        """A name unique within a job, used for its log and record files (``worker-3``)."""
        return self.role if self.role == SCHEDULER else f"{self.role}-{self.rank}"


def place(
    num_workers: int,
    num_servers: int | None,
    host_slots: Sequence[int | None],
    *,
    servers_per_host: int | None = None,
) -> list[Placement]:
    """Scheduler, servers and workers for ``host_slots`` (one entry per host, ``None``: no slots=)."""
    hosts = len(host_slots)
    if hosts == 0:
        raise UserError("the hosts list is empty: give at least one host")
    if num_workers < 1:
        raise UserError(f"-n {num_workers}: a job needs at least one worker")
    num_servers = _server_count(num_workers, num_servers, hosts, servers_per_host)
    plan = [Placement(SCHEDULER, 0, 0)] if num_servers else []
    plan += _servers(num_servers, hosts, servers_per_host)
    if any(s is not None for s in host_slots):
        plan += _workers_by_slots(num_workers, host_slots)
    elif servers_per_host is not None:
        plan += [Placement(WORKER, r, r % hosts) for r in range(num_workers)]
    else:  # launch.py: one sequence, servers first, round-robin over the hosts
        plan += [Placement(WORKER, r, (num_servers + r) % hosts) for r in range(num_workers)]
    return plan


def _server_count(workers: int, servers: int | None, hosts: int, per_host: int | None) -> int:
    if per_host is None:
        count = workers if servers is None else servers  # launch.py: -s defaults to -n
    else:
        if per_host < 0:
            raise UserError(f"--servers-per-host {per_host}: must be 0 or more")
        count = per_host * hosts
        if servers is not None and servers != count:
            raise UserError(
                f"-s {servers} disagrees with --servers-per-host {per_host} on {hosts} hosts "
                f"({count} servers); give only one of them"
            )
    if count < 0:
        raise UserError(f"-s {count}: must be 0 or more")
    return count


def _servers(count: int, hosts: int, per_host: int | None) -> list[Placement]:
    if per_host is None:
        return [Placement(SERVER, r, r % hosts) for r in range(count)]
    return [Placement(SERVER, r, r // per_host) for r in range(count)]


def _workers_by_slots(count: int, host_slots: Sequence[int | None]) -> list[Placement]:
    offered = [1 if s is None else s for s in host_slots]
    if count > sum(offered):
        raise UserError(
            f"-n {count} workers but the hosts file offers only {sum(offered)} slots; "
            "raise slots= or lower -n"
        )
    plan: list[Placement] = []
    for host, slots in enumerate(offered):
        take = min(slots, count - len(plan))
        plan += [Placement(WORKER, len(plan) + i, host) for i in range(take)]
    return plan


def check_per_host(plan: Sequence[Placement], host_names: Sequence[str], cap: int) -> None:
    """Refuse a placement that gives one host more than ``cap`` processes, naming the host."""
    for index, name in enumerate(host_names):
        count = sum(1 for p in plan if p.host == index)
        if count > cap:
            raise UserError(
                f"host {name} would run {count} processes; give at most {cap} per host: "
                "list more hosts, or lower -n/-s"
            )


def describe(plan: Sequence[Placement], host_names: Sequence[str]) -> list[str]:
    """One line per host: which processes it runs (for `imgscale launch --dry-run` and the docs)."""
    lines = []
    for index, name in enumerate(host_names):
        here = [p.name for p in plan if p.host == index]
        lines.append(f"{name}: {', '.join(here) if here else '(nothing)'}")
    return lines
