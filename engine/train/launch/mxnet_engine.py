"""MXNet 1.9.1 over ps-lite: a scheduler, parameter servers and workers (tools/launch.py semantics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.errors import UserError
from engine.train.checkpoints import newest_checkpoint
from engine.train.mxnet import require_mxnet

from .dmlc_env import ClusterEnv, dmlc_env
from .engines import Engine, Layout, Rendezvous, is_distributed, set_option
from .placement import SCHEDULER, SERVER, WORKER, Placement, describe, place

# MXNet's symbols have fixed pooling windows: the smallest input side each network takes
MIN_SIDE = {"resnet": 32, "alexnet": 67, "inception-v3": 299, "vgg": 32, "mobilenet": 32}


class MXNetEngine(Engine):
    name = "mxnet"
    label = "MXNet (ps-lite: scheduler, servers, workers)"
    package = "mxnet"
    install_hint = (
        "pip install mxnet==1.9.1 (Python <= 3.11; mxnet-cu112 on GPUs), or --engine torch"
    )
    has_servers = True
    trainer = "engine.train.mxnet.run"

    def place(self, layout: Layout, slots: Sequence[int | None]) -> list[Placement]:
        return place(
            layout.workers, layout.servers, list(slots), servers_per_host=layout.servers_per_host
        )

    def environments(
        self,
        meet: Rendezvous,
        placement: Sequence[Placement],
        addresses: Sequence[str],
    ) -> list[dict[str, str]]:
        cluster = ClusterEnv(
            meet.job,
            meet.master,
            meet.port,
            sum(1 for p in placement if p.role == WORKER),
            sum(1 for p in placement if p.role == SERVER),
            meet.interface,
            meet.heartbeat_interval,
            meet.heartbeat_timeout,
            meet.attempt,
        )
        return [dmlc_env(cluster, p, addresses[p.host]) for p in placement]

    def resume_command(self, command: Sequence[str], prefix: str) -> tuple[str, ...]:
        """--load-epoch N: MXNet loads ``prefix-NNNN.params`` of the newest complete epoch."""
        epoch = newest_checkpoint(prefix)
        if epoch is None:  # none loads yet: --resume takes a batch checkpoint, or starts anew
            given = any(a == "--resume" or a.startswith("--load-epoch") for a in command)
            return tuple(command) if given else (*command, "--resume")
        return set_option(command, "--load-epoch", str(epoch))

    def crosses_hosts(self, kv_store: str, workers: int) -> bool:
        return is_distributed(kv_store) and workers > 1

    def describe(
        self, placement: Sequence[Placement], host_names: Sequence[str], master: str, port: str
    ) -> list[str]:
        return describe(placement, host_names)

    def servers(self, requested: int | None, kv_store: str) -> int:
        return (1 if requested is None else requested) if is_distributed(kv_store) else 0

    def light(self, role: str) -> bool:
        return role in (SCHEDULER, SERVER)

    def require(self) -> None:
        require_mxnet()

    def check_args(self, args: Any) -> None:
        if args.dtype == "float16" and not args.gpus:
            raise UserError(
                "--dtype float16 needs --gpus: MXNet has no float16 matrix multiply on the CPU"
            )

    def min_image_side(self, network: str) -> int:
        return MIN_SIDE.get(network, 1)
