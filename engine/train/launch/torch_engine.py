"""PyTorch DDP: one rank per slot (GPU), torchrun's variables, no scheduler or servers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.errors import UserError

from .engines import Engine, Layout, Rendezvous, without_option
from .placement import WORKER, Placement, place
from .torch_env import describe as describe_ranks
from .torch_env import interface_env, torch_env


class TorchEngine(Engine):
    name = "torch"
    label = "torch (DDP ranks)"
    package = "torch"
    install_hint = "pip install 'imgscale[torch]'"
    has_servers = False
    trainer = "engine.train.torch.run"
    host_report_args = ("--torch",)
    times_allreduce = True
    skips_bad_images = True
    reads_by_index = True

    def install_advice(self, version: str | None) -> str:
        return self.install_hint + (f" torch=={version}" if version else "")

    def place(self, layout: Layout, slots: Sequence[int | None]) -> list[Placement]:
        """Ranks host by host, local rank by local rank (torchrun's order); rank 0 on the first
        host. ``slots=N`` hosts take N ranks each; without slots ranks go round-robin."""
        spread = place(layout.workers, 0, list(slots))
        counts = [sum(1 for p in spread if p.host == i) for i in range(len(slots))]
        hosts = [host for host, count in enumerate(counts) for _ in range(count)]
        return [Placement(WORKER, rank, host) for rank, host in enumerate(hosts)]

    def environments(
        self,
        meet: Rendezvous,
        placement: Sequence[Placement],
        addresses: Sequence[str],
    ) -> list[dict[str, str]]:
        used = sorted({p.host for p in placement})
        counts = [sum(1 for p in placement if p.host == h) for h in used]
        envs = torch_env([addresses[h] for h in used], counts, meet.master, meet.port)
        return [{**interface_env(meet.interface), **env} for env in envs]

    def resume_command(self, command: Sequence[str], prefix: str) -> tuple[str, ...]:
        """--resume (and no --load-epoch, which would pin an epoch): each rank loads the newest
        complete .pt and continues at its epoch, batch and learning-rate schedule."""
        argv = without_option(command, "--load-epoch")
        return tuple(argv) if "--resume" in argv else (*argv, "--resume")

    def crosses_hosts(self, kv_store: str, workers: int) -> bool:
        return workers > 1  # DDP all-reduces between the ranks whatever the kvstore says

    def describe(
        self, placement: Sequence[Placement], host_names: Sequence[str], master: str, port: str
    ) -> list[str]:
        used = sorted({p.host for p in placement})
        counts = [sum(1 for p in placement if p.host == h) for h in used]
        return describe_ranks([host_names[h] for h in used], counts, master, port)

    def role_name(self, role: str) -> str:
        return "rank"

    def check_layout(self, layout: Layout, env_server: Mapping[str, str]) -> None:
        if layout.servers or layout.servers_per_host:
            flag = "-s" if layout.servers else "--servers-per-host"
            raise UserError(
                f"{flag}: a torch job has no parameter servers (DDP all-reduces between the "
                "processes); leave it out, -n counts the processes"
            )
        if env_server:
            raise UserError("--env-server: a torch job has no servers; use --env")

    def gpus_per_process(self, role: str, gpus_per_node: int, workers_on_node: int) -> int:
        return 1 if gpus_per_node else 0
