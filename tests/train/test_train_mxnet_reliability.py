"""The MXNet engine never reports success for training that cannot be right (issue 21 items 1, 2):
diverged weights are not saved, an undecodable image is named, a damaged newest checkpoint is skipped.
Tiny runs (synthetic 32x32 batches, a few batches each): MXNet is slow on a small machine."""

from __future__ import annotations

import io

import numpy as np
import pytest
from trainrun import run_train

pytest.importorskip("mxnet", reason="the MXNet engine's own tests")

from engine import recordio  # noqa: E402

TINY = ["--network", "resnet", "--num-layers", "18", "--image-shape", "3,32,32", "--num-classes",
        "4", "--batch-size", "8", "--kv-store", "local", "--disp-batches", "1", "--seed", "1",
        "--data-nthreads", "1"]  # fmt: skip
BENCH = [*TINY, "--benchmark", "1", "--num-batches", "3"]


def test_diverged_weights_stop_the_job_and_no_checkpoint_is_written(tmp_path):
    # the largest --lr and momentum the options allow: the weights overflow within a few steps
    run = run_train(*TINY, "--benchmark", "1", "--num-batches", "8", "--num-epochs", "1",
                    "--lr", "100", "--mom", "0.99", "--model-prefix", tmp_path / "m")  # fmt: skip
    assert run.returncode != 0, run.stdout
    last = run.stdout.strip().splitlines()[-1]
    assert "not finite (nan or inf)" in last and "Traceback" not in run.stdout, run.stdout
    assert not list(tmp_path.glob("m-*.params"))


def test_an_image_mxnet_cannot_decode_is_named_not_a_traceback(tmp_path):
    from PIL import Image

    rec = tmp_path / "gif.rec"
    writer = recordio.IndexedRecordWriter(str(tmp_path / "gif.idx"), str(rec))
    for i in range(16):
        out = io.BytesIO()
        Image.fromarray(np.full((40, 40, 3), i * 10, dtype=np.uint8)).save(out, format="GIF")
        writer.write_idx(i, recordio.pack((0, float(i % 4), i, 0), out.getvalue()))
    writer.close()
    run = run_train(*TINY, "--data-train", rec, "--num-examples", "16", "--num-epochs", "1")
    assert run.returncode != 0, run.stdout
    assert f"{rec}: the image at offset 0 does not decode" in run.stdout.strip().splitlines()[-1]


def test_a_damaged_newest_params_is_skipped_and_the_one_before_resumes(tmp_path):
    prefix = tmp_path / "m"
    first = run_train(*BENCH, "--num-epochs", "2", "--keep-checkpoints", "0",
                      "--model-prefix", prefix)  # fmt: skip
    assert first.returncode == 0, first.stdout
    newest = tmp_path / "m-0002.params"
    newest.write_bytes(newest.read_bytes()[:1000])
    again = run_train(*BENCH, "--num-epochs", "3", "--model-prefix", prefix, "--resume")
    assert again.returncode == 0, again.stdout
    assert f"skipping checkpoint {newest}: cut short" in again.stdout
    assert f"resume: from {tmp_path / 'm-0001.params'} at epoch 1" in again.stdout


def test_a_non_finite_output_stops_naming_epoch_and_batch():
    import mxnet as mx

    from engine.errors import UserError
    from engine.train.mxnet.fit import _refuse_diverged

    class Module:  # what Module.get_outputs gives after a step whose loss overflowed
        def __init__(self, value: float):
            self.value = value

        def get_outputs(self, merge_multi_context=True):
            parts = [mx.nd.array([[0.5, 0.5]]), mx.nd.array([[0.5, self.value]])]  # two devices
            return [mx.nd.concat(*parts, dim=0)] if merge_multi_context else [parts]

    _refuse_diverged(Module(0.5), 2, 7)
    with pytest.raises(UserError, match=r"loss is not finite \(nan or inf\) at epoch 2 batch 7"):
        _refuse_diverged(Module(float("nan")), 2, 7)
