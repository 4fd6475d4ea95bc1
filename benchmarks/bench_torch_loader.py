"""Benchmark: the torch engine's CPU loader against MXNet's ImageRecordIter on the same .rec, cores and threads.

Builds (once, cached in --workdir) demo images packed at short edge 480 (quality 90, as the tutorial
packs ImageNet), then, each in a fresh process, reads it with both loaders doing the same work:
random-resized crop to 224 (area 0.08-1, aspect 3/4-4/3), random mirror, mean/std normalisation to
float32 NCHW batches, with --threads decoding threads (torch: DataLoader worker processes; MXNet:
preprocess_threads). Prints images/s (median over --rounds fresh processes x --repeats passes, each
process after one warm-up pass) and the ratio.
Not a test: the numbers depend on the machine and its load.

    python benchmarks/bench_torch_loader.py [--images 800] [--threads 2] [--batch-size 64] [--rounds 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
MEAN, STD = (123.68, 116.779, 103.939), (58.393, 57.12, 57.375)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per process")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per loader")
    parser.add_argument(
        "--workdir", default=os.path.join(tempfile.gettempdir(), "imgscale-bench-torch")
    )
    parser.add_argument("--one", choices=("torch", "mxnet"), help=argparse.SUPPRESS)
    parser.add_argument("--rec", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------- data, shared with bench_torch_gpu.py


def _class_images(job) -> int:
    """Write one class's demo JPEGs (a process-pool task: the demo generator is single-threaded)."""
    import numpy as np

    from engine.prep.demo import demo_image, wnid

    root, index, count, seed = job
    folder = pathlib.Path(root) / wnid(index)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, index])
    for i in range(count):
        (folder / f"{wnid(index)}_{i}.JPEG").write_bytes(demo_image(index, rng))
    return count


def make_rec(workdir: str, images: int, classes: int, processes: int, resize: int = 480) -> str:
    """demo_train.rec/.idx of ``images`` photo-sized demo JPEGs packed at short edge ``resize``; cached."""
    from multiprocessing import Pool

    from engine.prep.lst import write_lists
    from engine.prep.pack import PackOptions, pack_lists

    top = pathlib.Path(workdir) / f"demo-{images}-{classes}-{resize}"
    rec = top / "data" / "demo.rec"
    if (top / ".complete").exists():
        return str(rec)
    started = time.monotonic()
    per_class = -(-images // classes)
    with Pool(processes) as pool:
        pool.map(_class_images, [(str(top / "tree"), k, per_class, 1) for k in range(classes)])
    lists = write_lists(top / "data" / "demo", top / "tree", recursive=True)
    pack_lists(lists, top / "tree", PackOptions(resize=resize, quality=90, num_thread=processes))
    (top / ".complete").write_text("ok\n")
    size = rec.stat().st_size / 2**20
    print(
        f"data: {per_class * classes} demo images packed at short edge {resize}: {size:.0f} MiB "
        f"in {time.monotonic() - started:.0f} s ({rec})",
        flush=True,
    )
    return str(rec)


# ---------------------------------------------------------------- one loader, in its own process


def time_passes(batches_of_pass, repeats: int) -> list[float]:
    """images/s of each pass after one untimed warm-up pass."""
    rates = []
    for i in range(repeats + 1):
        start, count = time.perf_counter(), 0
        for n in batches_of_pass(i):
            count += n
        if i:
            rates.append(count / (time.perf_counter() - start))
    return rates


def torch_rates(rec: str, args) -> list[float]:
    import torch

    from engine.train.torch import data

    torch.set_num_threads(1)  # the decoding is what --threads buys, in worker processes
    aug = data.Augment(size=224, mode="resized")
    loader = data.RecordLoader(
        data.open_index(rec), args.batch_size, aug, threads=args.threads, mean=MEAN, std=STD
    )

    def one_pass(epoch):
        loader.set_epoch(epoch)
        return (len(b.label) for b in loader)

    return time_passes(one_pass, args.repeats)


def mxnet_rates(rec: str, args) -> list[float]:
    import mxnet as mx

    it = mx.io.ImageRecordIter(
        path_imgrec=rec,
        data_shape=(3, 224, 224),
        batch_size=args.batch_size,
        shuffle=True,
        random_resized_crop=True,
        min_random_area=0.08,
        max_random_area=1.0,
        min_aspect_ratio=3 / 4,
        max_aspect_ratio=4 / 3,
        rand_mirror=True,
        preprocess_threads=args.threads,
        mean_r=MEAN[0],
        mean_g=MEAN[1],
        mean_b=MEAN[2],
        std_r=STD[0],
        std_g=STD[1],
        std_b=STD[2],
        round_batch=False,
    )

    def one_pass(_epoch):
        it.reset()
        for batch in it:
            batch.data[0].wait_to_read()
            yield args.batch_size - batch.pad

    return time_passes(one_pass, args.repeats)


def run_one(name: str, rec: str, args) -> list[float]:
    """Measure one loader in a fresh process, so neither inherits the other's threads or caches."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(HERE.parent)}
    cmd = [
        sys.executable,
        __file__,
        "--one",
        name,
        "--rec",
        rec,
        "--threads",
        str(args.threads),
        "--batch-size",
        str(args.batch_size),
        "--repeats",
        str(args.repeats),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{name} loader failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.one:
        rates = torch_rates(args.rec, args) if args.one == "torch" else mxnet_rates(args.rec, args)
        print(json.dumps(rates))
        return
    sys.path.insert(0, str(HERE.parent))
    rec = make_rec(args.workdir, args.images, args.classes, max(1, os.cpu_count() or 1))
    print(
        f"same file, {args.threads} decoding threads, batch {args.batch_size}, RRC 224 + mirror + normalise; "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    # Rounds alternate the order, so a change in the machine's load hits both loaders alike.
    rates: dict[str, list[float]] = {"mxnet": [], "torch": []}
    for round_no in range(args.rounds):
        for name in ("mxnet", "torch") if round_no % 2 == 0 else ("torch", "mxnet"):
            rates[name] += run_one(name, rec, args)
    results = {name: statistics.median(r) for name, r in rates.items()}
    for name in ("mxnet", "torch"):
        passes = ", ".join(f"{r:.0f}" for r in rates[name])
        print(
            f"{name:>6} loader: {results[name]:8.1f} images/s (median; passes: {passes})",
            flush=True,
        )
    print(f" ratio torch/mxnet: {results['torch'] / results['mxnet']:.2f} (goal >= 1.00)")


if __name__ == "__main__":
    main()
