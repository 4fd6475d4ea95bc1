"""Immutable events and snapshots the engine emits; the CLI prints them and the console draws them.

Every event is a frozen dataclass. A field the source cannot supply (a GPU without a power sensor,
a stage that does not know its total yet) is ``None`` and is shown as ``N/A``; it never raises.
New event types go above ``Event`` and are listed in it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class StageProgress:
    """How far a preparation stage (or one chunk of it, on one host) has come."""

    stage: str  # disk | extract | filter | split | list | pack | place
    done: int  # items done (images, members, classes …)
    total: int | None  # None while unknown
    bytes_done: int = 0
    bytes_total: int | None = None
    skipped: int = 0  # items skipped and written to the stage's report
    unit: str = "images"
    part: str = ""  # chunk name, class name … ("" for the whole stage)
    host: str = ""  # "" for this machine
    message: str = ""
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class StageState:
    """A stage changed state: pending, running, done, failed, stale, stopped."""

    stage: str
    state: str
    message: str = ""
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class SkippedItem:
    """One input a stage could not use (corrupt image, unreadable file …), also kept in its report."""

    stage: str
    path: str
    reason: str
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class LogLine:
    """One line of a process's output, attributed to the host, role and rank that wrote it."""

    host: str
    role: str  # scheduler | server | worker | local | pack …
    rank: int | None
    text: str
    stream: str = "stdout"  # stdout | stderr
    level: str = "info"  # debug | info | warning | error
    job: str = ""
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class GpuSample:
    """One GPU at one moment; None where nvidia-smi reports [N/A] or [Not Supported]."""

    host: str
    index: int
    name: str | None = None
    uuid: str | None = None
    util_percent: float | None = None
    mem_used_mib: float | None = None
    mem_total_mib: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    lost: bool = False  # fallen off the bus / unrecoverable error reported
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class HostSample:
    """CPU, memory, load, disk and network of one host at one moment."""

    host: str
    cpu_percent: float | None = None
    cpu_count: int | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    load1: float | None = None
    disk_used_bytes: int | None = None
    disk_total_bytes: int | None = None
    net_rx_bytes_per_s: float | None = None
    net_tx_bytes_per_s: float | None = None
    gpu_count: int | None = None  # 0 means "no GPU" (no nvidia-smi)
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class HostState:
    """Reachability of a host; ``reason`` says why not (name resolution, refused, auth, host key, timeout)."""

    host: str
    reachable: bool
    reason: str = ""
    retry_in_s: float | None = None
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class Throughput:
    """Images per second of one worker (rank) on one host, parsed from a Speedometer line."""

    host: str
    rank: int | None
    samples_per_sec: float
    epoch: int | None = None
    batch: int | None = None
    metrics: tuple[tuple[str, float], ...] = ()
    job: str = ""
    time: float = field(default_factory=_now)
    summary: bool = False  # the run's own closing figure (all its images over all its time)


@dataclass(frozen=True)
class EpochSummary:
    """End-of-epoch figures of one worker: train/validation metrics and time cost."""

    host: str
    rank: int | None
    epoch: int
    train: tuple[tuple[str, float], ...] = ()
    validation: tuple[tuple[str, float], ...] = ()
    time_cost_s: float | None = None
    checkpoint: str | None = None
    job: str = ""
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class ProcessInfo:
    """One process of a job: where it runs, its role and rank, its pid record and log file."""

    host: str
    role: str
    rank: int | None
    pid: int | None = None
    pgid: int | None = None
    log_path: str = ""
    state: str = "starting"  # starting | running | exited | failed | killed | lost
    exit_status: int | None = None


@dataclass(frozen=True)
class JobState:
    """A job (training run, distributed pack, benchmark) changed state."""

    job: str
    state: str  # starting | running | stopping | stopped | failed | done | relaunching
    processes: tuple[ProcessInfo, ...] = ()
    restarts: int = 0
    message: str = ""
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class Alert:
    """A job finished, failed, stalled or has a straggler: the console shows a notice and rings."""

    job: str
    kind: str  # finished | failed | stalled | straggler
    message: str
    host: str = ""
    attempt: int = 0
    figures: tuple[tuple[str, float], ...] = ()
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class Failure:
    """Something went wrong, with a diagnosis a person can act on."""

    source: str  # e.g. "worker 1 on node-b", "pack chunk 3", "host node-c"
    message: str
    diagnosis: str = ""
    advice: tuple[str, ...] = ()
    last_lines: tuple[str, ...] = ()
    job: str = ""
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class ClusterRate:
    """A job's images/s summed over its workers, per host, the speedup against ideal and its stragglers."""

    job: str
    images_per_sec: float
    workers: int
    hosts: tuple[tuple[str, float], ...] = ()  # (host, images/s of its workers together)
    median_worker: float | None = None
    baseline: float | None = None  # one worker's rate the speedup is measured against
    speedup: float | None = None  # images_per_sec / baseline; ideal is `workers`
    stragglers: tuple[str, ...] = ()  # "host#rank" of workers below k x the median
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class TrainProgress:
    """How far a training job has come, for the train row: epoch and batch of totals, rate, ETA, accuracy."""

    job: str
    epoch: int  # the epoch in progress, counted from 0
    epochs: int
    batch: int  # batches done in that epoch (the slowest worker's)
    batches: int | None  # batches per epoch per worker; None when the data size is unknown
    images_per_sec: float | None = None  # the cluster's, from whole Speedometer readings
    eta_s: float | None = None  # until the job's last epoch ends
    val_accuracy: float | None = None  # the newest validation accuracy
    time: float = field(default_factory=_now)

    @property
    def fraction(self) -> float | None:
        if not self.batches or not self.epochs:
            return None
        return min(1.0, (self.epoch * self.batches + self.batch) / (self.epochs * self.batches))


@dataclass(frozen=True)
class ScalingPoint:
    """One cell of a scaling sweep: a network at one cluster size, its steady-state images/s.

    ``speedup`` is against the sweep's smallest size scaled to it (ideal speedup = ``gpus``);
    ``images_per_sec`` is None when the run failed, and ``message`` says why.
    """

    network: str
    batch_per_gpu: int
    gpus: int  # devices in all (workers × devices per worker; a CPU worker counts as one)
    workers: int
    images_per_sec: float | None
    per_worker: tuple[float, ...] = ()  # steady-state median images/s of each worker, by rank
    readings: int = 0  # Speedometer readings used, after the warm-up ones were dropped
    speedup: float | None = None
    efficiency: float | None = None
    predicted_efficiency: float | None = None  # the scaling model's, when it could be computed
    message: str = ""
    job: str = ""
    time: float = field(default_factory=_now)


Event = (
    StageProgress
    | StageState
    | SkippedItem
    | LogLine
    | GpuSample
    | HostSample
    | HostState
    | Throughput
    | EpochSummary
    | JobState
    | Failure
    | Alert
    | ClusterRate
    | TrainProgress
    | ScalingPoint
)

EventSink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The default sink: drop events (used when nobody is watching)."""
