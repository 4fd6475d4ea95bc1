"""The Engine interface: what one training engine knows about running as a distributed job.

The cluster layer (engine.cluster) starts, watches, kills and relaunches processes from a plan it is
handed and never reads a training flag. Everything that differs between MXNet's ps-lite roles and
torch's DDP ranks lives behind this interface, one file per engine (mxnet_engine, torch_engine);
``registry.engine_for`` picks the engine once per job. A third engine is one new file and one line
in the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .placement import Placement


@dataclass(frozen=True)
class Rendezvous:
    """What every process of one attempt shares: the job, the attempt and where to meet."""

    job: str
    attempt: int
    master: str  # the first host's address as the others reach it (scheduler or rank 0)
    port: int
    interface: str | None = None  # the NIC the engine's transport binds
    heartbeat_interval: int | None = None  # ps-lite only
    heartbeat_timeout: int | None = None


@dataclass(frozen=True)
class Layout:
    """How many processes of each kind a job asks for (before placing them on hosts)."""

    workers: int  # workers (MXNet) or ranks (torch)
    servers: int | None = None  # None: as many as workers (launch.py's default)
    servers_per_host: int | None = None


class Engine(ABC):
    """One training engine as the launcher, the SLURM driver and the pre-flight see it."""

    name: str
    label: str  # what a plan dialog says of the processes
    package: str  # the Python package every host must have
    install_hint: str  # how to install it (pre-flight advice)
    has_servers: bool  # parameter servers and a scheduler (ps-lite), or ranks alone
    # pre-flight: the engine's package reports each host's GPUs (engine.train.launch.hostreport's
    # flags), and an all-reduce over every slot is timed before training
    host_report_args: tuple[str, ...] = ()
    times_allreduce: bool = False
    trainer: str  # the module whose main(args) trains (`imgscale train --engine NAME`)
    # its data loader: skips undecodable images up to --max-bad-images (else stops at the first),
    # and reads a .rec through its .idx (so the .idx must be there)
    skips_bad_images: bool = False
    reads_by_index: bool = False

    @abstractmethod
    def place(self, layout: Layout, slots: Sequence[int | None]) -> list[Placement]:
        """Every process of the job on hosts with these slots (``Placement.host`` indexes them)."""

    @abstractmethod
    def environments(
        self,
        meet: Rendezvous,
        placement: Sequence[Placement],
        addresses: Sequence[str],
    ) -> list[dict[str, str]]:
        """The engine's variables for each placed process (``addresses``: per host index); the
        caller adds the user's environment under them and our identity over them."""

    @abstractmethod
    def resume_command(self, command: Sequence[str], prefix: str) -> tuple[str, ...]:
        """The command of a relaunch that continues from the newest checkpoint under ``prefix``."""

    @abstractmethod
    def crosses_hosts(self, kv_store: str, workers: int) -> bool:
        """Whether gradients travel between processes (and so over the network)."""

    @abstractmethod
    def describe(
        self, placement: Sequence[Placement], host_names: Sequence[str], master: str, port: str
    ) -> list[str]:
        """--dry-run's lines: the processes each host would run."""

    def require(self) -> None:
        """Refuse, in one line, where the engine's library cannot be used here."""
        return None  # by default the training module's own import says what is missing

    def install_advice(self, version: str | None) -> str:
        """How to install the engine on a host that lacks it (``version``: the first host's)."""
        return self.install_hint

    def role_name(self, role: str) -> str:
        """What a plan calls a process of ``role``."""
        return role

    def check_layout(self, layout: Layout, env_server: Mapping[str, str]) -> None:
        """Refuse flags this engine has no use for (one line naming the flag)."""
        return None

    def servers(self, requested: int | None, kv_store: str) -> int:
        """Parameter servers a training job runs (the console's plan and pre-flight)."""
        return 0

    def resize(self, layout: Layout, slots: Sequence[int | None]) -> Layout:
        """The layout that fits hosts with ``slots`` (fewer hosts after one is left out).

        Workers are capped at the slots left; a host without ``slots=`` offers one. Servers are
        placed again on the hosts that remain, so none stays on a host that is gone."""
        capacity = sum(s or 1 for s in slots)
        return Layout(min(layout.workers, capacity), layout.servers, layout.servers_per_host)

    def gpus_per_process(self, role: str, gpus_per_node: int, workers_on_node: int) -> int:
        """GPUs SLURM binds to one process of ``role`` on a node with ``gpus_per_node``."""
        return gpus_per_node // max(1, workers_on_node) if role == "worker" else 0

    def light(self, role: str) -> bool:
        """A process that holds no GPU and may share a node's tasks (SLURM's --overlap)."""
        return False

    def check_args(self, args: Any) -> None:
        """Refuse training options this engine cannot run (parsed `imgscale train` options)."""
        return None

    def min_image_side(self, network: str) -> int:
        """The smallest input side the engine's version of ``network`` accepts."""
        return 1


def is_distributed(kv_store: str) -> bool:
    """Whether a kvstore type runs over ps-lite (dist_sync, dist_async, dist_device_sync …): the
    one spelling of that question."""
    return kv_store.startswith("dist")


def set_option(command: Sequence[str], flag: str, value: str) -> tuple[str, ...]:
    """``command`` with ``flag value`` set: replaced where present, else appended."""
    argv = list(command)
    for i, word in enumerate(argv):
        if word == flag and i + 1 < len(argv):
            argv[i + 1] = value
            return tuple(argv)
        if word.startswith(flag + "="):
            argv[i] = f"{flag}={value}"
            return tuple(argv)
    return (*argv, flag, value)


def without_option(command: Sequence[str], flag: str) -> list[str]:
    """``command`` without ``flag VALUE`` and ``flag=VALUE``."""
    argv, i = list(command), 0
    while i < len(argv):
        if argv[i] == flag:
            del argv[i : i + 2]
        elif argv[i].startswith(flag + "="):
            del argv[i]
        else:
            i += 1
    return argv
