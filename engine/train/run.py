"""`python -m engine.train.run …`: what every worker executes; the only entry that imports the MXNet engine."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence

from engine.errors import UserError
from engine.train.options import build_train_parser, parse_with_config, validate


def run(args: argparse.Namespace) -> int:
    """Train with the engine args.engine names; an out-of-memory error becomes a diagnosis, exit status 1."""
    validate(args)
    if args.engine == "torch":
        return run_torch(args)
    require_mxnet()
    from engine.train.fit import train

    try:
        return train(args)
    except UserError:
        raise
    except (
        Exception
    ) as exc:  # MXNetError and friends: diagnose what we recognise, re-raise the rest
        from engine.train.oom import diagnose_text, failure_lines

        failure = diagnose_text(
            str(exc),
            source="training",
            batch_size=args.batch_size,
            gpus=args.gpus,
            dtype=args.dtype,
        )
        if failure is None:
            raise
        for line in failure_lines(failure):
            logging.getLogger("imgscale.train").error("%s", line)
        # MXNet's engine is unusable after a failed allocation and its exit hook would raise again,
        # burying the diagnosis under a traceback: leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def require_mxnet() -> None:
    """The MXNet engine where mxnet is not installed: say what to install, and where it runs."""
    if importlib.util.find_spec("mxnet") is None:
        raise UserError(
            "--engine mxnet: mxnet is not installed here; MXNet 1.9.1 needs Python <= 3.11 "
            f"(this is {sys.version_info.major}.{sys.version_info.minor}): there, "
            "pip install mxnet==1.9.1 'numpy<1.24' (mxnet-cu112 on GPUs); or use --engine torch"
        )


def run_torch(args: argparse.Namespace) -> int:
    """The PyTorch engine lives in engine.train.torch.run (an optional extra)."""
    try:
        torch_run = importlib.import_module("engine.train.torch.run")
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name.startswith("engine.train.torch") or exc.name == "torch"):
            raise UserError(
                f"--engine torch: not available here ({exc.name} missing); install it with "
                "pip install '.[torch]' or use --engine mxnet"
            ) from None
        raise
    return int(torch_run.main(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_train_parser(argparse.ArgumentParser(prog="python -m engine.train.run"))
    try:
        return run(parse_with_config(parser, argv))
    except UserError as exc:
        print(f"imgscale train: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
