"""Real MXNet training on the demo dataset (CPU): learning, checkpoints, resume, troubleshooting modes, dist_sync."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import pytest
from psjob import run_dist
from trainrun import COMMON, ROOT, data_args, run_train

from engine.train import checkpoints as ck
from engine.train.logparse import latest_summaries, parse_log
from engine.train.mxnet import saving

pytestmark = [pytest.mark.mxnet, pytest.mark.slow]
CHANCE = 0.1  # 10 classes


def final_val_accuracy(log: str) -> float:
    return dict(latest_summaries(parse_log(log))[-1].validation)["accuracy"]


@pytest.fixture(scope="module")
def local_run(demo_rec, tmp_path_factory):
    """3 epochs of resnet-18, kv-store local, checkpoints every epoch."""
    prefix = str(tmp_path_factory.mktemp("local") / "r18")
    out = run_train(
        *COMMON,
        *data_args(demo_rec),
        "--num-epochs",
        3,
        "--lr-step-epochs",
        "10",
        "--kv-store",
        "local",
        "--disp-batches",
        5,
        "--model-prefix",
        prefix,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    return prefix, out.stdout


def test_resnet18_learns_well_above_chance_with_local_kvstore(local_run):
    prefix, log = local_run
    # seeded: this run reaches 0.58 after 3 epochs; chance is 0.10
    assert final_val_accuracy(log) >= 0.3
    assert re.search(
        r"Node\[0\] Epoch\[2\] Batch \[\d+-\d+\]\tSpeed: [\d.]+ samples/sec\taccuracy=", log
    )
    assert "batch: per-gpu=32 per-worker=32 global=32; 15 batches per epoch per worker" in log
    assert ck.newest_checkpoint(prefix) == 3
    saved = json.loads(pathlib.Path(f"{prefix}-args.json").read_text())
    assert saved["num_layers"] == 18 and saved["image_shape"] == [3, 32, 32]
    rows = pathlib.Path(f"{prefix}-summary.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,time_s,train_accuracy") and len(rows) == 4


def _outputs(symbol, arg_params, aux_params, val_rec):
    """Softmax outputs for every validation image (the padding of the last batch left out), and labels."""
    import mxnet as mx
    import numpy as np

    val = mx.io.ImageRecordIter(
        path_imgrec=val_rec,
        data_shape=(3, 32, 32),
        batch_size=32,
        mean_r=128,
        mean_g=128,
        mean_b=128,
        std_r=64,
        std_g=64,
        std_b=64,
        preprocess_threads=1,
    )
    module = mx.mod.Module(symbol, context=mx.cpu())
    module.bind(data_shapes=val.provide_data, label_shapes=val.provide_label, for_training=False)
    module.set_params(arg_params, aux_params)
    outputs, labels = [], []
    for batch in val:
        module.forward(batch, is_train=False)
        keep = batch.data[0].shape[0] - batch.pad
        outputs.append(module.get_outputs()[0].asnumpy()[:keep])
        labels.append(batch.label[0].asnumpy()[:keep])
    return np.concatenate(outputs), np.concatenate(labels)


def test_our_checkpoint_loads_in_plain_mxnet_and_gives_the_same_outputs(local_run, demo_rec):
    import mxnet as mx
    import numpy as np

    from engine.train.mxnet.networks import get_symbol

    prefix, log = local_run
    plain, labels = _outputs(*mx.model.load_checkpoint(prefix, 3), demo_rec.val)
    ours, _ = _outputs(
        get_symbol("resnet", 10, 18, (3, 32, 32)),
        *saving.load_params(ck.params_path(prefix, 3)),
        demo_rec.val,
    )
    assert len(labels) == 120 and np.allclose(plain, ours, rtol=1e-5, atol=1e-6)
    # and exactly the accuracy the engine logged for that epoch: the checkpoint holds the weights and
    # BatchNorm statistics validation used (not ones caught mid-update)
    accuracy = float((plain.argmax(axis=1) == labels).mean())
    assert accuracy == pytest.approx(final_val_accuracy(log), abs=1e-6)


def test_resume_continues_the_epoch_count_and_the_lr_schedule(demo_rec, tmp_path):
    prefix = str(tmp_path / "r18")
    common = [
        *COMMON,
        *data_args(demo_rec),
        "--kv-store",
        "local",
        "--num-batches",
        4,
        "--disp-batches",
        2,
        "--lr-step-epochs",
        "1,2",
        "--model-prefix",
        prefix,
    ]
    first = run_train(*common, "--num-epochs", 1)
    assert first.returncode == 0, first.stdout[-3000:]
    assert os.path.isfile(ck.states_path(prefix, 1))
    second = run_train(*common, "--num-epochs", 3, "--resume")
    assert second.returncode == 0, second.stdout[-3000:]
    log = second.stdout
    assert "Epoch[0]" not in log and "resume: from" in log
    epochs = sorted({s.epoch for s in latest_summaries(parse_log(log))})
    assert epochs == [1, 2]
    # one step (epoch 1) already passed: start at 0.002 x 0.1; the epoch-2 step comes after 4 more updates
    assert "Epoch[1] Learning-rate=0.0002" in log
    assert "Update[5]: Change learning rate to 2.00000e-05" in log
    assert ck.newest_checkpoint(prefix) == 3


def test_a_crash_mid_epoch_resumes_from_the_batch_checkpoint(demo_rec, tmp_path):
    prefix = str(tmp_path / "r18")
    common = [
        *COMMON,
        *data_args(demo_rec),
        "--kv-store",
        "local",
        "--num-epochs",
        1,
        "--disp-batches",
        1,
        "--save-batches",
        3,
        "--model-prefix",
        prefix,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MXNET_CPU_WORKER_NTHREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.train.run", *map(str, common)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in proc.stdout:  # wait for the condition, then crash the worker the hard way
            if "Saved checkpoint to" in line and ".b000003.params" in line:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert ck.newest_checkpoint(prefix) is None and ck.newest_resume_point(prefix).batch == 3
    resumed = run_train(*common, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "resume: from" in resumed.stdout and "at epoch 0 batch 3" in resumed.stdout
    assert "Epoch[0] Batch [0-1]" not in resumed.stdout  # the first 3 batches are not trained again
    assert ck.newest_checkpoint(prefix) == 1 and ck.batch_checkpoints(prefix) == []


def test_test_io_reports_images_per_second(demo_rec):
    out = run_train(
        *COMMON,
        *data_args(demo_rec),
        "--kv-store",
        "local",
        "--test-io",
        "--num-batches",
        6,
        "--disp-batches",
        3,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    assert re.search(r"test-io: Batch \[3-6\]\tSpeed: [\d.]+ samples/sec", out.stdout)
    assert re.search(r"test-io: 192 images in [\d.]+ s: [\d.]+ images/sec", out.stdout)
    assert "Epoch[0] Train" not in out.stdout  # nothing was trained


def test_benchmark_trains_on_synthetic_data_with_mirroring_on():
    out = run_train(
        *COMMON,
        "--benchmark",
        "--kv-store",
        "local",
        "--num-epochs",
        1,
        "--num-batches",
        5,
        "--disp-batches",
        2,
        "--mirror",
    )
    assert out.returncode == 0, out.stdout[-3000:]
    assert "MXNET_BACKWARD_DO_MIRROR=1" in out.stdout
    assert re.search(r"Epoch\[0\] Batch \[0-4\]\tSpeed: [\d.]+ samples/sec", out.stdout)
    assert "ImageRecordIOParser" not in out.stdout  # no data was read


def test_out_of_memory_becomes_a_diagnosis_not_a_traceback():
    import resource

    def cap_memory():  # a real allocation failure without endangering the machine
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    out = run_train(
        "--benchmark",
        "--network",
        "resnet",
        "--num-layers",
        50,
        "--batch-size",
        256,
        "--num-classes",
        10,
        "--kv-store",
        "local",
        "--num-epochs",
        1,
        "--num-batches",
        2,
        preexec_fn=cap_memory,
    )
    assert out.returncode == 1
    assert (
        "diagnosis: host out of memory" in out.stdout
        and "try: use a smaller --batch-size (e.g. 128)" in out.stdout
    )
    assert "Traceback" not in out.stdout


def test_two_worker_dist_sync_job_learns_and_splits_the_data(demo_rec, tmp_path):
    prefix = str(tmp_path / "r18")
    # 16 per worker: the global batch (32) and the number of updates match the local run
    result = run_dist(
        [
            *COMMON,
            *data_args(demo_rec),
            "--kv-store",
            "dist_sync",
            "--num-epochs",
            3,
            "--batch-size",
            16,
            "--lr-step-epochs",
            "10",
            "--disp-batches",
            5,
            "--model-prefix",
            prefix,
        ]
    )
    assert result.worker_status == [0, 0], "\n".join(log[-2000:] for log in result.worker_logs)
    for log in result.worker_logs:
        assert "batch: per-gpu=16 per-worker=16 global=32; 15 batches per epoch per worker" in log
        assert len(re.findall(r"Epoch\[\d\] Time cost", log)) == 3
    accuracies = [final_val_accuracy(log) for log in result.worker_logs]
    # each worker scores its half of the validation set; the seeded run reaches 0.52 and 0.55; chance is 0.10
    assert sum(accuracies) / 2 >= 0.3, accuracies
    assert ck.newest_checkpoint(prefix) == 3  # written by rank 0 only
    assert sum('Saved checkpoint to "' in log for log in result.worker_logs) == 1


def test_dist_kvstore_outside_a_launched_job_is_one_clear_line():
    out = run_train(*COMMON, "--benchmark", "--kv-store", "dist_sync", env={"DMLC_PS_ROOT_URI": ""})
    assert out.returncode == 2
    assert (
        "--kv-store dist_sync needs the DMLC_* environment" in out.stdout
        and "Traceback" not in out.stdout
    )
