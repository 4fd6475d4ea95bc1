"""Pure parser of MXNet training logs (Speedometer, epoch metrics, checkpoints, OOM) into engine events.

The lines it reads, as MXNet 1.9.1 and `imgscale train` write them (prefixes such as a timestamp or
``Node[1]`` / ``Node[1@host]`` may come first)::

    Epoch[0] Batch [20-40]\tSpeed: 1234.56 samples/sec\taccuracy=0.123456\ttop_k_accuracy_5=0.4
    Epoch[0] Batch [0-20]\tSpeed: …               (first report of an epoch)
    Epoch[0] Batch [40]\tSpeed: …                 (Speedometer with auto_reset=False)
    Iter[0] Batch [40]\tSpeed: 12.5 samples/sec   (Speedometer without metrics)
    test-io: Batch [20-40]\tSpeed: 5000.00 samples/sec
    test-io: 2560 images in 0.254 s: 10096.00 images/sec   (the run's summary)
    Epoch[0] Train-accuracy=0.500000
    Epoch[0] Time cost=123.456
    Saved checkpoint to "prefix-0001.params"
    Epoch[0] Validation-accuracy=0.480000

Nothing here raises on odd input: a line it does not know gives no event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from engine.events import EpochSummary, Event, Failure, LogLine, Throughput
from engine.train.oom import diagnose_text

NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
NODE = re.compile(r"Node\[(?P<rank>\d+)(?:@(?P<host>[^\]\s]+))?\]")
SPEED = re.compile(
    r"(?:(?:Epoch|Iter)\[(?P<epoch>\d+)\]|test-io:)\s*Batch\s*\[(?:(?P<start>\d+)-)?(?P<end>\d+)\]"
    rf"\s+Speed:\s*(?P<speed>{NUMBER})\s*samples/sec(?P<rest>.*)$"
)
METRIC = re.compile(rf"(?P<name>[^\s=]+)=(?P<value>{NUMBER})")
TRAIN = re.compile(rf"Epoch\[(?P<epoch>\d+)\]\s+Train-(?P<name>[^=\s]+)=(?P<value>{NUMBER})")
VALIDATION = re.compile(
    rf"Epoch\[(?P<epoch>\d+)\]\s+Validation-(?P<name>[^=\s]+)=(?P<value>{NUMBER})"
)
TEST_IO_SUMMARY = re.compile(
    rf"test-io:\s*(?P<images>\d+) images in (?P<seconds>{NUMBER}) s:\s*(?P<speed>{NUMBER}) images/sec"
)
TIME_COST = re.compile(rf"Epoch\[(?P<epoch>\d+)\]\s+Time cost=(?P<value>{NUMBER})")
SAVED = re.compile(r'Saved checkpoint to "(?P<path>[^"]+)"')
CHECKPOINT_EPOCH = re.compile(r"-(\d{4,})\.(?:params|pt)$")
CHECKPOINT_BATCH = re.compile(r"-(\d{4,})\.b\d+\.(?:params|pt)$")


@dataclass(frozen=True)
class Parsed:
    """What one line says, before it is attributed to a worker."""

    kind: str  # speed | summary | train | validation | time | checkpoint
    epoch: int | None = None
    batch: int | None = None
    speed: float | None = None
    metrics: tuple[tuple[str, float], ...] = ()
    value: float | None = None
    path: str | None = None
    rank: int | None = None
    host: str | None = None


def parse_line(text: str) -> Parsed | None:
    """One log line -> Parsed, or None when it is not a training-progress line."""
    parsed = (
        _speed(text)
        or _test_io_summary(text)
        or _epoch_metric(text)
        or _time_cost(text)
        or _saved(text)
    )
    if parsed is None:
        return None
    node = NODE.search(text)
    if node:
        parsed = replace(parsed, rank=int(node.group("rank")), host=node.group("host"))
    return parsed


def progress_of(line: LogLine) -> tuple[str, float] | None:
    """What counts as training progress for the job's alerts: a speed line -> (host, images/s)."""
    parsed = parse_line(line.text)
    if parsed is None or parsed.kind not in ("speed", "summary") or parsed.speed is None:
        return None
    return (line.host or parsed.host or "", parsed.speed)


def _metrics(rest: str) -> tuple[tuple[str, float], ...]:
    return tuple((m.group("name"), float(m.group("value"))) for m in METRIC.finditer(rest))


def _speed(text: str) -> Parsed | None:
    m = SPEED.search(text)
    if not m:
        return None
    epoch = int(m.group("epoch")) if m.group("epoch") is not None else None
    return Parsed(
        "speed",
        epoch=epoch,
        batch=int(m.group("end")),
        speed=float(m.group("speed")),
        metrics=_metrics(m.group("rest")),
    )


def _test_io_summary(text: str) -> Parsed | None:
    m = TEST_IO_SUMMARY.search(text)
    return Parsed("summary", speed=float(m.group("speed"))) if m else None


def _epoch_metric(text: str) -> Parsed | None:
    for kind, pattern in (("train", TRAIN), ("validation", VALIDATION)):
        m = pattern.search(text)
        if m:
            return Parsed(
                kind,
                epoch=int(m.group("epoch")),
                metrics=((m.group("name"), float(m.group("value"))),),
            )
    return None


