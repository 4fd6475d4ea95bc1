"""The train row's figures: epoch and batch of totals, cluster images/s, ETA of the job, last val accuracy."""

from __future__ import annotations

import pytest

from engine.events import EpochSummary, Throughput
from engine.train.progress import TrainTracker, progress_text


def test_progress_follows_the_slowest_worker_and_estimates_the_rest_of_the_job():
    tracker = TrainTracker("train-1", epochs=15, batches=400, batch_size=32, workers=2)
    tracker.add(Throughput("a", 0, 100.0, epoch=2, batch=140, time=1.0))
    p = tracker.add(Throughput("b", 1, 60.0, epoch=2, batch=120, time=2.0))
    assert (p.epoch, p.epochs, p.batch, p.batches) == (2, 15, 120, 400)
    assert p.images_per_sec == 160.0
    left = (15 - 2) * 400 - 120  # batches per worker
    assert p.eta_s == pytest.approx(left * 32 * 2 / 160.0)
    assert p.fraction == pytest.approx((2 * 400 + 120) / (15 * 400))


def test_validation_accuracy_is_kept_and_an_epoch_end_moves_the_worker_on():
    tracker = TrainTracker("train-1", epochs=2, batches=10, batch_size=8, workers=1)
    tracker.add(Throughput("a", 0, 50.0, epoch=0, batch=10, time=1.0))
    p = tracker.add(EpochSummary("a", 0, 0, validation=(("accuracy", 0.412),), time=2.0))
    assert p.val_accuracy == 0.412 and (p.epoch, p.batch) == (1, 0)
    assert progress_text(p) == "epoch 2/2, batch 0/10 · 50 img/s · val accuracy 0.412"
    p = tracker.add(EpochSummary("a", 0, 1, validation=(("accuracy", 0.5),), time=3.0))
    assert (p.epoch, p.batch, p.fraction) == (1, 10, 1.0)  # the end reads "epoch 2/2, batch 10/10"


def test_a_summary_or_an_epochless_reading_moves_nothing():
    tracker = TrainTracker("t", epochs=1, batches=None, batch_size=8, workers=1)
    assert tracker.add(Throughput("a", 0, 50.0, summary=True)) is None
    assert tracker.add(Throughput("a", 0, 50.0)) is None
    p = tracker.add(Throughput("a", 0, 50.0, epoch=0, batch=20))
    assert p.eta_s is None and p.fraction is None  # unknown epoch length: no made-up ETA
