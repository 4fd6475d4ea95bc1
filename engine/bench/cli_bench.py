"""`imgscale bench …`: scaling sweeps, kvstore bandwidth, and the scaling model against the published table."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from engine import options as opt
from engine.bench import bandwidth, model, published, report, scaling
from engine.bench.scaling import DEFAULT_NETWORKS, KNOWN_BASES, check_depth, split_network
from engine.bench.sweep import run_sweep
from engine.cli_progress import CliProgress
from engine.cluster.hosts import read_hosts
from engine.errors import UserError
from engine.events import Event, Failure, LogLine, ScalingPoint, StageProgress, StageState
from engine.paths import require_folder_path
from engine.train.launch.engines import is_distributed
from engine.train.mxnet import require_mxnet
from engine.train.options import CLUSTER, TrainOptions, gpu_list, image_shape

SCALING_HELP = (
    "images/s against the number of GPUs (workers): the tutorial's table, CSV, JSON and plot"
)
BANDWIDTH_HELP = (
    "kvstore push/pull bandwidth with a network's arrays (as MXNet's tools/bandwidth/measure.py)"
)
MODEL_HELP = (
    "the scaling model: predicted against the tutorial's published table, or for your cluster"
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `bench scaling|bandwidth|model` to the `imgscale` parser."""
    bench = sub.add_parser(
        "bench", help="benchmarks: scaling sweep, kvstore bandwidth, scaling model"
    )
    inner = bench.add_subparsers(dest="bench_command", metavar="BENCH")
    bench.set_defaults(func=lambda args: _help(bench))
    _add_scaling(inner.add_parser("scaling", help=SCALING_HELP, description=SCALING_HELP))
    _add_bandwidth(inner.add_parser("bandwidth", help=BANDWIDTH_HELP, description=BANDWIDTH_HELP))
    _add_model(inner.add_parser("model", help=MODEL_HELP, description=MODEL_HELP))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# --- bench scaling ---------------------------------------------------------------------------


