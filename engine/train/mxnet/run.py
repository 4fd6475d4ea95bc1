"""The MXNet engine's entry: train, and turn an out-of-memory error or a damaged .rec into one line."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback
from types import FrameType

from engine.errors import UserError
from engine.recordio import first_damage
from engine.train.mxnet.fit import train
from engine.train.oom import diagnose_text, failure_lines
from engine.train.recfiles import first_undecodable, rec_files


def main(args: argparse.Namespace) -> int:
    """Train in a child process: MXNet's reader threads abort the whole process on a damaged
    record (a C++ `Check failed`, no Python exception to catch), so a parent that never imports
    MXNet waits and, after such an abort, names the file and the offset of the damage."""
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        _die_with(parent)
        os._exit(_child(args))
    status = _wait(child)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGABRT:
        damage = first_damage(_data_files(args))
        if damage is not None:
            raise UserError(f"{damage}; MXNet stopped there: pack that file again (imgscale pack)")
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code  # killed by signal N: the shell's 128+N


def _die_with(parent: int) -> None:
    """The trainer must not outlive a parent killed with SIGKILL (the OOM killer, `kill -9`)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return  # not Linux: the process group still ends both
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(128 + signal.SIGKILL)


def _child(args: argparse.Namespace) -> int:
    try:
        return _train(args)
    except UserError as exc:
        print(f"imgscale train: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # what the interpreter does with it (MXNet's server roles exit so)
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _wait(child: int) -> int:
    """Wait for the child; a signal sent to this process alone is passed on to it."""

    def forward(signum: int, _frame: FrameType | None) -> None:
        os.kill(child, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            return os.waitpid(child, 0)[1]
        except InterruptedError:
            continue


def _data_files(args: argparse.Namespace) -> list[str]:
    paths = [p for p in (args.data_train, getattr(args, "data_val", None)) if p]
    return [rec for p in paths for rec in rec_files(p, warn=lambda _msg: None)]


def _train(args: argparse.Namespace) -> int:
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
            _refuse_undecodable(str(exc), args)
            raise
        for line in failure_lines(failure):
            logging.getLogger("imgscale.train").error("%s", line)
        # MXNet's engine is unusable after a failed allocation and its exit hook would raise again,
        # burying the diagnosis under a traceback: leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def _refuse_undecodable(text: str, args: argparse.Namespace) -> None:
    """ImageRecordIter stops at the first image OpenCV cannot decode (a GIF packed with
    --pass-through) with a C++ traceback: name the file and the record instead. MXNet trains on
    no undecodable image, so --max-bad-images is 0 for this engine."""
    if "OpenCV" not in text and "decode" not in text.lower():
        return
    where = first_undecodable(_data_files(args))
    if where is not None:
        raise UserError(
            f"{where}; MXNet's reader stops at such an image: pack that file again with "
            "`imgscale pack` (without --pass-through)"
        )
