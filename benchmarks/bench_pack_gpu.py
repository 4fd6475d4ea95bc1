"""Benchmark: `pack --device cuda` (torchvision nvJPEG) against the CPU path at 16 processes, same images.

For a GPU machine; runs from a plain checkout with only torch, torchvision, numpy and opencv installed
(nothing of imgscale needs installing: the checkout goes on sys.path and PYTHONPATH). It writes
--unique photo-like demo JPEGs, one .lst that names them --repeat times (the same bytes, other ids),
then packs that list with `pack_lists` on the CPU (--cpu-processes worker processes) and on the GPU,
--rounds times each, alternating. Prints images/s per run, the medians, the GPU/CPU ratio against
the goal, and checks both outputs hold the same record ids in the same order.

    python benchmarks/bench_pack_gpu.py [--unique 2000] [--repeat 8] [--cpu-processes 16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
GOAL = 3.0

from engine.errors import UserError  # noqa: E402 - after the checkout is on sys.path
from engine.prep import pack, turbojpeg  # noqa: E402
from engine.prep.demo import make_demo_tree  # noqa: E402
from engine.prep.pack import PackOptions  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unique", type=int, default=2000, help="distinct demo images to write")
    parser.add_argument("--repeat", type=int, default=8, help="times the list names each image")
    parser.add_argument("--cpu-processes", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--resize", type=int, default=480)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "bench-pack-gpu"))
    return parser.parse_args()


def dataset(workdir: pathlib.Path, unique: int, repeat: int) -> tuple[pathlib.Path, pathlib.Path]:
    """The image tree (made once) and a .lst naming every image REPEAT times, shuffled the same way."""
    root = workdir / f"images-{unique}"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        started = time.monotonic()
        classes = 20
        make_demo_tree(
            root, classes=classes, images_per_class=[-(-unique // classes)] * classes, seed=1
        )
        (root / ".complete").write_text("ok")
        print(f"dataset: {unique} images in {time.monotonic() - started:.0f} s", flush=True)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.JPEG"))
    lines = [
        f"{n * len(files) + i}\t{i % 20}.000000\t{name}\n"
        for n in range(repeat)
        for i, name in enumerate(files)
    ]
    lst = workdir / "data.lst"
    lst.write_text("".join(lines))
    return root, lst


def run(workdir: pathlib.Path, name: str, lst: pathlib.Path, root, options: PackOptions):
    """One packing run into a fresh folder: (images/s, record ids in order, skipped)."""
    out = workdir / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copy(lst, out / "data.lst")
    notes = []
    started = time.monotonic()
    result = pack.pack_lists([out / "data.lst"], root, options, on_event=notes.append)
    seconds = time.monotonic() - started
    ids = [line.split("\t")[0] for line in (out / "data.idx").read_text().splitlines()]
    codec_notes = {getattr(e, "message", "") for e in notes if "libturbojpeg" in str(e)}
    return result.records / seconds, ids, result.skipped, seconds, codec_notes


def main() -> None:
    args = parse_args()
    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    root, lst = dataset(workdir, args.unique, args.repeat)
    common = {"resize": args.resize, "quality": args.quality}
    paths = {
        f"cpu x{args.cpu_processes}": PackOptions(**common, num_thread=args.cpu_processes),
        f"gpu {args.device}": PackOptions(**common, num_thread=1, device=args.device),
    }
    print(
        f"list: {args.unique * args.repeat} entries ({args.unique} distinct images); "
        f"{os.cpu_count()} CPUs; --resize {args.resize} --quality {args.quality}; CPU codec: "
        + ("libjpeg-turbo YUV planes" if turbojpeg.load() else "OpenCV (no libturbojpeg here)"),
        flush=True,
    )
    try:
        run(workdir, "warm-up", lst, root, paths[f"gpu {args.device}"])  # CUDA, nvJPEG start-up
    except UserError as exc:
        raise SystemExit(f"bench_pack_gpu: {exc}") from None
    rates: dict[str, list[float]] = {name: [] for name in paths}
    ids: dict[str, list[str]] = {}
    for round_no in range(args.rounds):
        for name, options in paths.items():
            rate, order, skipped, seconds, notes = run(workdir, name.split()[0], lst, root, options)
            rates[name].append(rate)
            ids[name] = order
            print(
                f"round {round_no + 1}  {name:<10} {len(order)} records  {skipped} skipped  "
                f"{seconds:6.1f} s  {rate:8.1f} images/s  {'; '.join(sorted(notes))}",
                flush=True,
            )
    cpu, gpu = (statistics.median(r) for r in rates.values())
    same = len({tuple(v) for v in ids.values()}) == 1
    print(f"\nmedian of {args.rounds}: cpu {cpu:.1f} images/s, gpu {gpu:.1f} images/s")
    print(
        f"gpu / cpu = {gpu / cpu:.2f}x (goal >= {GOAL:.1f}x: {'met' if gpu / cpu >= GOAL else 'MISSED'}); "
        f"same record ids in the same order: {same}"
    )


if __name__ == "__main__":
    main()