def _time_cost(text: str) -> Parsed | None:
    m = TIME_COST.search(text)
    return Parsed("time", epoch=int(m.group("epoch")), value=float(m.group("value"))) if m else None


def _saved(text: str) -> Parsed | None:
    m = SAVED.search(text)
    if not m:
        return None
    path = m.group("path")
    within = CHECKPOINT_BATCH.search(path)
    if within:  # PREFIX-NNNN.bBBBBBB.params: written during epoch NNNN
        return Parsed("checkpoint", epoch=int(within.group(1)), path=path)
    number = CHECKPOINT_EPOCH.search(path)
    # checkpoint N is written at the end of epoch N-1
    return Parsed("checkpoint", epoch=int(number.group(1)) - 1 if number else None, path=path)


class LogParser:
    """Turns the lines of one process's log into events, attributed to its host and rank.

    Epoch figures arrive over several lines; each one yields the epoch's EpochSummary so far (the
    newest per host, rank and epoch replaces the older ones). Out-of-memory messages yield a Failure.
    """

    def __init__(
        self, host: str = "", rank: int | None = None, job: str = "", batch_size: int | None = None
    ) -> None:
        self.host, self.rank, self.job, self.batch_size = host, rank, job, batch_size
        self.epochs: dict[tuple[str, int | None, int], EpochSummary] = {}
        self.last_epoch: int | None = None
        self.recent: list[str] = []
        self.oom_seen = False

    def feed(self, text: str, time: float | None = None) -> list[Event]:
        """Events for one line (usually none or one)."""
        self.recent = (self.recent + [text])[-20:]
        stamp = {} if time is None else {"time": time}
        parsed = parse_line(text)
        events: list[Event] = []
        if parsed is not None:
            events.append(self._event(parsed, stamp))
        failure = self._oom(text)
        if failure is not None:
            events.append(failure)
        return events

    def feed_text(self, text: str) -> list[Event]:
        return [event for line in text.splitlines() for event in self.feed(line)]

    def _who(self, parsed: Parsed) -> tuple[str, int | None]:
        return (self.host or parsed.host or "", self.rank if self.rank is not None else parsed.rank)

    def _event(self, parsed: Parsed, stamp: dict) -> Event:
        host, rank = self._who(parsed)
        if parsed.kind in ("speed", "summary"):
            return Throughput(
                host=host,
                rank=rank,
                samples_per_sec=parsed.speed or 0.0,
                epoch=parsed.epoch,
                batch=parsed.batch,
                metrics=parsed.metrics,
                job=self.job,
                summary=parsed.kind == "summary",
                **stamp,
            )
        epoch = parsed.epoch if parsed.epoch is not None else (self.last_epoch or 0)
        self.last_epoch = epoch
        key = (host, rank, epoch)
        summary = self.epochs.get(key) or EpochSummary(
            host=host, rank=rank, epoch=epoch, job=self.job
        )
        summary = _merge(summary, parsed, stamp)
        self.epochs[key] = summary
        return summary

    def _oom(self, text: str) -> Failure | None:
        if self.oom_seen:
            return None
        failure = diagnose_text(
            text,
            source=self._source(),
            batch_size=self.batch_size,
            job=self.job,
            last_lines=tuple(self.recent),
        )
        self.oom_seen = failure is not None
        return failure

    def _source(self) -> str:
        who = f"worker {self.rank}" if self.rank is not None else "training"
        return f"{who} on {self.host}" if self.host else who


def _merge(summary: EpochSummary, parsed: Parsed, stamp: dict) -> EpochSummary:
    if parsed.kind == "train":
        return replace(summary, train=_upsert(summary.train, parsed.metrics), **stamp)
    if parsed.kind == "validation":
        return replace(summary, validation=_upsert(summary.validation, parsed.metrics), **stamp)
    if parsed.kind == "time":
        return replace(summary, time_cost_s=parsed.value, **stamp)
    return replace(summary, checkpoint=parsed.path, **stamp)


def _upsert(
    pairs: tuple[tuple[str, float], ...], new: tuple[tuple[str, float], ...]
) -> tuple[tuple[str, float], ...]:
    names = {name for name, _ in new}
    return tuple(p for p in pairs if p[0] not in names) + new


def parse_log(text: str, host: str = "", rank: int | None = None, job: str = "") -> list[Event]:
    """Every event of a whole log (e.g. a worker's log file)."""
    return LogParser(host, rank, job).feed_text(text)


def latest_summaries(events: list[Event]) -> list[EpochSummary]:
    """The final EpochSummary of each (host, rank, epoch), in order of appearance."""
    latest: dict[tuple, EpochSummary] = {}
    for event in events:
        if isinstance(event, EpochSummary):
            latest[(event.host, event.rank, event.epoch)] = event
    return list(latest.values())


def latest_throughput(events: list[Event]) -> dict[tuple[str, int | None], Throughput]:
    """The newest Throughput of each (host, rank)."""
    latest: dict[tuple[str, int | None], Throughput] = {}
    for event in events:
        if isinstance(event, Throughput):
            latest[(event.host, event.rank)] = event
    return latest


def host_rates(events: list[Event]) -> dict[str, float]:
    """Images/s per host: the sum of its workers' newest Speedometer rates."""
    rates: dict[str, float] = {}
    for (host, _rank), event in latest_throughput(events).items():
        rates[host] = rates.get(host, 0.0) + event.samples_per_sec
    return rates
