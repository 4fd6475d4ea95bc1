"""Entry of the torch engine: `imgscale train --engine torch …` or `python -m engine.train.torch.run …`.

Takes the same train_imagenet-style options as the MXNet engine plus a few torch-only ones (all in
engine.train.options.TrainOptions). Importing this module is light: torch loads inside ``main``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Mapping, Sequence

from engine.errors import UserError
from engine.train.launch.torch_env import refuse_without_world, torch_env
from engine.train.options import build_train_parser, parse_with_config, validate


def build_parser() -> argparse.ArgumentParser:
    parser = build_train_parser(argparse.ArgumentParser(prog="python -m engine.train.torch.run"))
    parser.set_defaults(engine="torch")
    return parser


def check(args: argparse.Namespace) -> None:
    """Mistakes to report before any process starts: one line naming the flag."""
    validate(args)
    if args.test_io and not args.data_train:
        raise UserError(
            "--test-io reads the training data: give --data-train (a .rec file or a folder of them)"
        )
    if args.kv_store == "dist_async":
        raise UserError(
            "--kv-store dist_async: the torch engine trains synchronously (DDP); use dist_sync"
        )
    if (
        not args.test_io
        and not args.benchmark
        and args.data_train
        and not os.path.exists(args.data_train)
    ):
        raise UserError(f"--data-train {args.data_train}: no such file or directory")
    if getattr(args, "width", 64) < 4:
        raise UserError(f"--width {args.width}: the resnet base width must be at least 4")


def main(args: argparse.Namespace) -> int:
    """Run the torch engine with parsed train options; one process per GPU (spawned here when alone)."""
    check(args)
    refusal = refuse_without_world(os.environ) or idle_gpus(args.gpus, os.environ)
    if refusal:
        raise UserError(refusal)
    if len(args.gpus) > 1 and "WORLD_SIZE" not in os.environ:
        return spawn_local(args)
    from engine.train.torch import fit

    return fit.fit(args)


def idle_gpus(gpus: Sequence[int], env: Mapping[str, str]) -> str | None:
    """A launcher started fewer processes on this host than --gpus lists: the rest would idle."""
    local = env.get("LOCAL_WORLD_SIZE", "")
    if not local.isdigit() or len(gpus) <= int(local):
        return None
    return (
        f"--gpus lists {len(gpus)} GPUs but the launcher started {local} process(es) on this "
        f"host: give the host slots={len(gpus)} in the hosts file (one process per GPU)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_local(args: argparse.Namespace) -> int:
    """One process per listed GPU on this host, with the environment a launcher would give them."""
    import torch.multiprocessing as mp

    envs = torch_env(["127.0.0.1"], len(args.gpus), "127.0.0.1", free_port())
    # The CLI's namespace carries its handler (a lambda); spawned processes get the options only.
    plain = argparse.Namespace(**{k: v for k, v in vars(args).items() if not callable(v)})
    try:
        mp.start_processes(_spawned, args=(plain, envs), nprocs=len(envs), start_method="spawn")
    except mp.ProcessExitedException as exc:
        raise UserError(
            f"torch worker {exc.error_index} exited with status {exc.exit_code}; see its log above"
        ) from None
    return 0


def _spawned(index: int, args: argparse.Namespace, envs: list[dict]) -> None:
    os.environ.update(envs[index])
    status = _run_reporting(args)
    if status:
        sys.exit(status)


def _run_reporting(args: argparse.Namespace) -> int:
    from engine.train.torch import fit

    try:
        return fit.fit(args)
    except UserError as exc:
        print(f"imgscale train: {exc}", file=sys.stderr)
        return 2


def cli(argv: Sequence[str] | None = None) -> int:
    """`python -m engine.train.torch.run FLAGS`: what the launcher runs on every host."""
    args = parse_with_config(build_parser(), argv)
    try:
        return main(args)
    except UserError as exc:
        print(f"imgscale train: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imgscale train: interrupted; run again with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(cli())
