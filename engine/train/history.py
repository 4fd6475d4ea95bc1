"""A job's history from its record and its processes' logs: curves, images/s over time, attempts.

The logs are read where the record says they are (ProcRecord.log_path; a leading ~ is this machine's
home) and parsed by engine.train.logparse, so this knows no log format of its own beyond the
timestamp logging puts first on each line and MXNet's `Epoch[N] Learning-rate=X` line.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.cluster.process.jobs import JobRecord, ProcRecord
from engine.events import EpochSummary, Throughput
from engine.train.logparse import NUMBER, LogParser, latest_summaries

# logging's %(asctime)s, which engine.train.logsetup puts first on every training line
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})")
LEARNING_RATE = re.compile(rf"Epoch\[(?P<epoch>\d+)\]\s+Learning-rate=(?P<value>{NUMBER})")
ATTEMPT = re.compile(r"/a(\d+)/[^/]+$")


@dataclass
class ProcHistory:
    """One process of one attempt: what its log says, and how it ended."""

    proc: ProcRecord
    attempt: int
    path: Path
    found: bool = False
    start: float | None = None  # its first and last timestamped lines
    end: float | None = None
    exit_status: int | None = None  # from PREFIX.status; None: still running, or unknown
    speeds: list[Throughput] = field(default_factory=list)
    epochs: list[EpochSummary] = field(default_factory=list)
    learning_rates: dict[int, float] = field(default_factory=dict)


@dataclass
class JobHistory:
    record: JobRecord
    procs: list[ProcHistory]

    @property
    def start(self) -> float:
        stamps = [p.start for p in self.procs if p.start is not None]
        return min(stamps, default=self.record.created)

    def workers(self) -> list[ProcHistory]:
        return [p for p in self.procs if p.proc.role == "worker"]

    def epoch_curves(self) -> dict[int, EpochSummary]:
        """Per epoch, the newest summary of the first worker that logged one (rank 0 validates
        for all; a relaunch's later summary of the same epoch replaces the earlier one)."""
        workers = self.workers()
        first = min((w.proc.rank for w in workers), default=0)
        curves: dict[int, EpochSummary] = {}
        for proc in sorted(workers, key=lambda p: p.attempt):
            if proc.proc.rank == first:
                curves.update({s.epoch: s for s in proc.epochs})
        return curves

    def learning_rates(self) -> dict[int, float]:
        rates: dict[int, float] = {}
        for proc in sorted(self.workers(), key=lambda p: p.attempt):
            rates.update(proc.learning_rates)
        return rates


def local_path(prefix: str, suffix: str) -> Path:
    """A host path as this machine reads it (the local launcher's, or a shared file system)."""
    return Path(os.path.expanduser(prefix + suffix))


def attempt_of(proc: ProcRecord, default: int) -> int:
    m = ATTEMPT.search(proc.prefix)
    return int(m.group(1)) if m else default


def stamp_of(line: str) -> float | None:
    m = STAMP.match(line)
    if not m:
        return None
    return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000


def read_proc(proc: ProcRecord, attempt: int, job: str) -> ProcHistory:
    history = ProcHistory(proc, attempt_of(proc, attempt), local_path(proc.log_path, ""))
    try:
        text = history.path.read_text(errors="replace")
    except OSError:
        return history
    history.found = True
    history.exit_status = _exit_status(local_path(proc.prefix, ".status"))
    parser = LogParser(proc.host, proc.rank, job)
    now: float | None = None
    events = []
    for line in text.splitlines():
        now = stamp_of(line) or now
        history.start = history.start or now
        events += parser.feed(line, now)
        lr = LEARNING_RATE.search(line)
        if lr:
            history.learning_rates[int(lr.group("epoch"))] = float(lr.group("value"))
    history.end = now
    history.speeds = [e for e in events if isinstance(e, Throughput) and not e.summary]
    history.epochs = latest_summaries(events)
    return history


def _exit_status(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def gather(record: JobRecord) -> JobHistory:
    """Every process the job ran, past attempts first, each with what its log says."""
    past = [read_proc(p, 0, record.job) for p in record.past_processes]
    now = [read_proc(p, record.attempt, record.job) for p in record.processes]
    return JobHistory(record, past + now)
