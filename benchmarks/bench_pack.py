"""Benchmark: `imgscale pack` against MXNet's own tools/im2rec.py on the same list, cores and settings.

Builds (once, cached in --workdir) a photo-like demo dataset of --images JPEGs (mostly ~500x375, some
over 1000 px), writes one .lst, then in rounds packs it with im2rec.py and with `imgscale pack`
(--resize 480 --quality 90 --num-thread 2 by default), plus `imgscale pack --no-upscale`. Prints
images/s per run, the median of --repeats rounds, the ratios, and the peak memory (summed RSS of
each packer's whole process tree). Not a test: the numbers depend on the machine and its load.
On a shared machine the wall-clock ratio swings with other users' load (the scheduler shares CPU
per runnable thread), so it also prints CPU ms/image (user+system time of the whole process tree
per record), the load-independent measure of how much work each packer does per image.

    python benchmarks/bench_pack.py [--images 3000] [--repeats 3] [--threads 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

IM2REC = pathlib.Path(sys.prefix) / "lib/python3.11/site-packages/mxnet/tools/im2rec.py"
POLL_S = 0.02


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resize", type=int, default=480)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument(
        "--workdir", default=os.path.join(tempfile.gettempdir(), "imgscale-bench-pack")
    )
    parser.add_argument("--skip-noupscale", action="store_true")
    return parser.parse_args()


def build_dataset(workdir: pathlib.Path, images: int, classes: int) -> pathlib.Path:
    """The demo tree, made once per size and reused."""
    from engine.prep.demo import make_demo_tree

    root = workdir / f"images-{images}"
    if (root / ".complete").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    started = time.monotonic()
    per_class = [math.ceil(images / classes)] * classes
    summary = make_demo_tree(root, classes=classes, images_per_class=per_class, seed=1)
    (root / ".complete").write_text(str(summary.images))
    print(
        f"dataset: {summary.images} images, {summary.bytes / 2**20:.0f} MiB in {time.monotonic() - started:.0f} s"
    )
    return root


def describe(root: pathlib.Path, resize: int) -> str:
    import cv2

    shorts = []
    for path in sorted(root.rglob("*.JPEG"))[::10]:
        img = cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_8)
        shorts.append(min(img.shape[:2]) * 8)
    small = sum(s <= resize for s in shorts) / len(shorts)
    big = sum(s >= 2 * resize for s in shorts) / len(shorts)
    return f"short edge <= {resize}: {small:.0%}, >= {2 * resize}: {big:.0%} (sampled)"


def run_measured(argv: list[str], env: dict) -> tuple[float, int, float]:
    """Wall seconds, the peak summed RSS of the process tree, and the CPU seconds of the whole tree."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent, peak = psutil.Process(proc.pid), 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            tree = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(POLL_S)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed with status {proc.returncode}")
    # wait4 counts the packer and every child it waited for: im2rec's and our worker processes
    return seconds, peak, usage.ru_utime + usage.ru_stime


def fresh_dir(workdir: pathlib.Path, name: str, lst: pathlib.Path) -> pathlib.Path:
    out = workdir / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copy(lst, out / "data.lst")
    return out


def count_records(idx: pathlib.Path) -> int:
    return len(idx.read_text().splitlines())


def main() -> None:
    args = parse_args()
    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    root = build_dataset(workdir, args.images, args.classes)
    from engine.prep.lst import write_lists

    (lst,) = write_lists(workdir / "data", root, recursive=True)
    total = len(lst.read_text().splitlines())
    print(
        f"list: {total} images; {describe(root, args.resize)}; {psutil.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", MXNET_CPU_WORKER_NTHREADS="1")
    common = [
        "--resize",
        str(args.resize),
        "--quality",
        str(args.quality),
        "--num-thread",
        str(args.threads),
    ]
    imgscale = [sys.executable, "-m", "engine.cli", "pack"]
    runners = {
        "im2rec": lambda out: [sys.executable, str(IM2REC), str(out / "data"), str(root), *common],
        "imgscale": lambda out: [*imgscale, str(out / "data"), str(root), *common, "--quiet"],
    }
    if not args.skip_noupscale:
        runners["imgscale --no-upscale"] = lambda out: [
            *imgscale,
            str(out / "data"),
            str(root),
            *common,
            "--no-upscale",
            "--quiet",
        ]
    rates: dict[str, list[float]] = {name: [] for name in runners}
    peaks: dict[str, int] = {name: 0 for name in runners}
    cpu_ms: dict[str, list[float]] = {name: [] for name in runners}
    for round_no in range(args.repeats):
        for name, argv in runners.items():  # interleaved, so load changes hit every packer alike
            out = fresh_dir(workdir, name.replace(" ", "_"), lst)
            seconds, peak, cpu = run_measured(argv(out), env)
            records = count_records(out / "data.idx")
            rates[name].append(records / seconds)
            cpu_ms[name].append(cpu / records * 1000)
            peaks[name] = max(peaks[name], peak)
            print(
                f"round {round_no + 1}  {name:<22} {records} records  {seconds:6.1f} s  "
                f"{records / seconds:7.1f} images/s  {cpu / records * 1000:5.2f} CPU ms/image  "
                f"peak RSS {peak / 2**20:6.0f} MiB  load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    median = {name: statistics.median(r) for name, r in rates.items()}
    print(
        f"\nmedian of {args.repeats}, --resize {args.resize} --quality {args.quality} --num-thread {args.threads}:"
    )
    for name, rate in median.items():
        ratio = rate / median["im2rec"]
        cpu = statistics.median(cpu_ms[name])
        paired = statistics.median(r / base for r, base in zip(rates[name], rates["im2rec"]))
        print(
            f"  {name:<22} {rate:7.1f} images/s  {ratio:4.2f}x im2rec (per-round median {paired:4.2f}x)  {cpu:5.2f} CPU ms/image "
            f"({statistics.median(cpu_ms['im2rec']) / cpu:4.2f}x less)  peak RSS {peaks[name] / 2**20:.0f} MiB"
        )
    print("goals: imgscale >= 1.50x, --no-upscale >= 4.00x, imgscale peak < 1024 MiB")


if __name__ == "__main__":
    main()
