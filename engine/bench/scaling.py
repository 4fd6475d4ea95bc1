"""The scaling sweep: for each network and cluster size, launch a synthetic-data job and measure images/s.

Each run is a real distributed job (``imgscale train --benchmark`` on every worker, servers and a
scheduler placed by our launcher). The run is stopped once every worker has printed ``warmup +
readings`` Speedometer lines; the first ``warmup`` of each worker are dropped (start-up, the first
kvstore rounds, allocations), the median of the rest is that worker's steady state, and the job's
figure is the sum over its workers.

engine.bench.sweep drives this generator for the CLI and the console (through engine.api)::

    config = sweep_config("resnet-50:32", workers="1,2,4", hosts_file="hosts", kv_store="dist_sync")
    async with contextlib.aclosing(sweep_events(config)) as events:   # closing stops the running job
        async for event in events:
            ...  # StageState/StageProgress(stage="scaling", unit="runs", part="resnet-50 on 2 workers"),
                 # the job's LogLine/JobState/Failure, parsed Throughput, and one ScalingPoint per
                 # cell (speedup/efficiency filled against the smallest size measured so far)
    rows = report.table_rows(points)            # with report.TABLE_COLUMNS
    plot = report.speedup_plot(report.speedup_series(points), width, height)  # TextPlot
    write_outputs(points, out_dir, sweep_meta(config))  # engine.bench.sweep: table.txt, scaling.csv/json/png
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shlex
import statistics
import sys
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.bench.report import add_speedup
from engine.cluster.process import jobs
from engine.cluster.process.faults import FINAL
from engine.errors import UserError
from engine.events import (
    Event,
    Failure,
    JobState,
    LogLine,
    ScalingPoint,
    StageProgress,
    StageState,
    Throughput,
)
from engine.train.launch import launch as launcher
from engine.train.logparse import LogParser
from engine.train.options import RESNET_DEPTHS

STAGE = "scaling"
DEFAULT_NETWORKS = "alexnet:512,inception-v3:32,resnet-152:32"
# Input shape per network family when --image-shape is not given (Inception-v3 needs 299).
DEFAULT_SHAPE = {"inception-v3": "3,299,299"}
SPARE_READINGS = 2
KNOWN_BASES = ("resnet", "alexnet", "inception-v3", "vgg", "mobilenet")


@dataclass(frozen=True)
class NetworkSpec:
    """A network of the sweep and its batch per GPU (per worker on CPU), as ``name:batch``."""

    name: str
    batch_per_gpu: int

    @property
    def base(self) -> str:
        """The trainer's --network: 'resnet-152' -> 'resnet'."""
        return split_network(self.name)[0]

    @property
    def layers(self) -> int:
        return split_network(self.name)[1]


def split_network(name: str) -> tuple[str, int]:
    """'resnet-152' -> ('resnet', 152); 'vgg-16' -> ('vgg', 16); 'alexnet' -> ('alexnet', 0)."""
    base, _, depth = name.rpartition("-")
    if base in ("resnet", "vgg") and depth.isdigit():
        return base, int(depth)
    return name, 0


def parse_networks(text: str, flag: str = "--networks") -> list[NetworkSpec]:
    """'alexnet:512,resnet-152:32' -> specs; a mistake names the item and the expected form."""
    specs = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        name, sep, batch = item.partition(":")
        if not sep or not batch.strip().isdigit() or int(batch) < 1:
            raise UserError(f"{flag} {item!r}: write network:batch-per-GPU, e.g. resnet-152:32")
        if split_network(name.strip())[0] not in KNOWN_BASES:
            raise UserError(
                f"{flag} {item!r}: unknown network; use resnet-18…resnet-152, alexnet, inception-v3, "
                "vgg-16 or mobilenet"
            )
        check_depth(name.strip(), f"{flag} {item!r}")
        specs.append(NetworkSpec(name.strip(), int(batch)))
    if not specs:
        raise UserError(f"{flag}: give at least one network:batch, e.g. {DEFAULT_NETWORKS}")
    return specs


