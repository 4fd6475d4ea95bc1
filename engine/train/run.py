"""`python -m engine.train.run …`: what every worker executes; picks the engine (engine.train.mxnet or .torch)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from engine.errors import UserError
from engine.train.launch import registry
from engine.train.launch.engines import Engine
from engine.train.options import build_train_parser, parse_with_config, validate


def run(args: argparse.Namespace) -> int:
    """Train with the engine args.engine names."""
    validate(args)
    return int(trainer(registry.engine_named(args.engine)).main(args) or 0)


def trainer(engine: Engine) -> ModuleType:
    """The engine's training module (engine.train.mxnet.run, engine.train.torch.run); where its
    library is missing, one line saying what to install."""
    engine.require()
    try:
        return importlib.import_module(engine.trainer)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name.startswith(engine.trainer) or exc.name == engine.package):
            raise UserError(
                f"--engine {engine.name}: not available here ({exc.name} missing); install it "
                f"with {engine.install_hint}"
            ) from None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_train_parser(argparse.ArgumentParser(prog="python -m engine.train.run"))
    try:
        return run(parse_with_config(parser, argv))
    except UserError as exc:
        print(f"imgscale train: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
