"""kvstore push/pull bandwidth: a worker that pushes a network's gradients and pulls its weights, and its summary.

The worker side (``python -m engine.bench.bandwidth …``) runs as an MXNet worker under our launcher
(DMLC_* set by it), or alone for the ``local``/``device`` kvstores. Like MXNet's
tools/bandwidth/measure.py it creates the kvstore, initialises one key per parameter array of the
network, then times rounds of push-all + pull-all, the first round being warm-up. Every worker
pushes ones from every device, so each pulled value must equal workers × devices: a round that
moves the wrong numbers reports a non-zero error instead of a fast time.

Each round prints one machine-readable line, parsed here on the console side::

    imgscale-bandwidth iter=3 seconds=0.0213 bytes=46751416 gbytes_per_s=4.39 error=0

``gbytes_per_s`` is the bytes one worker moves per round (its push plus its pull: 2 × model bytes)
over the round's time; for ``local``/``device`` it is measure.py's per-device figure,
2 × bytes × (d − 1) / d over the time. The ``describe`` mode prints a network's parameter count
and largest array (what the scaling model needs) without creating a kvstore.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any  # mxnet kvstore and NDArrays: mxnet is imported lazily, no type hints

from engine import options as opt
from engine.train.launch.engines import is_distributed
from engine.train.options import CLUSTER, KV_STORES, TrainOptions

PREFIX = "imgscale-bandwidth"
LINE = re.compile(rf"^{PREFIX}\s+(?P<fields>(?:\w+=\S+\s*)+)$")


# --- the console side: parse and summarise (light, no mxnet) ----------------------------------


def parse_line(text: str) -> dict[str, float] | None:
    """The fields of one worker line (``iter=…`` or ``arrays=…``), or None for any other line."""
    match = LINE.match(text.strip())
    if not match:
        return None
    fields: dict[str, float] = {}
    for word in match.group("fields").split():
        key, _, value = word.partition("=")
        try:
            fields[key] = float(value)
        except ValueError:
            continue  # a text field (kv_store=…) carries no number
    return fields


@dataclass(frozen=True)
class BandwidthResult:
    """What a bandwidth run found: the median round time and bandwidth over workers and rounds."""

    kv_store: str
    workers: int
    devices_per_worker: int
    arrays: int
    model_bytes: int
    rounds: int  # timed rounds per worker (warm-up excluded)
    seconds: float  # median time of one push-all + pull-all round
    gbytes_per_s: float  # median over rounds and workers
    per_worker: tuple[float, ...]  # median GB/s of each worker, by rank
    max_error: float


def summarize(
    lines: Iterable[tuple[int, str]], kv_store: str, devices_per_worker: int = 1
) -> BandwidthResult:
    """Summarise (rank, text) worker lines; raises ValueError when no timed round came back."""
    rounds: dict[int, list[dict[str, float]]] = {}
    header: dict[str, float] = {}
    for rank, text in lines:
        fields = parse_line(text)
        if fields is None:
            continue
        if "iter" in fields:
            rounds.setdefault(rank, []).append(fields)
        else:
            header = header or fields
    timed = [r for rs in rounds.values() for r in rs]
    if not timed:
        raise ValueError("no timed push/pull round was reported by any worker")
    per_worker = tuple(
        statistics.median(r["gbytes_per_s"] for r in rounds[rank]) for rank in sorted(rounds)
    )
    return BandwidthResult(
        kv_store=kv_store,
        workers=len(rounds),
        devices_per_worker=devices_per_worker,
        arrays=int(header.get("arrays", 0)),
        model_bytes=int(timed[0].get("bytes", header.get("bytes", 0))),
        rounds=min(len(rs) for rs in rounds.values()),
        seconds=statistics.median(r["seconds"] for r in timed),
        gbytes_per_s=statistics.median(r["gbytes_per_s"] for r in timed),
        per_worker=per_worker,
        max_error=max(r.get("error", 0.0) for r in timed),
    )


def format_result(r: BandwidthResult) -> str:
    return (
        f"kvstore {r.kv_store}: {r.workers} worker(s) × {r.devices_per_worker} device(s), "
        f"{r.arrays} arrays, {r.model_bytes / 1e6:.1f} MB; push+pull {1000 * r.seconds:.1f} ms "
        f"per round, {r.gbytes_per_s:.3f} GB/s per worker (median of {r.rounds} rounds)"
        + (f"; ERROR {r.max_error:.3g} (values pulled do not match)" if r.max_error > 1e-6 else "")
    )


def network_gbits_from(result: BandwidthResult) -> float:
    """The line rate (Gbit/s) a worker's push+pull round implies: bytes each way over the round time.

    A worker sends M and receives M per round on a full-duplex link, so one direction carries
    M bytes in ``seconds``; that is what the scaling model calls the usable network bandwidth.
    """
    return result.model_bytes * 8 / result.seconds / 1e9


@dataclass(frozen=True)
class WorkerOptions:
    """What a bandwidth worker moves and how often: the flags of `imgscale bench bandwidth` and of
    the worker it starts (``worker_argv`` carries them from one to the other)."""

    network: str = opt.option("resnet-50", "whose parameter arrays to move (resnet-50, alexnet …)")
    image_shape: str = opt.option("3,224,224", "the network's input shape C,H,W")
    num_classes: int = opt.option(1000, "the network's number of classes", low=1)
    size_mb: float = opt.option(0.0, "move N MB of equal arrays instead of a network", low=0)
    kv_store: str = opt.option(  # the training option's list, help and the cluster's default
        CLUSTER.kv_store, opt.spec_of(TrainOptions, "kv_store").help, choices=KV_STORES
    )
    gpus: str = opt.option("", "GPU ids per worker, e.g. 0,1,2,3")
    devices: int = opt.option(1, "CPU devices per worker (when no --gpus)", low=1)
    rounds: int = opt.option(5, "timed push+pull rounds (after one warm-up)", low=1)

    def __post_init__(self) -> None:
        opt.check(self)

    @property
    def devices_per_worker(self) -> int:
        return len(self.gpus.split(",")) if self.gpus else self.devices


def worker_argv(python: str, options: WorkerOptions, mode: str = "run") -> list[str]:
    """The command of a bandwidth worker (under the launcher for dist kvstores), or of ``describe``."""
    return [python, "-m", "engine.bench.bandwidth", mode, *opt.to_argv(options)]


def measure(
    options: WorkerOptions,
    *,
    workers: int = 1,
    servers: int | None = None,
    hosts_file: str | None = None,
    timeout_s: float = 600.0,
) -> BandwidthResult:
    """Run the bandwidth workers (a distributed job for dist kvstores, one process otherwise)."""
    argv = worker_argv(sys.executable, options)
    if is_distributed(options.kv_store):
        import asyncio

        lines = asyncio.run(
            _dist_lines(argv, workers, servers, hosts_file, options.rounds, timeout_s)
        )
    else:
        lines = _local_lines(argv, timeout_s)
    try:
        return summarize(lines, options.kv_store, options.devices_per_worker)
    except ValueError as exc:
        from engine.errors import UserError

        raise UserError(f"{exc}; run with a smaller --network or check the job's log") from None


def _local_lines(argv: list[str], timeout_s: float) -> list[tuple[int, str]]:
    import subprocess

    from engine.errors import UserError

    try:
        out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise UserError(f"no result within {timeout_s:.0f} s (--timeout)") from None
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"the worker exited with status {out.returncode}: {tail[0]}")
    return [(0, line) for line in out.stdout.splitlines()]


async def _dist_lines(
    argv: list[str],
    workers: int,
    servers: int | None,
    hosts_file: str | None,
    rounds: int,
    timeout_s: float,
) -> list[tuple[int, str]]:
    """Worker lines of a bandwidth job, until every worker has reported its rounds (or the job ends)."""
    from engine.bench.scaling import job_events
    from engine.events import LogLine

    lines: list[tuple[int, str]] = []
    done: dict[int, int] = {}
    events = job_events(argv, workers, servers, hosts_file, {}, "bandwidth", timeout_s)
    try:
        async for event in events:
            if isinstance(event, LogLine) and event.role == "worker" and parse_line(event.text):
                rank = event.rank or 0
                lines.append((rank, event.text))
                done[rank] = done.get(rank, 0) + ("iter=" in event.text)
                if len(done) >= workers and min(done.values()) >= rounds:
                    break
    finally:
        await events.aclose()  # stops the job everywhere; what came back is summarised
    return lines


# --- the worker side (imports mxnet) -----------------------------------------------------------


def array_shapes(
    network: str, image_shape: Sequence[int], num_classes: int
) -> list[tuple[int, ...]]:
    """Shapes of the network's parameter arrays (weights, biases, BN gamma/beta): one kvstore key each."""
    from engine.bench.scaling import split_network
    from engine.train.mxnet.networks import get_symbol

    base, depth = split_network(network)
    symbol = get_symbol(base, num_classes, depth or 50, tuple(image_shape))
    shapes, _, _ = symbol.infer_shape(data=(1, *image_shape))
    names = symbol.list_arguments()
    return [tuple(s) for n, s in zip(names, shapes) if n not in ("data", "softmax_label")]


