"""Textual messages: engine events going down to widgets, and action requests going up to the app.

Telemetry (GPU, host, reachability, throughput samples) arrives in batches holding only the newest
sample per source; a batch still queued is dropped when a newer one covering the same sources
follows it (``can_replace``), so a slow terminal never builds a backlog.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message

from engine.events import (
    ClusterRate,
    EpochSummary,
    Failure,
    JobState,
    LogLine,
    SkippedItem,
    StageProgress,
    StageState,
    TrainProgress,
)

TELEMETRY_TYPES = ("GpuSample", "HostSample", "HostState", "Throughput")


def source_key(event: Any) -> tuple:
    """Which source a telemetry sample replaces: a GPU, a host, or a worker."""
    kind = type(event).__name__
    if kind == "GpuSample":
        return (kind, event.host, event.index)
    if kind == "Throughput":
        return (kind, event.host, event.rank)
    return (kind, event.host)


class Telemetry(Message):
    """The newest telemetry sample per source, gathered by the bridge from one read of the stream."""

    def __init__(self, samples: dict[tuple, Any]) -> None:
        super().__init__()
        self.samples = samples

    def can_replace(self, message: Message) -> bool:
        # Textual asks the queued message whether the next one supersedes it.
        return isinstance(message, Telemetry) and message.samples.keys() >= self.samples.keys()


class LogBatch(Message):
    """Log lines in the order they were written."""

    def __init__(self, lines: list[LogLine]) -> None:
        super().__init__()
        self.lines = lines


class StageEvent(Message):
    """A stage's progress, state or skipped file, or the train row's progress; progress coalesces."""

    def __init__(self, event: StageProgress | StageState | SkippedItem | TrainProgress) -> None:
        super().__init__()
        self.event = event

    def can_replace(self, message: Message) -> bool:
        if isinstance(self.event, TrainProgress):
            return isinstance(message, StageEvent) and isinstance(message.event, TrainProgress)
        return (
            isinstance(self.event, StageProgress)
            and isinstance(message, StageEvent)
            and isinstance(message.event, StageProgress)
            and message.event.stage == self.event.stage
            and message.event.part == self.event.part
        )


class JobEvent(Message):
    """A job changed state, failed, finished an epoch, or its cluster rate moved."""

    def __init__(self, event: JobState | Failure | EpochSummary | ClusterRate) -> None:
        super().__init__()
        self.event = event

    def can_replace(self, message: Message) -> bool:
        return (
            isinstance(self.event, ClusterRate)
            and isinstance(message, JobEvent)
            and isinstance(message.event, ClusterRate)
        )


class ScalingEvent(Message):
    """One event of the Scaling screen's sweep (api.SweepEvent), in order, none coalesced."""

    def __init__(self, event: Any) -> None:
        super().__init__()
        self.event = event


class ScalingEnd(Message):
    """The Scaling screen's sweep ended (api.SweepEnd: done, stopped or an error)."""

    def __init__(self, end: Any) -> None:
        super().__init__()
        self.end = end


class Act(Message):
    """A widget asks the app to do something (an action name with arguments); the app owns the engine."""

    def __init__(self, action: str, **args: Any) -> None:
        super().__init__()
        self.action = action
        self.args = args


def split_batch(events: list[Any]) -> list[Message]:
    """Turn one read of the engine stream into messages: telemetry merged, logs grouped, the rest in order."""
    telemetry: dict[tuple, Any] = {}
    lines: list[LogLine] = []
    out: list[Message] = []
    for event in events:
        kind = type(event).__name__
        if kind in TELEMETRY_TYPES:
            telemetry[source_key(event)] = event
        elif kind == "LogLine":
            lines.append(event)
        elif kind in ("StageProgress", "StageState", "SkippedItem", "TrainProgress"):
            out.append(StageEvent(event))
        elif kind == "SweepEvent":  # the sweep's own events are the Scaling screen's
            out.append(ScalingEvent(event.event))
        elif kind == "SweepEnd":
            out.append(ScalingEnd(event))
        else:
            out.append(JobEvent(event))
    if lines:
        out.insert(0, LogBatch(lines))
    if telemetry:
        out.insert(0, Telemetry(telemetry))
    return out
