"""Benchmark: `imgscale pack` against MXNet's own tools/im2rec.py on the same list, cores and settings.

Builds (once, cached in --workdir) a photo-like demo dataset of --images JPEGs (mostly ~500x375, some
over 1000 px), writes one .lst, then in rounds packs it with im2rec.py and with `imgscale pack`
(--resize 480 --quality 90 --num-thread 2 by default): the default path (libjpeg-turbo YUV planes)
and every switch (--no-upscale, --codec opencv, --no-reduced-decode: im2rec's exact bytes), runs
alternating within each round. Prints images/s per run, the median of --repeats rounds, the ratios,
and the peak memory (summed RSS of each packer's whole process tree, sampled in one more run per
packer after the timed rounds: sampling every 20 ms costs CPU and wakes late, which on 2 cores
slowed the fastest packer by up to 8%); then one run at --num-thread 16 for memory, with PSS beside
RSS (summed RSS counts each shared library once per process). Not a test: the numbers depend on
the machine and its load.
On a shared machine the wall-clock ratio swings with other users' load (the scheduler shares CPU
per runnable thread), so it also prints CPU ms/image (user+system time of the whole process tree
per record), the load-independent measure of how much work each packer does per image.

    python benchmarks/bench_pack.py [--images 3000] [--repeats 3] [--threads 2] [--memory-threads 16]
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
SWITCHES = ("", "--no-upscale", "--codec opencv", "--no-reduced-decode")
GOALS = {"imgscale": 1.5, "imgscale --no-upscale": 4.0}


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
    parser.add_argument("--memory-threads", type=int, default=16, help="0: no memory run")
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


def tree_memory(parent: psutil.Process, pss: bool) -> int:
    """Summed RSS (or PSS: shared pages split between their users) of a process and its children."""
    tree = [parent, *parent.children(recursive=True)]
    if pss:
        return sum(p.memory_full_info().pss for p in tree if p.is_running())
    return sum(p.memory_info().rss for p in tree if p.is_running())


def run_timed(argv: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and the process tree's CPU seconds; nothing else runs meanwhile."""
    # The previous run's output still being written out would slow this one: im2rec leaves its
    # records to the kernel's flusher, imgscale makes its own durable before it exits.
    os.sync()
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    _check_exit(argv, status)
    # wait4 counts the packer and every child it waited for: im2rec's and our worker processes
    return seconds, usage.ru_utime + usage.ru_stime


def _check_exit(argv: list[str], status: int) -> None:
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed with status {code}")


def run_sampled(argv: list[str], env: dict, pss: bool = False) -> int:
    """The peak summed RSS (or PSS) of the process tree, sampled every POLL_S (not a timed run)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent, peak = psutil.Process(proc.pid), 0
    while True:
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            peak = max(peak, tree_memory(parent, pss))
        except psutil.Error:
            pass
        time.sleep(POLL_S)
    _check_exit(argv, status)
    return peak


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
        "im2rec": lambda out: [sys.executable, str(IM2REC), str(out / "data"), str(root), *common]
    }
    for switch in SWITCHES:
        runners[f"imgscale {switch}".strip()] = lambda out, switch=switch: [
            *imgscale,
            str(out / "data"),
            str(root),
            *common,
            *switch.split(),
            "--quiet",
        ]
    rates: dict[str, list[float]] = {name: [] for name in runners}
    peaks: dict[str, int] = {name: 0 for name in runners}
    cpu_ms: dict[str, list[float]] = {name: [] for name in runners}
    for round_no in range(args.repeats):
        for name, argv in runners.items():  # interleaved, so load changes hit every packer alike
            out = fresh_dir(workdir, name.replace(" ", "_"), lst)
            seconds, cpu = run_timed(argv(out), env)
            records = count_records(out / "data.idx")
            rates[name].append(records / seconds)
            cpu_ms[name].append(cpu / records * 1000)
            print(
                f"round {round_no + 1}  {name:<28} {records} records  {seconds:6.2f} s  "
                f"{records / seconds:7.1f} images/s  {cpu / records * 1000:5.2f} CPU ms/image  "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    for name, argv in runners.items():
        peaks[name] = run_sampled(argv(fresh_dir(workdir, name.replace(" ", "_"), lst)), env)
    median = {name: statistics.median(r) for name, r in rates.items()}
    print(
        f"\nmedian of {args.repeats}, --resize {args.resize} --quality {args.quality} --num-thread {args.threads}:"
    )
    for name, rate in median.items():
        ratio = rate / median["im2rec"]
        cpu = statistics.median(cpu_ms[name])
        paired = statistics.median(r / base for r, base in zip(rates[name], rates["im2rec"]))
        print(
            f"  {name:<28} {rate:7.1f} images/s  {ratio:4.2f}x im2rec (per-round median {paired:4.2f}x)  {cpu:5.2f} CPU ms/image "
            f"({statistics.median(cpu_ms['im2rec']) / cpu:4.2f}x less)  peak RSS {peaks[name] / 2**20:.0f} MiB"
            + (
                f"  goal {GOALS[name]:.2f}x: {'met' if ratio >= GOALS[name] else 'MISSED'}"
                if name in GOALS
                else ""
            )
        )
    print(
        "goals: "
        + ", ".join(f"{name} >= {goal:.2f}x" for name, goal in GOALS.items())
        + f"; load average now {' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    if args.memory_threads:
        memory_run(workdir, lst, root, common, args.memory_threads, env)


def memory_run(workdir, lst, root, common: list[str], threads: int, env: dict) -> None:
    """One default run at --num-thread THREADS: the peak memory of the whole tree, RSS and PSS.

    Above pack's own cap (engine.options.PROCESS_CAP) it measures at the cap.
    """
    from engine.options import PROCESS_CAP

    if threads > PROCESS_CAP:
        print(
            f"memory run: --num-thread {threads} is over this machine's cap; measuring at {PROCESS_CAP}"
        )
        threads = PROCESS_CAP
    argv = [*common[:-1], str(threads)]
    out = fresh_dir(workdir, "memory", lst)
    pack = [
        sys.executable,
        "-m",
        "engine.cli",
        "pack",
        str(out / "data"),
        str(root),
        *argv,
        "--quiet",
    ]
    rss = run_sampled(pack, env)
    out = fresh_dir(workdir, "memory", lst)
    pss = run_sampled(pack, env, pss=True)
    print(
        f"memory at --num-thread {threads}: peak PSS {pss / 2**20:.0f} MiB (goal < 1024), "
        f"summed RSS {rss / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    main()