def check_depth(name: str, where: str) -> None:
    """resnet-7 would fail in every worker after launch; say the depths there are now."""
    base, depth = split_network(name)
    if base == "resnet" and depth and depth not in RESNET_DEPTHS:
        depths = ", ".join(f"resnet-{d}" for d in RESNET_DEPTHS)
        raise UserError(f"{where}: no such depth; use {depths}")


def parse_sizes(text: str, flag: str) -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8], sorted and without repeats."""
    try:
        sizes = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UserError(f"{flag} {text!r}: write comma-separated counts such as 1,2,4,8") from None
    if not sizes or sizes[0] < 1:
        raise UserError(f"{flag} {text!r}: counts must be 1 or more, such as 1,2,4,8")
    return sizes


@dataclass(frozen=True)
class RunPlan:
    """One cell of the sweep: a network on ``workers`` workers of ``gpus_per_worker`` GPUs each."""

    network: NetworkSpec
    workers: int
    gpus_per_worker: int  # 0: CPU workers (each counts as one device)

    @property
    def devices(self) -> int:
        return self.workers * max(1, self.gpus_per_worker)

    @property
    def batch_per_worker(self) -> int:
        return self.network.batch_per_gpu * max(1, self.gpus_per_worker)

    @property
    def label(self) -> str:
        unit = "GPUs" if self.gpus_per_worker else "workers"
        return f"{self.network.name} on {self.devices} {unit if self.devices > 1 else unit[:-1]}"


def plan_runs(
    networks: Sequence[NetworkSpec],
    *,
    workers: Sequence[int] = (),
    gpus: Sequence[int] = (),
    gpus_per_host: int = 0,
) -> list[RunPlan]:
    """The runs of a sweep: by worker counts, or by GPU counts filling hosts of ``gpus_per_host``.

    By GPUs (as the tutorial: one worker per machine driving all its GPUs), N GPUs take
    ceil(N / gpus_per_host) workers of min(N, gpus_per_host) GPUs; N must fill whole hosts.
    """
    if bool(workers) == bool(gpus):
        raise UserError("give either --workers 1,2,4,… or --gpus 1,2,4,… (not both)")
    if workers:
        return [RunPlan(net, n, 0) for net in networks for n in workers]
    if gpus_per_host < 1:
        raise UserError("--gpus needs --gpus-per-host N (the GPUs each worker drives)")
    runs = []
    for net in networks:
        for n in gpus:
            per_worker = min(n, gpus_per_host)
            if n % per_worker:
                raise UserError(
                    f"--gpus {n}: above one host it must be a multiple of --gpus-per-host {gpus_per_host}"
                )
            runs.append(RunPlan(net, math.ceil(n / per_worker), per_worker))
    return runs


@dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep needs; the CLI and the console build one."""

    runs: tuple[RunPlan, ...]
    hosts_file: str | None = None  # None: every process on this machine
    kv_store: str = "dist_sync"
    servers: int | None = None  # per run; None: as many as workers (launch.py's default)
    warmup: int = 2  # Speedometer readings dropped per worker
    readings: int = 3  # readings kept per worker (their median is the steady state)
    disp_batches: int = 5  # batches per Speedometer reading
    image_shape: str | None = None
    num_classes: int = 1000
    python: str = sys.executable
    command: str | None = None  # a template instead of `imgscale train` (see train_argv)
    extra_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    run_timeout_s: float = 900.0
    out_dir: Path | None = None

    @property
    def num_batches(self) -> int:
        """Batches each worker runs (all the same, as dist_sync needs): the readings plus spares.

        The job is stopped as soon as every worker has its readings; the spare readings only keep
        it alive until then, since a job that exits may lose its last log lines in transit.
        """
        return (self.warmup + self.readings + SPARE_READINGS) * self.disp_batches + 1


def sweep_config(
    networks: str = DEFAULT_NETWORKS,
    *,
    workers: str = "",
    gpus: str = "",
    gpus_per_host: int = 0,
    **options: Any,
) -> SweepConfig:
    """A SweepConfig from the same text the CLI takes (``"resnet-18:4"``, ``workers="1,2"``).

    ``options`` are SweepConfig fields (hosts_file, kv_store, servers, warmup, readings …).
    """
    specs = parse_networks(networks)
    if gpus:
        runs = plan_runs(specs, gpus=parse_sizes(gpus, "--gpus"), gpus_per_host=gpus_per_host)
    else:
        runs = plan_runs(specs, workers=parse_sizes(workers or "1,2", "--workers"))
    config = SweepConfig(runs=tuple(runs), **options)
    if config.warmup < 0 or config.readings < 1 or config.disp_batches < 1:
        raise UserError("--warmup must be 0 or more, --readings and --disp-batches 1 or more")
    return config


