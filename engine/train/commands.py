"""`imgscale train` (what every worker runs) and `imgscale check` (the pre-flight check)."""

from __future__ import annotations

import argparse
import os

from engine.errors import UserError
from engine.train import check, run
from engine.train.options import build_train_parser, merge_config, positive_int

TRAIN_HELP = "train a network on RecordIO data (train_imagenet.py's options; --engine mxnet|torch)"
CHECK_HELP = "pre-flight check of training options against the data, hosts and disk; each finding says what to change"


def register(sub: argparse._SubParsersAction) -> None:
    """Add `train` and `check` to the `imgscale` parser."""
    train = sub.add_parser("train", help=TRAIN_HELP, description=TRAIN_HELP)
    build_train_parser(train)
    train.set_defaults(func=lambda args: _train(train, args))
    checker = sub.add_parser("check", help=CHECK_HELP, description=CHECK_HELP)
    build_train_parser(checker)
    add_check_args(checker)
    checker.set_defaults(func=lambda args: _check(checker, args))


def add_check_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Pre-flight", "the cluster and data to check against")
    g.add_argument(
        "--hosts", "-H", dest="hosts", default=None, help="hosts file (launch.py format, slots=N)"
    )
    g.add_argument(
        "-n",
        "--num-workers",
        dest="num_workers",
        type=positive_int,
        default=None,
        help="total workers",
    )
    g.add_argument(
        "-s", "--num-servers", dest="num_servers", type=int, default=None, help="total servers"
    )
    g.add_argument(
        "--label-map", default=None, help="the PREFIX_labels.txt written by `imgscale list`"
    )
    g.add_argument("--lst", action="append", default=None, help="a training .lst file (repeatable)")
    g.add_argument(
        "--packed-edge",
        type=positive_int,
        default=None,
        help="short edge the data was packed at (default: read from the first records)",
    )
    g.add_argument(
        "--port", type=int, default=None, help="scheduler port to check is free (DMLC_PS_ROOT_PORT)"
    )
    g.add_argument("--json", action="store_true", help="print the findings as JSON")


def _train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    return run.run(merge_config(parser, args))


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.num_servers is not None and args.num_servers < 0:
        raise UserError(f"-s {args.num_servers}: give 0 or more servers")
    if args.port is not None and not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: give a port from 1 to 65535")
    given = [("--lst", p) for p in args.lst or []] + [("--label-map", args.label_map)]
    for flag, path in given:
        if path and not os.path.isfile(path):
            what = "is a folder" if os.path.isdir(path) else "does not exist"
            raise UserError(f"{flag} {path} {what}; give the file `imgscale list` wrote")
    return check.main(merge_config(parser, args))
