"""`imgscale train` (what every worker runs) and `imgscale check` (the pre-flight check)."""

from __future__ import annotations

import argparse
import os

from engine import options as opt
from engine.errors import UserError
from engine.train import check, run
from engine.train.launch.preflight_hosts import AcrossHosts, check_across_hosts
from engine.train.options import CheckOptions, build_train_parser, merge_config

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
    opt.add_arguments(g, CheckOptions)


def _train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    return run.run(merge_config(parser, args))


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    opt.check(args, CheckOptions)
    given = [("--lst", p) for p in args.lst or []] + [("--label-map", args.label_map)]
    for flag, path in given:
        if path and not os.path.isfile(path):
            what = "is a folder" if os.path.isdir(path) else "does not exist"
            raise UserError(f"{flag} {path} {what}; give the file `imgscale list` wrote")
    args = merge_config(parser, args)
    across = AcrossHosts(
        hosts=args.hosts or "",
        engine=args.engine,
        data_train=args.data_train,
        data_val=args.data_val,
        gpus=args.gpus,
        port=args.port,
        num_workers=args.num_workers,
    )
    return check.main(args, check_across_hosts(across))
