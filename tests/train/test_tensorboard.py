"""Both engines write TensorBoard scalars that TensorBoard's own reader reads back: tags and steps."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torchdata
from trainrun import ROOT, run_train

from engine.train import tboard

pytest.importorskip("tensorboardX", reason="the TensorBoard writer is an extra: pip install .[tb]")
event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="TensorBoard's reader is in the test extra: pip install .[test]",
)

CLASSES = 4
BATCHES = 6  # 96 training images in batches of 16
SMALL = [
    "--image-shape", "3,32,32", "--num-layers", "18", "--num-classes", str(CLASSES),
    "--batch-size", "16", "--disp-batches", "2", "--data-nthreads", "1", "--seed", "0",
    "--loss", "ce", "--lr-step-epochs", "10", "--num-examples", str(CLASSES * 24),
]  # fmt: skip


@pytest.fixture(scope="module")
def small_rec(tmp_path_factory):
    """4 classes x 32 demo images, 75 % training: 6 batches of 16 per epoch, 32 to validate."""
    data = torchdata.demo_rec(tmp_path_factory.mktemp("tbdemo"), CLASSES, 32, 0.75, 36)
    return ["--data-train", str(data / "demo_train.rec"), "--data-val", str(data / "demo_val.rec")]


def scalars(folder) -> dict[str, list[int]]:
    """Each scalar tag's steps, as TensorBoard reads them from the event files in `folder`."""
    acc = event_accumulator.EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


EPOCH_TAGS = {"epoch/lr", "epoch/time_s", "epoch/train-accuracy", "epoch/train-cross-entropy"}
VAL_TAGS = {"epoch/val-accuracy", "epoch/val-cross-entropy"}


def test_torch_rank0_writes_scalars_beside_the_model_prefix(small_rec, tmp_path):
    pytest.importorskip("torch", reason="the torch engine is an extra: pip install .[torch]")
    prefix = tmp_path / "r18"
    argv = [*SMALL, *small_rec, "--width", "16", "--num-epochs", "2", "--model-prefix", prefix]
    out = subprocess.run(
        [sys.executable, "-m", "engine.train.torch.run", *map(str, argv)],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    steps = scalars(f"{prefix}-tb/rank0")
    for tag in EPOCH_TAGS | VAL_TAGS:
        assert steps[tag] == [0, 1], tag
    # a Speedometer line at batches 2 and 4 of each epoch, counted from the first epoch's start
    for tag in ("images_per_sec/rank0", "interval/accuracy", "interval/cross-entropy"):
        assert steps[tag] == [2, 4, BATCHES + 2, BATCHES + 4], tag


@pytest.mark.mxnet
def test_mxnet_worker_writes_scalars_tagged_with_its_rank(small_rec, tmp_path):
    folder = tmp_path / "tb"
    out = run_train(
        *SMALL, *small_rec, "--num-epochs", "1", "--kv-store", "local",
        "--tensorboard-dir", folder, env={"IMGSCALE_RANK": "3"},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    steps = scalars(folder / "rank3")
    for tag in EPOCH_TAGS | VAL_TAGS:
        assert steps[tag] == [0], tag
    for tag in ("images_per_sec/rank3", "interval/accuracy", "interval/cross-entropy"):
        assert steps[tag] == [2, 4], tag


def test_training_without_tensorboardx_says_scalars_are_off_in_one_line(monkeypatch, caplog):
    monkeypatch.setattr(tboard.importlib.util, "find_spec", lambda name: None)
    with caplog.at_level("INFO", logger="imgscale.train"):
        writer = tboard.open_scalars(None, "/nonexistent/run/r18", 0)
    writer.epoch(0, 0.1, 1.0, [("accuracy", 0.5)], [])  # writes nothing, raises nothing
    assert [r.getMessage() for r in caplog.records] == [tboard.MISSING]
    assert not os.path.exists("/nonexistent/run")


def test_no_prefix_and_no_flag_means_no_scalars():
    assert tboard.scalars_dir(None, None) is None
    assert tboard.scalars_dir(tboard.OFF, "run/r18") is None
    assert tboard.scalars_dir(None, "run/r18") == "run/r18-tb"
    assert tboard.scalars_dir("elsewhere", "run/r18") == "elsewhere"
