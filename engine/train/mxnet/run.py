"""The MXNet engine's entry: train, and turn an out-of-memory error into a diagnosis."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from engine.errors import UserError
from engine.train.mxnet.fit import train
from engine.train.oom import diagnose_text, failure_lines


def main(args: argparse.Namespace) -> int:
    """Train with parsed (and validated) options; an out-of-memory error becomes a diagnosis, exit status 1."""
    try:
        return train(args)
    except UserError:
        raise
    except (
        Exception
    ) as exc:  # MXNetError and friends: diagnose what we recognise, re-raise the rest
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
