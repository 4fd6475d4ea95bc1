"""The headless `imgscale` command: one subcommand per engine action, registered by each area."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from engine.errors import UserError

# Each module defines register(subparsers); a subcommand sets func(args) -> exit status.
# Each area owns its modules; one not written yet is skipped.
COMMAND_MODULES = (
    "engine.prep.cli_stages",  # demo-data, disk, extract, filter, split, place, prepare
    "engine.prep.cli_pack",  # list, pack
    "engine.cluster.cli_hosts",  # hosts, probe
    "engine.cluster.cli_jobs",  # launch, attach, kill, jobs
    "engine.train.commands",  # train, check
    "engine.bench.commands",  # bench …
)


def _import_if_present(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:  # a real import error inside the module must surface
            raise
        return None


class OneLineParser(argparse.ArgumentParser):
    """A wrong flag gets one line naming it and where to look, not a usage dump (subcommands inherit this)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="imgscale",
        description="Prepare ImageNet-sized data, launch and watch distributed training.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = _import_if_present(name)
        if module is not None:
            module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"imgscale {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"imgscale {args.command}: interrupted; run the same command again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
