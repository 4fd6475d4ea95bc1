"""A tiny real MXNet dist_sync job for the launcher tests: an MLP on synthetic data, Speedometer-like lines.

Every role prints its identity and MXNET_BACKWARD_DO_MIRROR before importing mxnet (servers and the
scheduler never return from ``import mxnet``: they serve, then exit).
Options: --batches N (per epoch), --epochs E, --pause S (seconds after each batch, to keep a job
running long enough to be interrupted), --load-epoch N (printed: the resume hook sets it).
"""

import argparse
import os
import socket
import sys
import time


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--load-epoch", type=int, default=None)
    parser.add_argument("--kv-store", default="dist_sync")
    return parser.parse_args()


def main() -> int:
    args = parse()
    role = os.environ.get("DMLC_ROLE", "local")
    print(
        f"role={role} rank={os.environ.get('IMGSCALE_RANK')} "
        f"MXNET_BACKWARD_DO_MIRROR={os.environ.get('MXNET_BACKWARD_DO_MIRROR')} "
        f"load_epoch={args.load_epoch} hostname={socket.gethostname()}",
        flush=True,
    )
    import mxnet as mx  # servers and the scheduler serve inside this import and exit

    kv = mx.kv.create(args.kv_store)
    print(f"worker rank {kv.rank} of {kv.num_workers}", flush=True)
    train(mx, kv, args)
    return 0


def train(mx, kv, args) -> None:
    import numpy as np

    rng = np.random.RandomState(kv.rank)
    x = rng.rand(args.batches * 8, 16).astype("float32")
    y = (x.sum(axis=1) > 8).astype("float32")
    data = mx.io.NDArrayIter(x, y, batch_size=8)
    net = mx.sym.SoftmaxOutput(
        mx.sym.FullyConnected(
            mx.sym.Activation(
                mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=8), act_type="relu"
            ),
            num_hidden=2,
        ),
        name="softmax",
    )
    mod = mx.mod.Module(net, context=mx.cpu())
    mod.bind(data.provide_data, data.provide_label)
    mod.init_params(mx.init.Xavier())
    mod.init_optimizer(kvstore=kv, optimizer="sgd", optimizer_params={"learning_rate": 0.1})
    metric = mx.metric.Accuracy()
    for epoch in range(args.epochs):
        data.reset()
        metric.reset()
        start = time.time()
        for nbatch, batch in enumerate(data):
            mod.forward_backward(batch)
            mod.update()
            mod.update_metric(metric, batch.label)
            speed = 8 * (nbatch + 1) / max(time.time() - start, 1e-6)
            name, value = metric.get()
            print(
                f"Epoch[{epoch}] Batch [{nbatch + 1}]\tSpeed: {speed:.2f} samples/sec\t"
                f"{name}={value:.6f}",
                flush=True,
            )
            if args.pause:
                time.sleep(args.pause)  # workload pacing, not synchronisation
        print(f"Epoch[{epoch}] Train-{metric.get()[0]}={metric.get()[1]:.6f}", flush=True)
        print(f"Epoch[{epoch}] Time cost={time.time() - start:.3f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
