"""Cluster throughput from each worker's newest images/s: total, per host, speedup and stragglers."""

from __future__ import annotations

import statistics
from collections import deque

from engine.events import ClusterRate, Throughput

STRAGGLER_K = 0.8
RATE_WINDOW_S = 30.0


class RateBoard:
    """Newest images/s per worker → cluster rate, per-host rates, speedup and stragglers."""

    def __init__(self, baseline: float | None = None, k: float = STRAGGLER_K) -> None:
        self.baseline = baseline
        self.k = k
        self.latest: dict[tuple[str, int | None], Throughput] = {}
        self.history: deque[tuple[float, float]] = deque(maxlen=600)

    def add(self, event: Throughput) -> ClusterRate | None:
        self.latest[(event.host, event.rank)] = event
        fresh = [t for t in self.latest.values() if event.time - t.time <= RATE_WINDOW_S]
        if not fresh:
            return None
        rates = [t.samples_per_sec for t in fresh]
        total = sum(rates)
        median = statistics.median(rates)
        baseline = self.baseline or max(rates)
        stragglers = tuple(
            f"{t.host}#{t.rank}"
            for t in fresh
            if len(fresh) > 1 and t.samples_per_sec < self.k * median
        )
        self.history.append((event.time, total))
        return ClusterRate(
            job=event.job,
            images_per_sec=total,
            workers=len(fresh),
            hosts=self.host_rates(fresh),
            median_worker=median,
            baseline=baseline,
            speedup=total / baseline if baseline else None,
            stragglers=stragglers,
            time=event.time,
        )

    def host_rates(self, fresh: list[Throughput] | None = None) -> tuple[tuple[str, float], ...]:
        per_host: dict[str, float] = {}
        for t in fresh if fresh is not None else self.latest.values():
            per_host[t.host] = per_host.get(t.host, 0.0) + t.samples_per_sec
        return tuple(sorted(per_host.items()))