# What a sweep starts from: the tutorial's on GPU hosts; on CPU-only hosts a network and image small
# enough that a run takes seconds, not minutes.
GPU_DEFAULTS = {"networks": "resnet-50:32", "workers": "1,2,4", "image_shape": None}
CPU_DEFAULTS = {"networks": "resnet-18:8", "workers": "1,2", "image_shape": "3,32,32"}
# Rough images/s of one worker, only to say how long a sweep takes before it starts: a CPU worker
# trains resnet-18 on 32x32 images at about 30/s (fewer pixels, more images); a GPU at about 200/s.
CPU_RATE_32PX = 30.0
GPU_RATE = 200.0
START_S = 15.0  # launching one run: connections, ps-lite roles, `import mxnet` on every host


def sweep_defaults(gpus: int | None) -> dict[str, str | None]:
    """The form's first values for hosts with ``gpus`` GPUs each (0 or None: no GPU found)."""
    return dict(GPU_DEFAULTS if gpus else CPU_DEFAULTS)


def estimate_seconds(config: SweepConfig, gpus: int | None) -> float:
    """About how long the sweep takes: each run's start plus its batches at a rough rate per worker."""
    total = 0.0
    for run in config.runs:
        pixels = _pixels(image_shape_for(config, run.network))
        rate = GPU_RATE * max(1, run.gpus_per_worker) if gpus else CPU_RATE_32PX * 32 * 32 / pixels
        total += START_S + config.num_batches * run.batch_per_worker / rate
    return total


def _pixels(shape: str) -> int:
    _, height, width = (int(x) for x in shape.split(","))
    return height * width


def image_shape_for(config: SweepConfig, net: NetworkSpec) -> str:
    return config.image_shape or DEFAULT_SHAPE.get(net.base, "3,224,224")


def template_fields(config: SweepConfig, run: RunPlan) -> dict[str, str]:
    """Placeholders a --command template may use."""
    return {
        "python": config.python,
        "network": run.network.base,
        "name": run.network.name,
        "num_layers": str(run.network.layers or 50),
        "batch_size": str(run.batch_per_worker),
        "batch_per_gpu": str(run.network.batch_per_gpu),
        "gpus": ",".join(str(i) for i in range(run.gpus_per_worker)),
        "kv_store": config.kv_store,
        "disp_batches": str(config.disp_batches),
        "num_batches": str(config.num_batches),
        "image_shape": image_shape_for(config, run.network),
        "num_classes": str(config.num_classes),
    }


def train_argv(config: SweepConfig, run: RunPlan) -> list[str]:
    """What every worker runs: ``imgscale train --benchmark …`` (or the --command template)."""
    values = template_fields(config, run)
    if config.command:
        try:
            return [w.format(**values) for w in shlex.split(config.command)] + list(
                config.extra_args
            )
        except KeyError as exc:
            raise UserError(
                f"--command: unknown placeholder {{{exc.args[0]}}}; use {', '.join(sorted(values))}"
            ) from None
    argv = [
        config.python,
        "-m",
        "engine.cli",
        "train",
        "--benchmark",
        "--network",
        values["network"],
        "--batch-size",
        values["batch_size"],
        "--kv-store",
        config.kv_store,
        "--disp-batches",
        values["disp_batches"],
        "--num-batches",
        values["num_batches"],
        "--num-epochs",
        "1",
        "--image-shape",
        values["image_shape"],
        "--num-classes",
        values["num_classes"],
    ]
    if run.network.layers:
        argv += ["--num-layers", values["num_layers"]]
    if run.gpus_per_worker:
        argv += ["--gpus", values["gpus"]]
    return argv + list(config.extra_args)


# --- measuring ------------------------------------------------------------------------------


