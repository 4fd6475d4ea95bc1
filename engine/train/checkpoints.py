"""Checkpoint names of both engines and finding the newest: MXNet's PREFIX-symbol.json + PREFIX-NNNN.params
(+ .states), the torch engine's PREFIX-NNNN.pt; every file written atomically.

Epoch checkpoint N holds the weights after N complete epochs (as mx.model.save_checkpoint numbers them).
A batch checkpoint PREFIX-NNNN.bBBBBBB.params holds the weights after N epochs plus B batches of the next.
Every file is written under a temporary name and renamed when complete, so a file with the final name is
always whole; a crash while writing leaves only a ``.tmp`` file, which nothing here ever reads.
A file can still be damaged later (a disk error, a copy cut short): ``newest_loadable`` is the one
place that decides which checkpoint a resume uses, the newest whose file reads whole.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import re
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from engine.errors import UserError
from engine.paths import write_atomic

log = logging.getLogger("imgscale.train")

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


# ---- is a checkpoint file whole? (its framing, read without mxnet or torch) ---------------------
_NDARRAY_LIST = 0x112  # MXNet's kMXAPINDArrayListMagic: an mx.nd.save file
_NDARRAY_V2, _NDARRAY_V3 = 0xF993FAC9, 0xF993FACA
# bytes per element by mshadow type flag: float32, float64, float16, uint8, int32, int8, int64, bool
_ITEM_BYTES = {0: 4, 1: 8, 2: 2, 3: 1, 4: 4, 5: 1, 6: 8, 7: 1, 12: 2}


def load_problem(path: str) -> str | None:
    """Why ``path`` cannot be loaded as a checkpoint (cut short, garbage), or None when it reads whole."""
    try:
        if path.endswith(TORCH):
            return _zip_problem(path)
        with open(path, "rb") as f:
            return _params_problem(f.read())
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"


def _zip_problem(path: str) -> str | None:
    """torch.save writes a zip archive: every member must be there with its checksum right."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError):
        return "not a whole torch checkpoint (cut short or not a torch.save file)"
    return None if bad is None else f"its part {bad} is damaged"


def _params_problem(data: bytes) -> str | None:
    """An mx.nd.save file: header, the arrays, then their names, ending exactly at the file's end."""
    try:
        magic, _reserved, count = struct.unpack_from("<QQQ", data)
        if magic != _NDARRAY_LIST:
            return "not an MXNet .params file (no NDArray-list header)"
        at = 24
        for _ in range(count):
            end = _skip_array(data, at)
            if end is None:
                return None  # an array kind this check does not know: leave it to MXNet
            at = end
        (names,) = struct.unpack_from("<Q", data, at)
        at += 8
        for _ in range(names):
            (length,) = struct.unpack_from("<Q", data, at)
            at += 8 + length
    except struct.error:
        return "cut short (the file ends inside an array)"
    if at != len(data):
        return "cut short" if at > len(data) else f"{len(data) - at} stray bytes at its end"
    return None


def _skip_array(data: bytes, at: int) -> int | None:
    """Where the array saved at ``at`` ends; None for a kind not checked here (sparse, old formats)."""
    magic, stype, ndim = struct.unpack_from("<IiI", data, at)
    if magic not in (_NDARRAY_V2, _NDARRAY_V3) or stype != 0 or ndim > 32:
        return None
    dims = struct.unpack_from(f"<{ndim}q", data, at + 12)
    at += 12 + 8 * ndim
    if ndim == 0:
        return at
    _dev_type, _dev_id, dtype = struct.unpack_from("<iii", data, at)
    if dtype not in _ITEM_BYTES or min(dims) < 0:
        return None
    size = _ITEM_BYTES[dtype]
    for d in dims:
        size *= d
    return at + 12 + size


def newest_loadable(
    prefix: str,
    suffix: str = MXNET,
    epochs_only: bool = False,
    warn: Callable[[str], None] = log.warning,
) -> tuple[int, int] | None:
    """(epoch, batch) of the newest checkpoint whose file reads whole; each newer one that does not
    is named with why, through ``warn``. Every resume (--resume, the launcher's relaunch) asks here."""
    if suffix == MXNET and not os.path.isfile(symbol_path(prefix)):
        return None
    for point in reversed(checkpoints(prefix, suffix)):
        if epochs_only and point[1]:
            continue
        path = params_path(prefix, *point, suffix=suffix)
        problem = load_problem(path)
        if problem is None:
            return point
        warn(f"skipping checkpoint {path}: {problem}")
    return None


