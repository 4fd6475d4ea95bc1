"""The headless `imgscale` command: one subcommand per engine action, registered by each area."""

from __future__ import annotations

import argparse
import importlib
import signal
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


def command_name(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str:
    """'bench scaling' for `imgscale bench scaling …`: read from argv, because a subcommand's own
    option may reuse the dest `command` (bench scaling's --command)."""
    names: list[str] = []
    current = parser
    for token in argv:
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            break
        if token.startswith("-"):
            continue
        child = subs[0].choices.get(token)
        if child is None:
            break
        names.append(token)
        current = child
    return " ".join(names)


# Training workers keep the default: the supervisor's TERM must end one at once, even inside a
# ps-lite barrier where a Python-level handler would only run after the call returns.
NO_TERM_HANDLER = {"train"}


def _terminate(_signum: int, _frame: object) -> None:
    # `kill` or a process manager: take the same way out as Ctrl-C, so every command's cleanup
    # (stopping a sweep's job on every host, closing connections) runs instead of a silent death.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    name = command_name(parser, argv)
    if name.split(" ")[0] not in NO_TERM_HANDLER:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"imgscale {name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"imgscale {name}: interrupted; run the same command again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