def steady_state(
    samples: Sequence[float], warmup: int, readings: int | None = None
) -> float | None:
    """Median of the ``readings`` readings after the first ``warmup``; None when nothing is left.

    A worker that is faster than the others logs extra readings before the job is stopped; only
    the first ``readings`` count, so every worker is measured over the same stretch of batches.
    """
    end = None if readings is None else warmup + readings
    kept = list(samples)[warmup:end]
    return statistics.median(kept) if kept else None


@dataclass
class RunTally:
    """Speedometer readings of one run, per worker rank."""

    workers: int
    warmup: int
    readings: int
    samples: dict[int, list[float]] = field(default_factory=dict)

    def add(self, event: Throughput) -> None:
        rank = event.rank if event.rank is not None else 0
        self.samples.setdefault(rank, []).append(event.samples_per_sec)

    @property
    def complete(self) -> bool:
        """Every worker has its warm-up plus the readings we keep."""
        need = self.warmup + self.readings
        return len(self.samples) >= self.workers and all(
            len(v) >= need for v in self.samples.values()
        )

    def per_worker(self) -> list[float | None]:
        return [
            steady_state(self.samples.get(r, []), self.warmup, self.readings)
            for r in range(self.workers)
        ]

    def used(self) -> int:
        return sum(min(self.readings, max(0, len(v) - self.warmup)) for v in self.samples.values())

    def progress(self) -> tuple[int, int]:
        """(readings in, readings needed) over every worker, each counted up to what it needs."""
        need = self.warmup + self.readings
        return sum(min(need, len(v)) for v in self.samples.values()), need * self.workers


def point_from_tally(
    run: RunPlan, tally: RunTally, job: str = "", message: str = ""
) -> ScalingPoint:
    """The run's ScalingPoint: summed steady-state images/s, or None with the reason."""
    per_worker = tally.per_worker()
    missing = [r for r, v in enumerate(per_worker) if v is None]
    if missing or message:
        why = message or f"no steady-state reading from worker(s) {', '.join(map(str, missing))}"
        return ScalingPoint(
            run.network.name,
            run.network.batch_per_gpu,
            run.devices,
            run.workers,
            None,
            readings=tally.used(),
            message=why,
            job=job,
        )
    values = tuple(v for v in per_worker if v is not None)
    return ScalingPoint(
        run.network.name,
        run.network.batch_per_gpu,
        run.devices,
        run.workers,
        sum(values),
        per_worker=values,
        readings=tally.used(),
        job=job,
    )


# --- running --------------------------------------------------------------------------------

# A job runner starts a job and yields its events until it ends or the consumer stops iterating;
# closing the iterator must stop the job and kill its processes on every host.
JobRunner = Callable[[SweepConfig, RunPlan, list[str]], AsyncGenerator[Event, None]]


async def sweep_events(
    config: SweepConfig, runner: JobRunner | None = None
) -> AsyncGenerator[Event, None]:
    """Run every cell of the sweep in turn and yield what happens (see the module docstring)."""
    runner = runner or launcher_runner
    points: list[ScalingPoint] = []
    total = len(config.runs)
    yield StageState(STAGE, "running", f"{total} runs, kv-store {config.kv_store}")
    for index, run in enumerate(config.runs):
        yield StageProgress(STAGE, index, total, unit="runs", part=run.label, message="launching")
        point = None
        # aclosing: closing this generator must stop the run's job now, not when GC finalizes it
        async with contextlib.aclosing(_measure(config, run, runner)) as measured:
            async for event in measured:
                if isinstance(event, ScalingPoint):
                    point = event
                else:
                    yield event
        points.append(
            point or point_from_tally(run, RunTally(run.workers, 0, 0), message="no result")
        )
        points = add_speedup(points)
        yield points[-1]
        yield StageProgress(
            STAGE, index + 1, total, unit="runs", part=run.label, message="measured"
        )
    failed = sum(1 for p in points if p.images_per_sec is None)
    yield StageState(
        STAGE, "failed" if failed == total else "done", f"{total - failed} of {total} runs measured"
    )


