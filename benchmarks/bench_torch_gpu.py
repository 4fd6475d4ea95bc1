"""Benchmark (one GPU, < 8 min on an H100): torch-engine ResNet-50 training images/s, synthetic vs real .rec data.

Makes demo images packed at short edge 480 (quality 90, as the tutorial packs ImageNet), replicated
into --copies chunks so an epoch is long, then measures on GPU 0, each after --warmup steps:
  1. the input pipeline alone (random-resized crop 224, flip, normalise, on the GPU): OpenCV decoding
     in worker processes, and nvJPEG decoding when torchvision is importable;
  2. ResNet-50 training with --benchmark (synthetic data: compute only);
  3. ResNet-50 training on the real .rec data through the faster pipeline of step 1.
Prints images/s of each, real/synthetic (goal >= 0.95) and real vs the 3,000 images/s goal.
Training is bf16 autocast, channels-last, SGD, the engine's own training step (engine/train/torch/fit.py).

    python benchmarks/bench_torch_gpu.py [--batch-size 256] [--steps 80] [--threads N] [--compile] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time
import traceback

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
GOAL_REAL, GOAL_RATIO = 3000.0, 0.95


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=2000, help="distinct demo images to make and pack"
    )
    parser.add_argument(
        "--copies", type=int, default=8, help="chunks of those images (epoch = images x copies)"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="per GPU")
    parser.add_argument(
        "--steps", type=int, default=80, help="timed training steps per measurement"
    )
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 2),
        help="decoding worker processes (default: all cores but two)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the network (adds ~1-2 min)"
    )
    parser.add_argument(
        "--device", default="cuda", help=argparse.SUPPRESS
    )  # cpu: smoke-test this script
    parser.add_argument(
        "--workdir", default=os.path.join(tempfile.gettempdir(), "imgscale-bench-torch")
    )
    return parser.parse_args()


def environment() -> None:
    import torch

    from engine.train.torch.data import gpu_decode_available

    dev = torch.device("cuda", 0)
    shm = shutil.disk_usage("/dev/shm").total / 2**30 if os.path.isdir("/dev/shm") else 0
    print(
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(dev)}, "
        f"{os.cpu_count()} CPU cores, /dev/shm {shm:.1f} GiB, nvJPEG via torchvision: "
        f"{'yes' if gpu_decode_available(dev) else 'no'}",
        flush=True,
    )


def replicate(rec: str, copies: int) -> str:
    """A folder of ``copies`` chunks of the same records (hard links): a long epoch from few images."""
    folder = pathlib.Path(rec).parent.parent / f"train-x{copies}"
    folder.mkdir(exist_ok=True)
    for i in range(copies):
        for ext in (".rec", ".idx"):
            target = folder / f"chunk-{i}{ext}"
            if not target.exists():
                os.link(rec[: -len(".rec")] + ext, target)
    return str(folder)


def train_args(
    batch_size: int, threads: int, compile_net: bool, data: str | None, decode: str = "auto"
):
    from engine.train.torch.run import build_parser

    flags = [
        "--gpus",
        "0",
        "--network",
        "resnet",
        "--num-layers",
        "50",
        "--num-classes",
        "1000",
        "--batch-size",
        str(batch_size),
        "--data-nthreads",
        str(threads),
        "--lr",
        "0.1",
        "--random-resized-crop",
        "1",
        "--min-random-area",
        "0.08",
        "--decode",
        decode,
        "--rgb-std",
        "58.393,57.12,57.375",
    ]
    flags += ["--data-train", data] if data else ["--benchmark"]
    flags += ["--compile"] if compile_net else []
    return build_parser().parse_args(flags)


def endless(batches):
    """Batches across epochs, reshuffled each epoch, for as long as asked."""
    epoch = 0
    while True:
        batches.set_epoch(epoch)
        yield from batches
        epoch += 1


def timed(stream, warmup: int, steps: int, batch_size: int, work) -> float:
    """images/s over ``steps`` batches after ``warmup``, with the GPU synchronised at both ends."""
    import torch

    start = 0.0
    for i, batch in enumerate(stream):
        if i == warmup:
            _sync(torch)
            start = time.perf_counter()
        if i == warmup + steps:
            _sync(torch)
            stream.close()
            return steps * batch_size / (time.perf_counter() - start)
        work(batch)
    raise RuntimeError("the data ended early")


def pipeline_rate(opts, folder: str, decode: str) -> float:
    """The loader alone, batches landing on the GPU normalised and channels-last."""
    from engine.train.torch import fit

    args = train_args(opts.batch_size, opts.threads, False, folder, decode)
    rank = fit.Rank(0, 1, 0, _device(opts))
    loader = fit.make_loader(args, rank, folder, "--data-train", opts.batch_size, train=True)
    return timed(endless(loader), opts.warmup, opts.steps, opts.batch_size, lambda b: None)


def training_rate(opts, folder: str | None, decode: str = "auto") -> float:
    """The engine's training step (forward, backward, SGD update) on synthetic or real batches."""
    from engine.train.torch import fit

    args = train_args(opts.batch_size, opts.threads, opts.compile, folder, decode)
    rank = fit.Rank(0, 1, 0, _device(opts))
    total = opts.warmup + opts.steps + 1
    if folder:
        batches = fit.make_loader(args, rank, folder, "--data-train", opts.batch_size, train=True)
    else:
        batches = fit.Synthetic(args, rank, opts.batch_size, total)
    trainer = fit.build_trainer(args, rank, max(1, len(batches)), opts.batch_size)
    trainer.step_model.train()
    meters = (fit.Metrics(rank.device),)
    warmup = opts.warmup + (20 if opts.compile else 0)
    return timed(
        endless(batches), warmup, opts.steps, opts.batch_size, lambda b: trainer.step(b, meters)
    )


