"""`python -m engine.train.run …`: what every worker executes; picks the engine (engine.train.mxnet or .torch)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from engine.errors import UserError
from engine.train.mxnet import require_mxnet
from engine.train.mxnet import run as mxnet_run
from engine.train.options import build_train_parser, parse_with_config, validate


def run(args: argparse.Namespace) -> int:
    """Train with the engine args.engine names."""
    validate(args)
    if args.engine == "torch":
        return run_torch(args)
    require_mxnet()
    return mxnet_run.main(args)


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
