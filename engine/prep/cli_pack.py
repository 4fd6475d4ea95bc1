"""`imgscale list` and `imgscale pack`: im2rec's positional arguments and options, resumable and reported."""

from __future__ import annotations

import argparse
import os
import sys

from engine import options as opt
from engine.cli_progress import CliProgress
from engine.errors import UserError
from engine.events import Event, EventSink, StageProgress, StageState, ignore
from engine.prep import lst, pack
from engine.prep.options import ListOptions, PackOptions
from engine.prep.wslock import locked

LIST_HELP = (
    "write .lst files exactly as `im2rec.py --list` does, plus PREFIX_labels.txt (class -> label)"
)
PACK_HELP = (
    "pack .lst files into .rec/.idx like im2rec.py, in worker processes; resumes after interruption"
)


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "prefix", help="prefix of the .lst files to write (PREFIX.lst, PREFIX_0.lst …)"
    )
    parser.add_argument(
        "root", help="folder that holds the images (one subfolder per class with --recursive)"
    )
    opt.add_arguments(parser, ListOptions)


def build_list_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgscale list", description=LIST_HELP)
    add_list_arguments(parser)
    return parser


def add_pack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "prefix", help="a .lst file's prefix, or a folder: every matching .lst is packed"
    )
    parser.add_argument("root", help="folder the .lst paths are relative to")
    opt.add_arguments(parser, PackOptions)
    parser.add_argument(
        "--hosts", metavar="FILE", help="spread the chunks over the hosts of a hosts file"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _progress(args: argparse.Namespace) -> EventSink:
    draw = CliProgress(quiet=args.quiet)

    def sink(event: Event) -> None:
        # The bar shows the whole run; per-chunk events are for the console. Quiet keeps skips only.
        if (
            isinstance(event, StageProgress)
            and event.part
            or isinstance(event, StageState)
            and args.quiet
        ):
            return
        draw(event)

    return sink


def write_lists_from(args: argparse.Namespace, on_event: EventSink | None = None) -> list:
    """Write the .lst files that the `list` command's parsed arguments describe."""

    options = opt.from_args(ListOptions, args)
    return lst.write_lists(args.prefix, args.root, options, on_event=on_event or ignore)


def run_list(args: argparse.Namespace) -> int:
    written = write_lists_from(args, _progress(args))
    for path in written:
        print(path)
    print(lst.labels_path(os.path.abspath(args.prefix)))
    return 0


def run_pack(args: argparse.Namespace) -> int:
    options = opt.from_args(PackOptions, args)
    lists = pack.find_lists(args.prefix)
    sink = _progress(args)
    if args.hosts:
        if not os.path.isfile(args.hosts):
            raise UserError(f"--hosts {args.hosts}: no such file")
        # Here, not at the top: the cluster code and asyncio would delay a local pack's start.
        from engine.prep import pack_remote as dpack

        dpack.pack_on_hosts(args.hosts, lists, os.path.abspath(args.root), options, sink)
        return 0
    result = pack.pack_lists(lists, args.root, options, on_event=sink)
    for chunk in result.chunks:
        print(f"{chunk.rec}\t{chunk.records} records\t{chunk.skipped} skipped\t{chunk.report}")
    rate = result.records / result.seconds if result.seconds else 0.0
    print(
        f"{result.records} records, {result.skipped} skipped in {result.seconds:.1f} s ({rate:.1f} images/s)",
        file=sys.stderr,
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `list` and `pack` to the `imgscale` parser."""
    parser = sub.add_parser("list", help=LIST_HELP, description=LIST_HELP)
    add_list_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=locked(run_list, "prefix"))
    parser = sub.add_parser("pack", help=PACK_HELP, description=PACK_HELP)
    add_pack_arguments(parser)
    parser.set_defaults(func=locked(run_pack, "prefix", shared=True))
