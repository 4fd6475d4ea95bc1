"""A job's images/s from its workers' Speedometer readings: live cluster rate, whole-run figures, history.

A reading covers `--disp-batches` batches; a run's figure is never its last reading but all of them
together (or the run's own closing line, as --test-io prints), so one fast or slow interval at the
end cannot stand for the run.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.events import ClusterRate, Throughput

STRAGGLER_K = 0.8
RATE_WINDOW_S = 30.0
HISTORY_POINTS = (
    120  # per host; older points merge pairwise, so the series always spans the whole job
)


class Series:
    """Bounded (time, value) history over a whole run: when full, neighbours merge into one mean point."""

    def __init__(self, limit: int = HISTORY_POINTS) -> None:
        self.limit = max(2, limit)
        self.points: list[tuple[float, float]] = []
        self.span = 1  # readings per point
        self.pending: list[tuple[float, float]] = []

    def add(self, t: float, value: float) -> None:
        self.pending.append((t, value))
        if len(self.pending) < self.span:
            return
        self.points.append(_mean_point(self.pending))
        self.pending = []
        if len(self.points) >= self.limit:
            pairs = zip(self.points[0::2], self.points[1::2])
            self.points = [_mean_point(list(pair)) for pair in pairs]
            self.span *= 2

    def values(self) -> list[float]:
        return [v for _, v in self.points] + (
            [_mean_point(self.pending)[1]] if self.pending else []
        )


def _mean_point(points: list[tuple[float, float]]) -> tuple[float, float]:
    return points[-1][0], sum(v for _, v in points) / len(points)


@dataclass
class WorkerRun:
    """One worker's readings so far: the newest, and what a whole-run figure needs."""

    latest: Throughput
    readings: int = 0
    inverse_sum: float = (
        0.0  # sum of 1/rate: equal images per reading, so the run's rate is n / this
    )
    first: float | None = None  # the first reading (start-up) is left out once there are others
    summary: float | None = None

    def add(self, event: Throughput) -> None:
        self.latest = event
        if event.summary:
            self.summary = event.samples_per_sec
            return
        if event.samples_per_sec <= 0:
            return
        if self.first is None:
            self.first = event.samples_per_sec
            return
        self.readings += 1
        self.inverse_sum += 1.0 / event.samples_per_sec

    @property
    def whole_run(self) -> float | None:
        """The run's images/s: its closing figure, else all readings after the first together."""
        if self.summary is not None:
            return self.summary
        if self.readings:
            return self.readings / self.inverse_sum
        return self.first


@dataclass
class RateBoard:
    """Newest images/s per worker → cluster rate, per-host rates, speedup and stragglers."""

    baseline: float | None = None  # one worker's benchmark rate; None: the fastest worker's
    k: float = STRAGGLER_K
    speedup: bool = True  # a benchmark or test-io run claims no speedup
    workers: dict[tuple[str, int | None], WorkerRun] = field(default_factory=dict)
    history: dict[str, Series] = field(default_factory=dict)  # host -> images/s over the job
    total: Series = field(default_factory=Series)

    def add(self, event: Throughput) -> ClusterRate | None:
        key = (event.host, event.rank)
        run = self.workers.get(key)
        if run is None:
            run = self.workers[key] = WorkerRun(event)
        run.add(event)
        fresh = [
            w.latest for w in self.workers.values() if event.time - w.latest.time <= RATE_WINDOW_S
        ]
        rate = self._cluster(event.job, fresh, event.time)
        if rate is not None and not event.summary:
            self._remember(rate)
        return rate

    def _cluster(self, job: str, fresh: list[Throughput], t: float) -> ClusterRate | None:
        if not fresh:
            return None
        rates = [e.samples_per_sec for e in fresh]
        total = sum(rates)
        median = statistics.median(rates)
        baseline = self._baseline(rates)
        stragglers = tuple(
            f"{e.host}#{e.rank}"
            for e in fresh
            if len(fresh) > 1 and e.samples_per_sec < self.k * median
        )
        return ClusterRate(
            job=job,
            images_per_sec=total,
            workers=len(fresh),
            hosts=_per_host((e.host, e.samples_per_sec) for e in fresh),
            median_worker=median,
            baseline=baseline,
            speedup=total / baseline if baseline else None,
            stragglers=stragglers,
            time=t,
        )

    def _remember(self, rate: ClusterRate) -> None:
        self.total.add(rate.time, rate.images_per_sec)
        for host, value in rate.hosts:
            self.history.setdefault(host, Series()).add(rate.time, value)

    def _baseline(self, rates: list[float]) -> float | None:
        if not self.speedup:
            return None
        return self.baseline or max(rates)

    def whole_runs(self) -> list[tuple[str, float]]:
        """(host, whole-run images/s) of every worker that reported."""
        return [(h, w) for (h, _), run in self.workers.items() if (w := run.whole_run) is not None]

    def host_rates(self) -> tuple[tuple[str, float], ...]:
        """Each host's whole-run images/s (its workers' whole-run figures added)."""
        return _per_host(self.whole_runs())

    def summary(self, job: str, t: float) -> ClusterRate | None:
        """The finished run as one ClusterRate: whole-run figures, not the last readings."""
        runs = self.whole_runs()
        if not runs:
            return None
        rates = [r for _, r in runs]
        total = sum(rates)
        baseline = self._baseline(rates)
        return ClusterRate(
            job=job,
            images_per_sec=total,
            workers=len(runs),
            hosts=_per_host(runs),
            median_worker=statistics.median(rates),
            baseline=baseline,
            speedup=total / baseline if baseline else None,
            time=t,
        )


def _per_host(pairs: Iterable[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    per_host: dict[str, float] = {}
    for host, value in pairs:
        per_host[host] = per_host.get(host, 0.0) + value
    return tuple(sorted(per_host.items()))
