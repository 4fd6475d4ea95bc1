"""The headless `imgscale` command: one subcommand per engine action, registered by each area's cli_*.py."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from engine.errors import UserError

# Each area's cli_*.py defines register(subparsers); a subcommand sets func(args) -> exit status.
# Named, not imported: a command loads only its own area (`imgscale pack` starts its workers
# about 0.1 s sooner without the cluster and benchmark code), `--help` loads them all.
COMMAND_MODULES = {
    "engine.prep.cli_stages": (
        "demo-data",
        "disk",
        "extract",
        "filter",
        "split",
        "place",
    ),
    "engine.workspace.cli_prepare": ("prepare",),
    "engine.prep.cli_pack": ("list", "pack"),
    "engine.cluster.cli_hosts": ("hosts", "probe"),
    "engine.train.launch.cli_jobs": ("launch", "attach", "kill", "jobs"),
    "engine.train.cli_train": ("train", "check"),
    "engine.train.cli_report": ("report",),
    "engine.bench.cli_bench": ("bench",),
}


class OneLineParser(argparse.ArgumentParser):
    """A wrong flag gets one line naming it and where to look, not a usage dump (subcommands inherit this)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with a known COMMAND only that command's area (the rest is not imported)."""
    parser = OneLineParser(
        prog="imgscale",
        description="Prepare ImageNet-sized data, launch and watch distributed training.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    owners = [m for m, names in COMMAND_MODULES.items() if command in names] or COMMAND_MODULES
    for module in owners:
        importlib.import_module(module).register(sub)
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
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # Loading a command's modules takes most of a second: a Ctrl-C then is one line too.
        parser = build_parser(argv[0] if argv else None)
    except KeyboardInterrupt:
        print(f"imgscale {argv[0] if argv else ''}: interrupted before it started", file=sys.stderr)
        return 130
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
