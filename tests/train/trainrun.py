"""Running `python -m engine.train.run` as a worker does, with the settings every training test shares."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the shape every training test uses: resnet-18 on 32x32 crops of 10 demo classes
COMMON = [
    "--network",
    "resnet",
    "--num-layers",
    "18",
    "--image-shape",
    "3,32,32",
    "--num-classes",
    "10",
    "--batch-size",
    "32",
    "--optimizer",
    "adam",
    "--lr",
    "0.002",
    "--data-nthreads",
    "1",
    "--seed",
    "1",
    "--rgb-mean",
    "128,128,128",
    "--rgb-std",
    "64,64,64",
]


def run_train(
    *argv, timeout: float = 180, env: dict | None = None, **popen
) -> subprocess.CompletedProcess:
    """`python -m engine.train.run ARGV` as a worker runs it; output (stdout+stderr) in .stdout."""
    full_env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MXNET_CPU_WORKER_NTHREADS="1",
        PYTHONPATH=ROOT,
        **(env or {}),
    )
    return subprocess.run(
        [sys.executable, "-m", "engine.train.run", *map(str, argv)],
        check=False,
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        **popen,
    )


def data_args(data) -> list[str]:
    return [
        "--data-train",
        data.train_dir,
        "--data-val",
        data.val,
        "--num-examples",
        str(data.num_examples),
    ]
