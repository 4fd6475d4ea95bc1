"""The headless `imgscale` command: one subcommand per engine action, registered by each area's cli_*.py."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from engine.bench import cli_bench
from engine.cluster import cli_hosts, cli_jobs
from engine.errors import UserError
from engine.prep import cli_pack, cli_stages
from engine.train import cli_train

# Each area's cli_*.py defines register(subparsers); a subcommand sets func(args) -> exit status.
COMMAND_MODULES = (
    cli_stages,  # demo-data, disk, extract, filter, split, place, prepare
    cli_pack,  # list, pack
    cli_hosts,  # hosts, probe
    cli_jobs,  # launch, attach, kill, jobs
    cli_train,  # train, check
    cli_bench,  # bench …
)


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
    for module in COMMAND_MODULES:
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
