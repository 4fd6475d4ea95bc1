"""A training job's progress from its workers' log events: epoch and batch of totals, images/s, ETA, accuracy.

Fed the Throughput (Speedometer readings) and EpochSummary events the log parser makes; each one
gives the job's TrainProgress so far. Pure: the console's session feeds it and forwards what it says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.events import EpochSummary, Throughput, TrainProgress

ACCURACY_NAMES = ("accuracy", "acc")


@dataclass
class TrainTracker:
    """Where each worker is (epoch, batch); the job is as far as its slowest worker."""

    job: str
    epochs: int
    batches: int | None  # per epoch per worker
    batch_size: int  # per worker
    workers: int
    where: dict[tuple[str, int | None], tuple[int, int]] = field(default_factory=dict)
    rates: dict[tuple[str, int | None], float] = field(default_factory=dict)
    val_accuracy: float | None = None

    def add(self, event: Throughput | EpochSummary) -> TrainProgress | None:
        key = (event.host, event.rank)
        if isinstance(event, Throughput):
            if event.summary or event.epoch is None:
                return None
            self.where[key] = (event.epoch, event.batch or 0)
            self.rates[key] = event.samples_per_sec
        else:
            accuracy = dict(event.validation)
            found = next((accuracy[n] for n in ACCURACY_NAMES if n in accuracy), None)
            if found is None:
                return None
            self.val_accuracy = found
            if self.batches:  # the epoch is over for this worker
                self.where[key] = max(self.where.get(key, (0, 0)), (event.epoch + 1, 0))
        return self.progress(event.time)

    def progress(self, t: float) -> TrainProgress | None:
        if not self.where:
            return None
        epoch, batch = min(self.where.values())
        if epoch >= self.epochs and self.batches:  # past the last epoch: all of it is done
            epoch, batch = self.epochs - 1, self.batches
        rate = sum(self.rates.values()) or None
        return TrainProgress(
            self.job,
            epoch,
            self.epochs,
            batch,
            self.batches,
            rate,
            self._eta(epoch, batch, rate),
            self.val_accuracy,
            time=t,
        )

    def _eta(self, epoch: int, batch: int, rate: float | None) -> float | None:
        if not (rate and self.batches):
            return None
        left = max(0, (self.epochs - epoch) * self.batches - batch)  # batches per worker
        return left * self.batch_size * self.workers / rate


def progress_text(p: TrainProgress) -> str:
    """One line for records and the stage's message: `epoch 15/15, batch 400/400 · 1,234 img/s · val accuracy 0.412`."""
    batches = f"/{p.batches}" if p.batches else ""
    parts = [f"epoch {min(p.epoch + 1, p.epochs)}/{p.epochs}, batch {p.batch}{batches}"]
    if p.images_per_sec is not None:
        parts.append(f"{p.images_per_sec:,.0f} img/s")
    if p.val_accuracy is not None:
        parts.append(f"val accuracy {p.val_accuracy:.3f}")
    return " · ".join(parts)
