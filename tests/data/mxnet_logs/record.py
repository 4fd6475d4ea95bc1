"""Re-record the real MXNet logs the parser tests read: `python tests/data/mxnet_logs/record.py`.

Each log is what MXNet 1.9.1 itself printed (Module.fit, Speedometer, do_checkpoint, an allocation
failure), captured from a subprocess; nothing in the .log files is written by hand.
"""

import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent

FIT = r"""
import logging, sys
import mxnet as mx, numpy as np
logging.basicConfig(level=logging.DEBUG, format="%%(asctime)-15s Node[0] %%(message)s", stream=sys.stdout)
rng = np.random.RandomState(0)
x = rng.randn(400, 8).astype("float32"); y = (x[:, 0] > 0).astype("float32") + 2 * (x[:, 1] > 0)
train = mx.io.NDArrayIter(x[:320], y[:320], batch_size=16, shuffle=True, label_name="softmax_label")
val = mx.io.NDArrayIter(x[320:], y[320:], batch_size=16, label_name="softmax_label")
net = mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=32)
net = mx.sym.SoftmaxOutput(mx.sym.FullyConnected(mx.sym.Activation(net, act_type="relu"), num_hidden=4), name="softmax")
mod = mx.mod.Module(net, context=mx.cpu())
metrics = [mx.metric.create("accuracy"), mx.metric.create("top_k_accuracy", top_k=2), mx.metric.create("ce")]
mod.fit(train, eval_data=val, eval_metric=metrics, num_epoch=3, optimizer="sgd",
        optimizer_params={"learning_rate": 0.1, "momentum": 0.9,
                          "lr_scheduler": mx.lr_scheduler.MultiFactorScheduler(step=[40], factor=0.1, base_lr=0.1)},
        batch_end_callback=mx.callback.Speedometer(16, %(frequent)d, auto_reset=%(reset)s),
        epoch_end_callback=mx.callback.do_checkpoint(sys.argv[1]))
"""

# A real allocation failure, safely: cap this process's address space just above what it uses, then ask
# MXNet for 4 GiB.
BAD_ALLOC = r"""
import resource
import mxnet as mx
import psutil
cap = psutil.Process().memory_info().vms + (512 << 20)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
a = mx.nd.zeros((1 << 30,), dtype="float32")
a.wait_to_read()
"""


def record(name: str, code: str, *args: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MXNET_CPU_WORKER_NTHREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=False, capture_output=True, text=True, env=env
    )
    (HERE / name).write_text(out.stdout + out.stderr)


def record_engine(tmp: str) -> None:
    """`imgscale train` (real MXNet underneath) locally and as a 2-worker dist_sync job."""
    sys.path[:0] = [str(HERE.parents[2]), str(HERE.parents[1] / "train")]
    import recdata
    from psjob import run_dist
    from trainrun import COMMON, data_args

    data = recdata.build(os.path.join(tmp, "data"))
    common = [
        *COMMON,
        *("--num-epochs", "3", "--lr-step-epochs", "2", "--disp-batches", "5"),
        *data_args(data),
        "--model-prefix",
        os.path.join(tmp, "ck", "r18"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MXNET_CPU_WORKER_NTHREADS="1")
    out = subprocess.run(
        [sys.executable, "-m", "engine.train.run", *common, "--kv-store", "local"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=HERE.parents[2],
    )
    (HERE / "imgscale_train_local.log").write_text(out.stdout + out.stderr)
    dist = run_dist([*common, "--kv-store", "dist_sync", "--disp-batches", "2"])
    for text in dist.worker_logs:
        name = "dist_sync_worker0.log" if "Node[0" in text else "dist_sync_worker1.log"
        (HERE / name).write_text(text)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        record_engine(tmp)
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "mlp")
        record("module_fit_speedometer.log", FIT % {"frequent": 5, "reset": "True"}, prefix)
        record("module_fit_no_auto_reset.log", FIT % {"frequent": 10, "reset": "False"}, prefix)
    record("cpu_bad_alloc.log", BAD_ALLOC)


if __name__ == "__main__":
    main()