async def _measure(
    config: SweepConfig, run: RunPlan, runner: JobRunner
) -> AsyncGenerator[Event, None]:
    """One run: follow the job's throughput until every worker has enough readings, then stop it.

    The runner enforces ``run_timeout_s`` around its own waits (never around our yields, so a slow
    consumer is never cancelled by it) and ends with a Failure when time runs out.
    """
    tally = RunTally(run.workers, config.warmup, config.readings)
    readers = WorkerLogs(run.batch_per_worker)
    job, message = "", ""
    events = runner(config, run, train_argv(config, run))
    try:
        async for event in events:
            job = getattr(event, "job", "") or job
            yield event
            for derived in readers.feed(event):
                if derived is not event:
                    yield derived
                if isinstance(derived, Throughput):
                    tally.add(derived)
                    done, need = tally.progress()  # the run's own progress, from its readings
                    yield StageProgress(STAGE, done, need, unit="readings", part=run.label)
                message = _failure_message(derived) or message
            message = _failure_message(event) or message
            if tally.complete:
                break
    finally:
        await events.aclose()  # stops the job: its processes are killed on every host
    why = (
        "" if tally.complete else message or "the job ended before every worker had enough readings"
    )
    yield point_from_tally(run, tally, job, why)


class WorkerLogs:
    """The trainer's log parser, one per worker: Speedometer readings and out-of-memory diagnoses."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.parsers: dict[tuple[str, int | None], LogParser] = {}
        self.runner_reads_speed = (
            False  # a runner that yields Throughput itself is not double-counted
        )

    def feed(self, event: Event) -> list[Event]:
        if isinstance(event, Throughput):
            self.runner_reads_speed = True
            return [event]
        if not (isinstance(event, LogLine) and event.role == "worker"):
            return []
        key = (event.host, event.rank)
        parser = self.parsers.get(key)
        if parser is None:
            parser = self.parsers[key] = LogParser(
                event.host, event.rank, event.job, self.batch_size
            )
        return [
            e for e in parser.feed(event.text, event.time) if isinstance(e, (Throughput, Failure))
        ]


def speedometer_reading(line: LogLine) -> Throughput | None:
    """A worker's Speedometer line as a Throughput (engine.train.logparse reads the line)."""
    found = WorkerLogs(0).feed(line)
    return next((e for e in found if isinstance(e, Throughput)), None)


def _failure_message(event: Event) -> str:
    if isinstance(event, Failure):
        return f"{event.source}: {event.message}"
    if isinstance(event, JobState) and event.state in ("failed", "stopped"):
        return event.message or f"job {event.state}"
    return ""


async def launcher_runner(
    config: SweepConfig, run: RunPlan, argv: list[str]
) -> AsyncGenerator[Event, None]:
    """Run one cell of the sweep as a job of our launcher (scheduler, servers, workers)."""
    events = job_events(
        argv,
        run.workers,
        config.servers,
        config.hosts_file,
        dict(config.env),
        "scaling",
        config.run_timeout_s,
    )
    try:
        async for event in events:
            yield event
    finally:
        await events.aclose()  # closing this runner early must stop the job now, not at GC


async def job_events(
    argv: Sequence[str],
    workers: int,
    servers: int | None,
    hosts_file: str | None,
    env: dict[str, str],
    name: str,
    timeout_s: float | None = None,
) -> AsyncGenerator[Event, None]:
    """Launch a distributed job and yield its events until it ends; closing early stops it everywhere.

    After ``timeout_s`` without the job ending, yields a Failure saying so and stops the job.
    """
    queue: asyncio.Queue[Event] = asyncio.Queue()
    spec = launcher.LaunchSpec(
        command=tuple(argv),
        num_workers=workers,
        num_servers=servers,
        hosts_file=hosts_file,
        launcher="ssh" if hosts_file else "local",
        env=env,
        job=jobs.new_job_id(name),
        grace_s=2,  # a benchmark has nothing to save: stop it quickly
    )
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    job = await launcher.launch(spec, sink=queue.put_nowait)  # the sink sees events from the start
    try:
        while True:
            try:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                event = await asyncio.wait_for(queue.get(), left)
            except TimeoutError:
                yield Failure(
                    f"job {job.job_id}", f"timed out after {timeout_s:.0f} s", job=job.job_id
                )
                return
            yield event
            if isinstance(event, JobState) and event.state in FINAL:
                return
    finally:
        if job.phase not in FINAL:
            await job.stop("measured")
        await job.close()
