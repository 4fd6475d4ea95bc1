"""TensorBoard scalars from either engine's fit loop, written with tensorboardX (imported lazily).

Each worker that writes has its own run folder DIR/rankR, so `tensorboard --logdir DIR` shows one
run per rank. Tags, the same for both engines:
  interval/<metric>, images_per_sec/rankR   every --disp-batches batches (step: batches since epoch 0)
  epoch/train-<metric>, epoch/val-<metric>, epoch/lr, epoch/time_s   once per epoch (step: epoch)
A metric is what the Speedometer and epoch lines log: accuracy, top_k_accuracy_K, and the loss as
cross-entropy with --loss ce. Without tensorboardX installed training runs as before, and one line
says the scalars are off.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("imgscale.train")

OFF = "off"  # --tensorboard-dir off: no scalars even beside a --model-prefix
MISSING = (
    "TensorBoard scalars are off: tensorboardX is not installed here "
    "(pip install 'imgscale[tb]' or pip install tensorboardX)"
)


def scalars_dir(tensorboard_dir: str | None, model_prefix: str | None) -> str | None:
    """Where the event files go: --tensorboard-dir, else PREFIX-tb beside the checkpoints, else none."""
    if tensorboard_dir == OFF:
        return None
    if tensorboard_dir:
        return tensorboard_dir
    return f"{model_prefix}-tb" if model_prefix else None


def run_dir(root: str, rank: int) -> str:
    return os.path.join(root, f"rank{rank}")


class Scalars:
    """One worker's writer; every method is a no-op when there is none (no folder or no tensorboardX)."""

    def __init__(self, writer: Any = None, rank: int = 0):
        self.writer, self.rank = writer, rank

    def interval(
        self, step: int, images_per_sec: float, values: Iterable[tuple[str, float]]
    ) -> None:
        """One Speedometer line's figures."""
        self._write(lambda w: _add(w, step, [(f"images_per_sec/rank{self.rank}", images_per_sec)]))
        self._write(lambda w: _add(w, step, [(f"interval/{n}", v) for n, v in values]))

    def epoch(
        self,
        epoch: int,
        lr: float,
        seconds: float,
        train: Iterable[tuple[str, float]],
        validation: Iterable[tuple[str, float]],
    ) -> None:
        """One epoch's summary; flushed, so a reader sees whole epochs while the run goes on."""
        figures = [("epoch/lr", lr), ("epoch/time_s", seconds)]
        figures += [(f"epoch/train-{n}", v) for n, v in train]
        figures += [(f"epoch/val-{n}", v) for n, v in validation]
        self._write(lambda w: _add(w, epoch, figures, flush=True))

    def close(self) -> None:
        self._write(lambda w: w.close())
        self.writer = None

    def _write(self, work: Callable[[Any], object]) -> None:
        """The scalars are a by-product: a full or read-only disk stops them with one line, never
        the training (nor hides the error training itself reports about that disk)."""
        if self.writer is None:
            return
        try:
            work(self.writer)
        except OSError as exc:
            log.warning("TensorBoard scalars stopped: %s", exc.strerror or exc)
            self.writer = None


def _add(writer: Any, step: int, figures: Iterable[tuple[str, float]], flush: bool = False) -> None:
    for tag, value in figures:
        writer.add_scalar(tag, value, step)
    if flush:
        writer.flush()


def open_scalars(tensorboard_dir: str | None, model_prefix: str | None, rank: int) -> Scalars:
    """This worker's writer under DIR/rankR, or a Scalars that writes nothing (saying why once)."""
    root = scalars_dir(tensorboard_dir, model_prefix)
    if root is None:
        return Scalars()
    if importlib.util.find_spec("tensorboardX") is None:
        log.info(MISSING)
        return Scalars()
    from tensorboardX import SummaryWriter

    folder = run_dir(root, rank)
    log.info("TensorBoard scalars: %s (tensorboard --logdir %s)", folder, root)
    return Scalars(SummaryWriter(logdir=folder, flush_secs=30), rank)


class Interval:
    """Speedometer's clock for a loop that does not expose its rate (MXNet's Speedometer only logs it):
    the first batch starts it; every `frequent` batches it gives images/s since the last reading."""

    def __init__(self, batch_size: int, frequent: int):
        self.batch_size, self.frequent = batch_size, frequent
        self.tic: float | None = None

    def __call__(self, nbatch: int) -> float | None:
        if self.tic is None:
            self.tic = time.time()
            return None
        if nbatch % self.frequent:
            return None
        now = time.time()
        rate = self.frequent * self.batch_size / max(now - self.tic, 1e-9)
        self.tic = now
        return rate


def report_interval(
    scalars: Scalars,
    clock: Interval,
    step: int,
    nbatch: int,
    values: Callable[[], Iterable[tuple[str, float]]],
) -> None:
    """Write an interval's scalars when the clock says a Speedometer line is due (values read only then)."""
    rate = clock(nbatch)
    if rate is not None and scalars.writer is not None:
        scalars.interval(step, rate, values())