def _add_scaling(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--networks",
        default=DEFAULT_NETWORKS,
        help=f"network:batch-per-GPU list (default {DEFAULT_NETWORKS})",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--workers", help="worker counts, e.g. 1,2,4,8 (CPU or one device each)")
    size.add_argument("--gpus", help="GPU counts, e.g. 1,2,4,…,256 (with --gpus-per-host)")
    p.add_argument(
        "--gpus-per-host",
        type=int,
        default=0,
        help="GPUs each worker drives (one worker per host, as the tutorial)",
    )
    p.add_argument("-H", "--hosts", default=None, help="hosts file (default: all on this machine)")
    opt.add_arguments(p, TrainOptions, only=("kv_store",), base=CLUSTER)
    p.add_argument(
        "-s", "--servers", type=int, default=None, help="servers per run (default: = workers)"
    )
    p.add_argument("--warmup", type=int, default=2, help="Speedometer readings dropped per worker")
    p.add_argument("--readings", type=int, default=3, help="readings kept per worker (median)")
    p.add_argument("--disp-batches", type=int, default=5, help="batches per Speedometer reading")
    p.add_argument(
        "--image-shape", default=None, help="C,H,W (default 3,224,224; 3,299,299 for Inception)"
    )
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument(
        "--command",
        default=None,
        help="worker command template instead of `imgscale train --benchmark`; "
        "placeholders {python} {network} {num_layers} {batch_size} {gpus} {kv_store} "
        "{disp_batches} {num_batches} {image_shape} {num_classes} {name}",
    )
    p.add_argument(
        "--env", action="append", default=[], metavar="K=V", help="environment for every process"
    )
    p.add_argument(
        "--run-timeout", type=float, default=900.0, help="seconds per run before giving up"
    )
    p.add_argument(
        "--network-gbits",
        type=float,
        default=None,
        help="network bandwidth for the model column (e.g. from `imgscale bench bandwidth`)",
    )
    p.add_argument("--out", default=None, help="output directory (default ./bench-scaling-TIME)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every worker log line")
    p.set_defaults(func=_scaling)


def scaling_config(args: argparse.Namespace) -> scaling.SweepConfig:
    """The SweepConfig an `imgscale bench scaling` command line describes."""
    return scaling.sweep_config(
        args.networks,
        workers=args.workers or "",
        gpus=args.gpus or "",
        gpus_per_host=args.gpus_per_host,
        hosts_file=args.hosts,
        kv_store=args.kv_store,
        servers=args.servers,
        warmup=args.warmup,
        readings=args.readings,
        disp_batches=args.disp_batches,
        image_shape=args.image_shape,
        num_classes=args.num_classes,
        command=args.command,
        env=tuple(_env(args.env)),
        run_timeout_s=args.run_timeout,
        out_dir=Path(args.out or time.strftime("bench-scaling-%Y%m%d-%H%M%S")),
    )


def _env(items: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UserError(f"--env {item!r}: write NAME=value")
        pairs.append((key, value))
    return pairs


def _check_scaling_args(args: argparse.Namespace) -> None:
    """Mistakes that would otherwise show up only after the first run is launched (or never)."""
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a file; give a folder for the reports")
    if args.out:
        require_folder_path(args.out, "--out")
    if args.run_timeout is not None and not args.run_timeout > 0:
        raise UserError(f"--run-timeout {args.run_timeout}: give seconds above 0")
    _check_shape(args.image_shape, image_shape)
    if args.num_classes < 1:
        raise UserError(f"--num-classes {args.num_classes}: give 1 or more")
    if args.hosts:  # a bad hosts file is reported before the first run starts
        read_hosts(args.hosts)


def _check_shape(text: str | None, parse: Callable[[str], object]) -> None:
    if text is None:
        return
    try:
        parse(text)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise UserError(f"--image-shape {text}: {exc}") from None


def _scaling(args: argparse.Namespace) -> int:
    _check_scaling_args(args)
    config = scaling_config(args)
    # after the flags: a mistake in them is the first thing to say, wherever this runs
    require_mxnet("imgscale bench scaling (its workers train with MXNet)", "")
    result = run_sweep(config, SweepPrinter(verbose=args.verbose), args.network_gbits)
    points = result.points
    print(report.format_report(points, f"Scaling, kv-store {config.kv_store}, synthetic data"))
    print()
    print(report.speedup_plot(report.speedup_series(points)).text)
    print()
    print(time_breakdown(config, points))
    for kind, path in result.files.items():
        print(f"{kind}: {path}")
    if "png" not in result.files:
        print(report.PLOT_MISSING)
    return 0 if any(p.images_per_sec for p in points) else 1


class SweepPrinter:
    """The CLI's sink for sweep events: progress, each measured cell, failures (and logs with -v)."""

    def __init__(self, verbose: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self.progress = CliProgress(self.stream)

    def __call__(self, event: Event) -> None:
        if isinstance(event, StageProgress):
            self._line(f"[{event.done}/{event.total}] {event.part}: {event.message}")
        elif isinstance(event, ScalingPoint):
            self._line(_point_line(event))
        elif isinstance(event, (StageState, Failure)):
            self.progress(event)
        elif self.verbose and isinstance(event, LogLine):
            rank = "" if event.rank is None else f" {event.rank}"
            self._line(f"{event.host} {event.role}{rank}: {event.text}")

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def _point_line(p: ScalingPoint) -> str:
    if p.images_per_sec is None:
        return f"  {p.network} on {p.gpus}: no figure - {p.message}"
    extra = (
        ""
        if p.speedup is None
        else f", speedup {p.speedup:.2f} of ideal {p.gpus} ({p.efficiency:.0%})"
    )
    return f"  {p.network} on {p.gpus}: {p.images_per_sec:,.1f} images/s{extra}"


def time_breakdown(config: scaling.SweepConfig, points: Sequence[ScalingPoint]) -> str:
    """Where the time goes: compute per batch (smallest run) and the rest at each size."""
    lines = ["Where the time goes (per batch, per device):"]
    for name in dict.fromkeys(p.network for p in points):
        # Any: only points with a figure are kept, which mypy cannot see through the filter
        mine: list[Any] = sorted(
            (p for p in points if p.network == name and p.images_per_sec), key=lambda p: p.gpus
        )
        if not mine:
            continue
        batch = mine[0].batch_per_gpu
        compute = batch / (mine[0].images_per_sec / mine[0].gpus)
        for p in mine:
            step = batch / (p.images_per_sec / p.gpus)
            lines.append(
                f"  {name} on {p.gpus}: {1000 * step:.1f} ms = compute {1000 * compute:.1f} ms "
                f"+ communication/waiting {1000 * max(0.0, step - compute):.1f} ms"
            )
    return "\n".join(lines)


# --- bench bandwidth ------------------------------------------------------------------------


def _add_bandwidth(p: argparse.ArgumentParser) -> None:
    opt.add_arguments(p, bandwidth.WorkerOptions)
    p.add_argument("-n", "--workers", type=int, default=2, help="workers (dist kvstores)")
    p.add_argument("-s", "--servers", type=int, default=None, help="servers (default: = workers)")
    p.add_argument("-H", "--hosts", default=None, help="hosts file (default: all on this machine)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before giving up")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_bandwidth)


def _bandwidth(args: argparse.Namespace) -> int:
    options = opt.from_args(bandwidth.WorkerOptions, args)
    _check_bandwidth_args(options, args)
    require_mxnet("imgscale bench bandwidth (an MXNet kvstore benchmark)", "")
    result = bandwidth.measure(
        options,
        workers=args.workers,
        servers=args.servers,
        hosts_file=args.hosts,
        timeout_s=args.timeout,
    )
    if args.json:
        print(json.dumps(dataclasses.asdict(result), indent=2))
    else:
        print(bandwidth.format_result(result))
        if is_distributed(options.kv_store):
            print(
                f"implied usable network bandwidth: {bandwidth.network_gbits_from(result):.2f} Gbit/s "
                "per direction (use with --network-gbits)"
            )
    return 0 if result.max_error <= 1e-6 else 1


def _check_bandwidth_args(options: bandwidth.WorkerOptions, args: argparse.Namespace) -> None:
    """Flags the worker would choke on, named here instead of as 'no timed round was reported'."""
    if not options.size_mb and split_network(options.network)[0] not in KNOWN_BASES:
        raise UserError(
            f"--network {options.network}: unknown network; use resnet-18…resnet-152, alexnet, "
            "inception-v3, vgg-16 or mobilenet (or --size-mb N)"
        )
    if not options.size_mb:
        check_depth(options.network, f"--network {options.network}")
    _check_shape(options.image_shape, image_shape)
    try:
        gpu_list(options.gpus)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise UserError(f"--gpus {options.gpus}: {exc}") from None
    if args.servers is not None and args.servers < 0:
        raise UserError(f"-s {args.servers}: give 0 or more servers")
    if not args.timeout > 0:
        raise UserError(f"--timeout {args.timeout}: give seconds above 0")


# --- bench model ----------------------------------------------------------------------------


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--network",
        default=None,
        help="predict this network (alexnet, inception-v3, resnet-152 …); default: the published table",
    )
    p.add_argument("--batch-per-gpu", type=int, default=32)
    p.add_argument(
        "--images-per-sec-1gpu", type=float, default=None, help="measured images/s on one GPU"
    )
    p.add_argument(
        "--params", type=float, default=None, help="parameters (default: known for the network)"
    )
    p.add_argument(
        "--largest-array", type=float, default=None, help="parameters in the largest array"
    )
    p.add_argument("--gpus", default="1,2,4,8,16,32,64,128,256", help="GPU counts to predict")
    p.add_argument("--gpus-per-machine", type=int, default=16)
    p.add_argument(
        "--servers", type=int, default=None, help="servers in all (default: one per machine)"
    )
    p.add_argument(
        "--link-gbytes", type=float, default=6.0, help="PCIe GB/s per GPU for the device reduce"
    )
    p.add_argument("--network-gbits", type=float, default=20.0, help="Ethernet line rate, Gbit/s")
    p.add_argument(
        "--overlap", type=float, default=0.0, help="share of compute that hides network time"
    )
    p.set_defaults(func=_model)


def _model(args: argparse.Namespace) -> int:
    if args.network is None:
        rows = model.compare_published()
        worst = max(abs(r.error_points) for r in rows)
        print(report.format_comparison(rows, f"Scaling model against {published.SOURCE}:"))
        print(
            f"calibrated on the 1-GPU row only; largest efficiency error {worst:.1f} points "
            f"({published.MACHINES} machines × {published.GPUS_PER_MACHINE} {published.GPU}, "
            f"{published.NETWORK_GBITS_S:g} Gbps)"
        )
        return 0
    print(_prediction_table(args))
    return 0


def _prediction_table(args: argparse.Namespace) -> str:
    facts = model.KNOWN_NETWORKS.get(args.network)
    if args.params:
        facts = model.NetworkFacts(args.network, args.params, args.largest_array or args.params)
    if facts is None:
        known = ", ".join(model.KNOWN_NETWORKS)
        raise UserError(
            f"--network {args.network}: give --params and --largest-array (known: {known})"
        )
    if not args.images_per_sec_1gpu:
        raise UserError(
            "--images-per-sec-1gpu: give the measured images/s of one GPU (the compute time)"
        )
    _check_model_numbers(args)
    cluster = model.Cluster(
        gpus_per_machine=args.gpus_per_machine,
        servers=args.servers,
        link_gbytes_s=args.link_gbytes,
        network_gbits_s=args.network_gbits,
        overlap=args.overlap,
    )
    gpus = scaling.parse_sizes(args.gpus, "--gpus")
    rows = [
        (
            str(p.gpus),
            str(p.machines),
            f"{1000 * p.compute_s:.1f}",
            f"{1000 * p.device_s:.1f}",
            f"{1000 * p.network_s:.1f}",
            f"{p.images_per_s:,.1f}",
            f"{p.speedup:.2f}",
            f"{100 * p.efficiency:.1f}%",
        )
        for p in model.predict_series(
            facts, args.batch_per_gpu, args.images_per_sec_1gpu, tuple(gpus), cluster
        )
    ]
    header = (
        "GPUs",
        "machines",
        "compute ms",
        "device ms",
        "network ms",
        "images/s",
        "speedup",
        "efficiency",
    )
    return report.format_columns(header, rows)


def _check_model_numbers(args: argparse.Namespace) -> None:
    """The model divides by most of these: a zero or negative one is the user's typo, not a crash."""
    positive = (
        ("--images-per-sec-1gpu", args.images_per_sec_1gpu),
        ("--batch-per-gpu", args.batch_per_gpu),
        ("--gpus-per-machine", args.gpus_per_machine),
        ("--link-gbytes", args.link_gbytes),
        ("--network-gbits", args.network_gbits),
        ("--params", args.params),
        ("--largest-array", args.largest_array),
        ("--servers", args.servers),
    )
    for flag, value in positive:
        if value is not None and not value > 0:
            raise UserError(f"{flag} {value}: give a number above 0")
    if not 0 <= args.overlap <= 1:
        raise UserError(f"--overlap {args.overlap}: give a share from 0 to 1, e.g. 0.5")
