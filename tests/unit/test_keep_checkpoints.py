"""Which epoch checkpoints stay, their removal, and the plan's disk estimate counting only those."""

from __future__ import annotations

import pytest

from engine.train import checkpoints as ck
from engine.train.check import checkpoint_bytes
from engine.train.facts import Facts
from engine.train.options import TrainOptions


@pytest.mark.parametrize(
    ("saved", "keep", "period", "kept"),
    [
        (list(range(1, 21)), 3, 1, [18, 19, 20]),
        (list(range(1, 21)), 0, 1, list(range(1, 21))),  # 0 keeps every checkpoint
        ([5, 10, 15, 20, 22], 1, 5, [5, 10, 15, 20, 22]),  # multiples the user asked for stay
        ([1, 2], 3, 1, [1, 2]),
    ],
)
def test_kept_epochs(saved, keep, period, kept):
    assert ck.kept_epochs(saved, keep, period) == kept


def test_prune_removes_weights_and_states_of_older_epochs_only(tmp_path):
    prefix = str(tmp_path / "m")
    for epoch in range(1, 6):
        for path in (ck.params_path(prefix, epoch), ck.states_path(prefix, epoch)):
            open(path, "w").close()
    open(ck.params_path(prefix, 5, 3), "w").close()  # a batch checkpoint is not an epoch one
    open(ck.params_path(prefix, 9, suffix=ck.TORCH), "w").close()  # the other engine's file
    assert ck.prune_epochs(prefix, 2, 1) == [1, 2, 3]
    assert ck.epoch_checkpoints(prefix) == [4, 5]
    assert sorted(p.name for p in tmp_path.glob("*.states")) == ["m-0004.states", "m-0005.states"]
    assert ck.batch_checkpoints(prefix) == [(5, 3)]
    assert ck.checkpoints(prefix, ck.TORCH) == [(9, 0)]


def test_disk_estimate_counts_what_is_kept_not_every_epoch_written():
    every = checkpoint_bytes(
        Facts(train=TrainOptions(num_epochs=20, save_period=1, keep_checkpoints=0))
    )
    kept = checkpoint_bytes(
        Facts(train=TrainOptions(num_epochs=20, save_period=1, keep_checkpoints=3))
    )
    assert kept * 20 == every * 3
    asked = checkpoint_bytes(
        Facts(train=TrainOptions(num_epochs=20, save_period=5, keep_checkpoints=1))
    )
    assert asked * 20 == every * 4  # 5, 10, 15, 20
