"""--keep-checkpoints: both engines' writers keep the newest few epoch checkpoints (and asked-for multiples)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from trainrun import COMMON, ROOT, run_train

from engine.train import checkpoints as ck

pytestmark = [pytest.mark.slow]
SHORT = ["--benchmark", "--num-batches", "2", "--disp-batches", "1", "--kv-store", "local"]


@pytest.mark.mxnet
def test_mxnet_writer_keeps_the_newest_and_the_save_period_multiples(tmp_path):
    prefix = str(tmp_path / "m")
    out = run_train(
        *COMMON,
        *SHORT,
        "--num-epochs",
        7,
        "--save-period",
        2,
        "--keep-checkpoints",
        1,
        "--model-prefix",
        prefix,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    # saved: 2, 4, 6 (every 2nd) and 7 (the last); kept: 7 (newest) and the multiples asked for
    assert ck.epoch_checkpoints(prefix) == [2, 4, 6, 7]
    out = run_train(*COMMON, *SHORT, "--num-epochs", 4, "--model-prefix", prefix + "b")
    assert out.returncode == 0, out.stdout[-3000:]
    assert ck.epoch_checkpoints(prefix + "b") == [2, 3, 4]  # the default keeps the newest 3
    assert not (tmp_path / "mb-0001.states").exists()  # optimizer states go with their weights


def test_torch_writer_keeps_the_newest_n(tmp_path):
    prefix = str(tmp_path / "t")
    argv = [
        sys.executable,
        "-m",
        "engine.train.torch.run",
        *COMMON,
        *SHORT,
        "--num-epochs",
        "4",
        "--keep-checkpoints",
        "2",
        "--model-prefix",
        prefix,
    ]
    out = subprocess.run(
        argv,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT},
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert ck.checkpoints(prefix, ck.TORCH) == [(3, 0), (4, 0)]
