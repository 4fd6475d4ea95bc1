"""Benchmark: `imgscale train` against bare MXNet on the same data, network, settings and cores, in one run.

1. Training throughput: our engine (`python -m engine.train.run`) against a bare `Module.fit` loop over the
   same ImageRecordIter and symbol (goal: ours >= 0.95x). Steady state: the time cost of the second epoch.
2. Input only: `--test-io` against a bare loop over ImageRecordIter (goal: ours >= 1.0x).
3. With --mirror: peak memory and speed of ResNet-50 (--benchmark, synthetic data) with and without
   MXNET_BACKWARD_DO_MIRROR=1.

Ours and the reference run --repeats times each, alternating which goes first; the headline ratio compares the best run of each (the
least disturbed by other load on a shared machine), the medians are printed beside it.

    python benchmarks/bench_train.py [--batches 30] [--repeats 3] [--mirror]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "train")]

BARE_FIT = r"""
import json, logging, sys
import mxnet as mx
from engine.train.options import build_train_parser, parse_with_config
from engine.train.mxnet import data
from engine.train.mxnet.networks import get_symbol
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
args = parse_with_config(build_train_parser(), json.loads(sys.argv[1]))
# the same iterator settings and symbol as ours; everything else is plain MXNet
# reset_internal=False: like ours, each epoch continues the stream instead of restarting the reader
train = mx.io.ResizeIter(mx.io.ImageRecordIter(path_imgrec=data.imgrec_arg(data.rec_files(args.data_train)),
                         shuffle=True, **data._common_kwargs(args, 0, 1), **data._aug_kwargs(args)), args.num_batches,
                         reset_internal=False)
mx.random.seed(args.seed)
mod = mx.mod.Module(get_symbol(args.network, args.num_classes, args.num_layers, tuple(args.image_shape)), context=mx.cpu())
mod.fit(train, num_epoch=args.num_epochs, kvstore="local", optimizer="sgd", eval_metric="acc",
        initializer=mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2),
        optimizer_params={"learning_rate": args.lr, "momentum": args.mom, "wd": args.wd},
        batch_end_callback=mx.callback.Speedometer(args.batch_size, args.disp_batches, auto_reset=False))
"""

BARE_IO = r"""
import json, sys, time
import mxnet as mx
from engine.train.options import build_train_parser, parse_with_config
from engine.train.mxnet import data
args = parse_with_config(build_train_parser(), json.loads(sys.argv[1]))
it = mx.io.ImageRecordIter(path_imgrec=data.imgrec_arg(data.rec_files(args.data_train)), shuffle=True,
                           **data._common_kwargs(args, 0, 1), **data._aug_kwargs(args))
start, done = time.time(), 0
while done < args.num_batches:
    try:
        batch = it.next()
    except StopIteration:
        it.reset()
        continue
    batch.data[0].wait_to_read()
    done += 1
print("bare-io: %.2f images/sec" % (done * args.batch_size / (time.time() - start)))
"""

PLAN = r"""
import re, sys
import mxnet as mx
from engine.train.mxnet.networks import get_symbol
net, layers, batch, side = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ex = get_symbol(net, 1000, layers, (3, side, side)).simple_bind(
    mx.cpu(), data=(batch, 3, side, side), softmax_label=(batch,), grad_req="write")
print("PLAN_MB", re.findall(r"Total (\d+) MB allocated", ex.debug_str())[-1])
"""

PEAK = r"""
import resource, runpy, sys
sys.argv = ["engine.train.run", *sys.argv[1:]]
try:
    runpy.run_module("engine.train.run", run_name="__main__")
except SystemExit:
    pass