def synthetic_shapes(size_mb: float, arrays: int = 16) -> list[tuple[int, ...]]:
    """Equal float32 arrays adding up to ``size_mb`` (when no network is wanted)."""
    per = max(1, int(size_mb * 1e6 / 4 / arrays))
    return [(per,)] * arrays


def describe(shapes: Sequence[tuple[int, ...]]) -> dict[str, int]:
    sizes = [_count(s) for s in shapes]
    return {"arrays": len(sizes), "params": sum(sizes), "largest_array": max(sizes, default=0)}


def _count(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _contexts(mx: ModuleType, options: WorkerOptions) -> list:
    if options.gpus:
        return [mx.gpu(int(i)) for i in options.gpus.split(",")]
    return [mx.cpu(i) for i in range(options.devices)]


def _one_round(kv: Any, grads: list[list[Any]], weights: list[list[Any]]) -> float:
    tic = time.perf_counter()
    for key, g in enumerate(grads):
        kv.push(key, g, priority=-key)
    for key, w in enumerate(weights):
        kv.pull(key, w, priority=-key)
    for ws in weights:
        for w in ws:
            w.wait_to_read()
    return time.perf_counter() - tic


def _error(weights: list[list[Any]], expected: float) -> float:
    """Largest relative difference between what was pulled and workers × devices."""
    worst = 0.0
    for ws in weights:
        for w in ws:
            worst = max(worst, float((w - expected).abs().max().asscalar()) / expected)
    return worst


def run_worker(options: WorkerOptions) -> int:
    import mxnet as mx

    shapes = synthetic_shapes(options.size_mb) if options.size_mb else network_shapes(options)
    devs = _contexts(mx, options)
    kv = mx.kv.create(options.kv_store)
    total = sum(_count(s) for s in shapes) * 4
    print(
        f"{PREFIX} arrays={len(shapes)} bytes={total} devices={len(devs)} workers={kv.num_workers} "
        f"rank={kv.rank} kv_store={options.kv_store}",
        flush=True,
    )
    for key, shape in enumerate(shapes):
        kv.init(key, mx.nd.zeros(shape))
    grads = [[mx.nd.ones(s, ctx=d) for d in devs] for s in shapes]
    weights = [[mx.nd.zeros(s, ctx=d) for d in devs] for s in shapes]
    expected = float(kv.num_workers * len(devs))
    for i in range(
        options.rounds + 1
    ):  # round 0 warms up (allocations, connections) and is not reported
        seconds = _one_round(kv, grads, weights)
        if i > 0:
            print(
                f"{PREFIX} iter={i} seconds={seconds:.6f} bytes={total} "
                f"gbytes_per_s={_gbytes_per_s(options.kv_store, total, len(devs), seconds):.4f} "
                f"error={_error(weights, expected):.3g}",
                flush=True,
            )
        _refill(grads)
    return 0


def _refill(grads: list[list[Any]]) -> None:
    """Set the gradients back to ones between rounds (untimed).

    With one CPU device the dist kvstore reduces in place and pulls through the same buffer, so the
    pushed array ends a round holding the pulled sum; without this the next round would push that.
    """
    for gs in grads:
        for g in gs:
            g[:] = 1
        gs[0].wait_to_read()


def _gbytes_per_s(kv_store: str, total: int, devices: int, seconds: float) -> float:
    if is_distributed(kv_store):
        return 2 * total / seconds / 1e9
    return (
        2 * total * (devices - 1) / max(devices, 1) / seconds / 1e9
    )  # measure.py's per-device figure


def network_shapes(options: WorkerOptions) -> list[tuple[int, ...]]:
    shape = [int(x) for x in options.image_shape.split(",")]
    return array_shapes(options.network, shape, options.num_classes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.bench.bandwidth")
    parser.add_argument("mode", choices=("run", "describe"))
    opt.add_arguments(parser, WorkerOptions)
    args = parser.parse_args(argv)
    options = opt.from_args(WorkerOptions, args)
    if args.mode == "describe":
        print(json.dumps(describe(network_shapes(options))))
        return 0
    return run_worker(options)


if __name__ == "__main__":
    sys.exit(main())