def newest_checkpoint(prefix: str, suffix: str = MXNET) -> int | None:
    """The newest epoch N with a loadable PREFIX-NNNN.params (and PREFIX-symbol.json) or, with
    ``suffix=TORCH``, PREFIX-NNNN.pt; None if there is none."""
    point = newest_loadable(prefix, suffix, epochs_only=True)
    return point[0] if point else None


def newest_resume_point(prefix: str) -> ResumePoint | None:
    """The furthest point training can continue from: an epoch checkpoint or a later batch checkpoint."""
    point = newest_loadable(prefix)
    if point is None:
        return None
    epoch, batch = point
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


# ---- writing: a failure is one line naming the folder; an old run is never overwritten unasked --------
FULL_BELOW = 1 << 20  # free bytes under which a failed write is put down to a full disk


def save_file(prefix: str, path: str, write: Callable[[str], object]) -> None:
    """``write(tmp)`` then rename to ``path`` (engine.paths.write_atomic); a read-only folder or a
    full disk is one line naming the folder, not the writer's traceback."""
    folder = os.path.dirname(os.path.abspath(path))
    free_then: list[int] = []

    def measured(tmp: str) -> None:
        try:
            write(tmp)
        except Exception:
            free_then.append(_free(folder))  # before the cleanup frees what the write took
            raise

    with refusing_write(prefix, os.path.basename(path), free_then):
        os.makedirs(folder, exist_ok=True)
        write_atomic(path, measured)


@contextlib.contextmanager
def refusing_write(prefix: str, what: str, free_then: list[int] | None = None) -> Iterator[None]:
    """Any failure to write ``what`` beside ``prefix`` becomes one line naming the folder and why."""
    folder = os.path.dirname(os.path.abspath(prefix))
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        why = _why_unwritable(folder, exc, free_then[0] if free_then else None)
        advice = "free space there" if "space" in why else "make it writable"
        raise UserError(
            f"--model-prefix {prefix}: cannot write {what} in {folder} ({why}); "
            f"{advice} or choose another --model-prefix"
        ) from None


def _why_unwritable(folder: str, exc: Exception, free: int | None) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if free is not None and free < FULL_BELOW:
        return "no space left on the device"  # torch and mxnet report it in their own words
    try:  # their words for a folder that takes no files are no clearer: ask the folder itself
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as probe:
        return (probe.strerror or str(probe)).lower()
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _free(folder: str) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def existing_files(prefix: str) -> list[str]:
    """Every checkpoint file of ``prefix`` of either engine, epoch and batch ones, oldest first."""
    found = [
        params_path(prefix, *point, suffix=suffix)
        for suffix in (MXNET, TORCH)
        for point in checkpoints(prefix, suffix)
    ]
    return sorted(found)


def refuse_overwrite(prefix: str | None, resume: bool, load_epoch: int | None, fresh: bool) -> None:
    """A run that neither resumes nor asks to start anew must not train over an earlier run's
    checkpoints: --keep-checkpoints would prune them as its own."""
    if not prefix or resume or load_epoch is not None or fresh:
        return
    found = existing_files(prefix)
    if found:
        raise UserError(
            f"--model-prefix {prefix} already holds {len(found)} checkpoint(s) "
            f"(newest {os.path.basename(found[-1])}): add --resume to continue from them, "
            "or --fresh to delete them and train from scratch, or choose a new --model-prefix"
        )


def start_fresh(prefix: str | None, resume: bool, load_epoch: int | None, fresh: bool) -> None:
    """--fresh without --resume/--load-epoch: the earlier run's checkpoints go before training."""
    if not prefix or not fresh or resume or load_epoch is not None:
        return
    for path in existing_files(prefix):
        states = path[: -len(MXNET)] + ".states" if path.endswith(MXNET) else None
        for gone in (path, states):
            if gone and os.path.exists(gone):
                os.remove(gone)
        log.info("--fresh: removed %s", path)