def _sync(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _device(opts):
    import torch

    if opts.device == "cpu":
        return torch.device("cpu")
    torch.cuda.set_device(0)
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda", 0)


def measure(label: str, fn, *fn_args) -> float | None:
    started = time.monotonic()
    try:
        rate = fn(*fn_args)
    except Exception:  # noqa: BLE001 - report and go on to the other measurements
        print(
            f"{label:<44} FAILED after {time.monotonic() - started:.0f} s:\n{traceback.format_exc()}",
            flush=True,
        )
        return None
    print(f"{label:<44} {rate:9.1f} images/s   ({time.monotonic() - started:.0f} s)", flush=True)
    return rate


def main() -> None:
    opts = parse_args()
    import torch

    if opts.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"no CUDA GPU visible to torch {torch.__version__}: this benchmark needs one"
        )
    from bench_torch_loader import make_rec

    from engine.train.torch.data import gpu_decode_available

    started = time.monotonic()
    if opts.device == "cuda":
        environment()
    folder = replicate(make_rec(opts.workdir, opts.images, 20, os.cpu_count() or 1), opts.copies)
    print(
        f"ResNet-50, batch {opts.batch_size}, bf16, channels-last, {opts.threads} decoding workers, "
        f"{opts.images * opts.copies} records{', torch.compile' if opts.compile else ''}",
        flush=True,
    )
    pipes = {
        "cpu": measure("input pipeline, OpenCV in workers", pipeline_rate, opts, folder, "cpu")
    }
    if opts.device == "cuda" and gpu_decode_available(torch.device("cuda", 0)):
        pipes["gpu"] = measure(
            "input pipeline, nvJPEG on the GPU", pipeline_rate, opts, folder, "gpu"
        )
    best = max((k for k in pipes if pipes[k]), key=lambda k: pipes[k], default="cpu")
    synthetic = measure("training, synthetic data (--benchmark)", training_rate, opts, None)
    real = measure(f"training, real .rec data ({best} decoding)", training_rate, opts, folder, best)
    print(f"total {time.monotonic() - started:.0f} s")
    if synthetic and real:
        print(
            f"real / synthetic: {real / synthetic:.3f} (goal >= {GOAL_RATIO}); "
            f"real: {real:.0f} images/s (goal >= {GOAL_REAL:.0f} per GPU)"
        )


if __name__ == "__main__":
    main()
