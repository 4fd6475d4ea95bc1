"""Checkpoint names of both engines and finding the newest: MXNet's PREFIX-symbol.json + PREFIX-NNNN.params
(+ .states), the torch engine's PREFIX-NNNN.pt; every file written atomically.

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

MXNET = ".params"  # the MXNet engine's weights (with PREFIX-symbol.json beside them)
TORCH = ".pt"  # the torch engine's whole training state


@dataclass(frozen=True)
class ResumePoint:
    """Where a relaunch continues: after `epoch` complete epochs and `batch` batches of the next."""

    epoch: int
    batch: int
    params: str
    states: str | None  # optimizer states, when they were saved (not with a distributed kvstore)


def symbol_path(prefix: str) -> str:
    return f"{prefix}-symbol.json"


def params_path(prefix: str, epoch: int, batch: int = 0, suffix: str = MXNET) -> str:
    return (
        f"{prefix}-{epoch:04d}.b{batch:06d}{suffix}" if batch else f"{prefix}-{epoch:04d}{suffix}"
    )


def states_path(prefix: str, epoch: int, batch: int = 0) -> str:
    return params_path(prefix, epoch, batch)[: -len(MXNET)] + ".states"


def checkpoints(prefix: str, suffix: str = MXNET) -> list[tuple[int, int]]:
    """(epoch, batch) of every complete checkpoint of ``prefix``, oldest first; batch 0 is an epoch checkpoint.

    A file only gets its final name once fully written, so temporary files never match.
    """
    name = re.compile(r"-(\d{4,})(?:\.b(\d{6,}))?" + re.escape(suffix) + "$")
    found = []
    for path in glob.glob(glob.escape(prefix) + "-*" + suffix):
        match = name.search(path)
        if match:
            point = int(match.group(1)), int(match.group(2) or 0)
            if path == params_path(prefix, *point, suffix=suffix):
                found.append(point)
    return sorted(found)


def epoch_checkpoints(prefix: str, suffix: str = MXNET) -> list[int]:
    """Epochs with a complete epoch checkpoint (sorted)."""
    return [epoch for epoch, batch in checkpoints(prefix, suffix) if not batch]


def batch_checkpoints(prefix: str) -> list[tuple[int, int]]:
    """(epoch, batch) of every complete MXNet batch checkpoint, sorted."""
    return [point for point in checkpoints(prefix) if point[1]]


def newest_checkpoint(prefix: str, suffix: str = MXNET) -> int | None:
    """The newest epoch N with a complete PREFIX-NNNN.params (and PREFIX-symbol.json) or, with
    ``suffix=TORCH``, PREFIX-NNNN.pt; None if there is none."""
    if suffix == MXNET and not os.path.isfile(symbol_path(prefix)):
        return None
    epochs = epoch_checkpoints(prefix, suffix)
    return epochs[-1] if epochs else None


def newest_resume_point(prefix: str) -> ResumePoint | None:
    """The furthest point training can continue from: an epoch checkpoint or a later batch checkpoint."""
    if not os.path.isfile(symbol_path(prefix)):
        return None
    points = checkpoints(prefix)
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


DEFAULT_KEEP = 3  # --keep-checkpoints: the newest few epoch checkpoints stay


def kept_epochs(saved: list[int], keep: int, save_period: int) -> list[int]:
    """Of the epoch checkpoints saved, those that stay: the newest ``keep`` (0: all) and, when
    --save-period asked for every Nth epoch (N > 1), every such multiple."""
    if keep <= 0:
        return sorted(saved)
    newest = set(sorted(saved)[-keep:])
    asked = {e for e in saved if save_period > 1 and e % save_period == 0}
    return sorted(newest | asked)


def saved_epochs(num_epochs: int, save_period: int) -> list[int]:
    """Epoch checkpoints a run writes: every --save-period epochs, and the last one."""
    period = max(1, save_period)
    return [e for e in range(1, num_epochs + 1) if e % period == 0 or e == num_epochs]


def prune_epochs(prefix: str, keep: int, save_period: int, suffix: str = MXNET) -> list[int]:
    """Remove epoch checkpoints (weights and optimizer states) that --keep-checkpoints does not keep;
    returns the epochs removed."""
    saved = [epoch for epoch, batch in checkpoints(prefix, suffix) if not batch]
    stay = set(kept_epochs(saved, keep, save_period))
    gone = [e for e in saved if e not in stay]
    for epoch in gone:
        paths = [params_path(prefix, epoch, suffix=suffix)]
        if suffix == MXNET:
            paths.append(states_path(prefix, epoch))
        for path in paths:
            if os.path.exists(path):
                os.remove(path)
    return gone
