"""Checkpoint files: MXNet's PREFIX-symbol.json + PREFIX-NNNN.params (+ .states), written atomically; finding the newest.

Epoch checkpoint N holds the weights after N complete epochs (as mx.model.save_checkpoint numbers them).
A batch checkpoint PREFIX-NNNN.bBBBBBB.params holds the weights after N epochs plus B batches of the next.
Every file is written under a temporary name and renamed when complete, so a file with the final name is
always whole; a crash while writing leaves only a ``.tmp`` file, which nothing here ever reads.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

EPOCH_PARAMS = re.compile(r"-(\d{4,})\.params$")
BATCH_PARAMS = re.compile(r"-(\d{4,})\.b(\d{6,})\.params$")


@dataclass(frozen=True)
class ResumePoint:
    """Where a relaunch continues: after `epoch` complete epochs and `batch` batches of the next."""

    epoch: int
    batch: int
    params: str
    states: str | None  # optimizer states, when they were saved (not with a distributed kvstore)


def symbol_path(prefix: str) -> str:
    return f"{prefix}-symbol.json"


def params_path(prefix: str, epoch: int, batch: int = 0) -> str:
    return f"{prefix}-{epoch:04d}.b{batch:06d}.params" if batch else f"{prefix}-{epoch:04d}.params"


def states_path(prefix: str, epoch: int, batch: int = 0) -> str:
    return params_path(prefix, epoch, batch)[: -len(".params")] + ".states"


def _escape(prefix: str) -> str:
    return glob.escape(prefix)


def epoch_checkpoints(prefix: str) -> list[int]:
    """Epochs with a complete params file (sorted); a params file only exists once fully written."""
    found = []
    for path in glob.glob(_escape(prefix) + "-*.params"):
        match = EPOCH_PARAMS.search(path)
        if match and path == params_path(prefix, int(match.group(1))):
            found.append(int(match.group(1)))
    return sorted(found)


def newest_checkpoint(prefix: str) -> int | None:
    """The newest epoch N with both PREFIX-symbol.json and a complete PREFIX-NNNN.params, or None."""
    if not os.path.isfile(symbol_path(prefix)):
        return None
    epochs = epoch_checkpoints(prefix)
    return epochs[-1] if epochs else None


def batch_checkpoints(prefix: str) -> list[tuple[int, int]]:
    """(epoch, batch) of every complete batch checkpoint, sorted."""
    found = []
    for path in glob.glob(_escape(prefix) + "-*.b*.params"):
        match = BATCH_PARAMS.search(path)
        if match and path == params_path(prefix, int(match.group(1)), int(match.group(2))):
            found.append((int(match.group(1)), int(match.group(2))))
    return sorted(found)


def newest_resume_point(prefix: str) -> ResumePoint | None:
    """The furthest point training can continue from: an epoch checkpoint or a later batch checkpoint."""
    if not os.path.isfile(symbol_path(prefix)):
        return None
    points = [(e, 0) for e in epoch_checkpoints(prefix)] + batch_checkpoints(prefix)
    if not points:
        return None
    epoch, batch = max(points)
    states = states_path(prefix, epoch, batch)
    return ResumePoint(
        epoch, batch, params_path(prefix, epoch, batch), states if os.path.isfile(states) else None
    )


def remove_batch_checkpoints(prefix: str, keep: tuple[int, int] | None = None) -> None:
    """Drop batch checkpoints superseded by a newer epoch or batch checkpoint."""
    for epoch, batch in batch_checkpoints(prefix):
        if (epoch, batch) != keep:
            for path in (params_path(prefix, epoch, batch), states_path(prefix, epoch, batch)):
                if os.path.exists(path):
                    os.remove(path)


def _tmp(path: str) -> str:
    return f"{path}.tmp{os.getpid()}"


def write_atomic(path: str, write) -> None:
    """Call write(tmp_path), then rename to path: readers never see a partial file."""
    tmp = _tmp(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_params(path: str, arg_params: dict, aux_params: dict) -> None:
    """The params format mx.model.load_checkpoint reads: 'arg:NAME' and 'aux:NAME' NDArrays."""
    import mxnet as mx

    data = {f"arg:{k}": v.as_in_context(mx.cpu()) for k, v in arg_params.items()}
    data.update({f"aux:{k}": v.as_in_context(mx.cpu()) for k, v in aux_params.items()})
    write_atomic(path, lambda tmp: mx.nd.save(tmp, data))


def load_params(path: str) -> tuple[dict, dict]:
    import mxnet as mx

    arg_params: dict = {}
    aux_params: dict = {}
    for key, value in mx.nd.load(path).items():
        kind, name = key.split(":", 1)
        (arg_params if kind == "arg" else aux_params)[name] = value
    return arg_params, aux_params


def save_symbol(prefix: str, symbol) -> None:
    write_atomic(symbol_path(prefix), symbol.save)


def save_states(path: str, module) -> None:
    write_atomic(path, module.save_optimizer_states)