print("PEAK_RSS_KB %d" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def env(threads: int) -> dict:
    return dict(
        os.environ, OMP_NUM_THREADS=str(threads), MXNET_CPU_WORKER_NTHREADS="1", PYTHONPATH=ROOT
    )


def run(cmd: list[str], threads: int, extra_env: dict | None = None) -> str:
    out = subprocess.run(
        cmd,
        check=False,
        cwd=ROOT,
        env={**env(threads), **(extra_env or {})},
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(
            f"failed: {' '.join(cmd[:4])} …\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
        )
    return out.stdout + out.stderr


def epoch_rate(log: str, batches: int, batch_size: int) -> float:
    """Images/s of the last epoch from its 'Time cost' line (both engines print it the same way)."""
    costs = [float(x) for x in re.findall(r"Epoch\[\d+\] Time cost=([\d.]+)", log)]
    return batches * batch_size / costs[-1]


def train_args(data, opts) -> list[str]:
    return [
        "--network",
        "resnet",
        "--num-layers",
        str(opts.num_layers),
        "--image-shape",
        opts.image_shape,
        "--num-classes",
        str(data.num_classes),
        "--num-examples",
        str(data.num_examples),
        "--data-train",
        data.train_dir,
        "--batch-size",
        str(opts.batch_size),
        "--kv-store",
        "local",
        "--num-batches",
        str(opts.batches),
        "--data-nthreads",
        str(opts.data_nthreads),
        "--lr",
        "0.05",
        "--disp-batches",
        "10",
        "--seed",
        "1",
        "--num-epochs",
        "2",
    ]


def alternate(opts, ours_run, bare_run) -> tuple[list[float], list[float]]:
    """Run both --repeats times, ours first in even rounds and the reference first in odd ones."""
    ours, bare = [], []
    for round_ in range(opts.repeats):
        pair = [(ours, ours_run), (bare, bare_run)]
        for results, one in pair if round_ % 2 == 0 else pair[::-1]:
            results.append(one())
    return ours, bare


def bench_training(data, opts) -> tuple[list[float], list[float]]:
    import json

    args = train_args(data, opts)

    def ours():
        log = run([sys.executable, "-m", "engine.train.run", *args], opts.threads)
        return epoch_rate(log, opts.batches, opts.batch_size)

    def bare():
        log = run([sys.executable, "-c", BARE_FIT, json.dumps(args)], opts.threads)
        return epoch_rate(log, opts.batches, opts.batch_size)

    return alternate(opts, ours, bare)


def bench_io(data, opts) -> tuple[list[float], list[float]]:
    import json

    args = [*train_args(data, opts), "--num-batches", str(opts.io_batches)]

    def ours():
        log = run([sys.executable, "-m", "engine.train.run", *args, "--test-io"], opts.threads)
        return float(
            re.search(r"test-io: \d+ images in [\d.]+ s: ([\d.]+) images/sec", log).group(1)
        )

    def bare():
        log = run([sys.executable, "-c", BARE_IO, json.dumps(args)], opts.threads)
        return float(re.search(r"bare-io: ([\d.]+) images/sec", log).group(1))

    return alternate(opts, ours, bare)


def report(name: str, ref: str, ours: list[float], bare: list[float], goal: float) -> None:
    best, median = max(ours) / max(bare), statistics.median(ours) / statistics.median(bare)
    print(
        f"{name}: ours {max(ours):.1f} images/s, {ref} {max(bare):.1f} images/s (best of {len(ours)}): "
        f"ratio {best:.3f} (goal >= {goal}); medians {statistics.median(ours):.1f} / "
        f"{statistics.median(bare):.1f} = {median:.3f}"
    )


def bench_mirror_plan(opts) -> None:
    """The executor's planned memory (forward + backward) with and without mirroring."""
    print("\nplanned executor memory (MB), MXNET_BACKWARD_DO_MIRROR=0 -> 1:")
    for net, layers, batch, side in (
        ("resnet", 50, 16, 224),
        ("resnet", 18, 32, 224),
        ("inception-v3", 0, 8, 299),
    ):
        plan = []
        for mirror in ("0", "1"):
            cmd = [sys.executable, "-c", PLAN, net, str(layers), str(batch), str(side)]
            out = run(cmd, opts.threads, {"MXNET_BACKWARD_DO_MIRROR": mirror})
            plan.append(int(re.search(r"PLAN_MB (\d+)", out).group(1)))
        name = f"{net}-{layers}" if layers else net
        print(
            f"  {name} batch {batch} {side}x{side}: {plan[0]} -> {plan[1]} ({plan[1] / plan[0] - 1:+.1%})"
        )


def bench_mirror(opts) -> None:
    args = [
        "--benchmark",
        "--network",
        "resnet",
        "--num-layers",
        "50",
        "--image-shape",
        opts.mirror_shape,
        "--batch-size",
        str(opts.mirror_batch),
        "--num-classes",
        "1000",
        "--kv-store",
        "local",
        "--num-epochs",
        "2",
        "--num-batches",
        str(opts.mirror_batches),
        "--disp-batches",
        "100",
    ]
    print(f"\nResNet-50 --benchmark, {opts.mirror_shape}, batch {opts.mirror_batch}, CPU:")
    for mirror in ("0", "1"):
        log = run(
            [sys.executable, "-c", PEAK, *args], opts.threads, {"MXNET_BACKWARD_DO_MIRROR": mirror}
        )
        peak = int(re.search(r"PEAK_RSS_KB (\d+)", log).group(1)) / 1024
        rate = epoch_rate(log, opts.mirror_batches, opts.mirror_batch)
        print(f"  MXNET_BACKWARD_DO_MIRROR={mirror}: peak RSS {peak:,.0f} MiB, {rate:.2f} images/s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--image-shape", default="3,64,64")
    parser.add_argument("--num-layers", type=int, default=18)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30, help="batches per timed epoch")
    parser.add_argument("--io-batches", type=int, default=60)
    parser.add_argument("--data-nthreads", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS for both")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--mirror", action="store_true", help="also measure MXNET_BACKWARD_DO_MIRROR"
    )
    parser.add_argument("--mirror-shape", default="3,224,224")
    parser.add_argument("--mirror-batch", type=int, default=16)
    parser.add_argument("--mirror-batches", type=int, default=2)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-io", action="store_true")
    opts = parser.parse_args()
    import recdata

    with tempfile.TemporaryDirectory() as tmp:
        side = int(opts.image_shape.split(",")[-1])
        data = recdata.build(
            tmp,
            classes=opts.classes,
            per_class=opts.per_class,
            val_per_class=10,
            edge=side + side // 8,
            max_side=2 * side,
        )
        print(
            f"data: {data.num_examples} training images in {len(os.listdir(data.train_dir))} chunks, "
            f"input {opts.image_shape}, resnet-{opts.num_layers}, batch {opts.batch_size}, "
            f"OMP_NUM_THREADS={opts.threads}, {opts.repeats} runs each"
        )
        if not opts.skip_train:
            report("training", "bare Module.fit", *bench_training(data, opts), 0.95)
        if not opts.skip_io:
            report("test-io", "bare ImageRecordIter", *bench_io(data, opts), 1.0)
    if opts.mirror:
        bench_mirror(opts)
        bench_mirror_plan(opts)


if __name__ == "__main__":
    main()
