"""How fast the workspace's jobs run: the running job's rate board, each mode's last whole-run figures
per host (test-io, benchmark, train), and what the doctor and the hosts grid's cause read from them.
"""

from __future__ import annotations

from engine import workspace as wsmod
from engine.events import ClusterRate, Event, Throughput
from engine.train.doctor import Diagnosis, HostReading, Topology, diagnose, host_cause
from engine.train.rates import RateBoard, Series


class Speeds:
    """The rate board of the job being followed and the speeds kept in the workspace for the doctor."""

    def __init__(self, ws: wsmod.Workspace, hosts: tuple[str, ...]) -> None:
        self.workspace = ws
        self.hosts = hosts
        self.rates = RateBoard()
        # mode -> host -> images/s over that mode's last whole run
        self.by_mode: dict[str, dict[str, float]] = {
            k: dict(v) for k, v in ws.state.get("speeds", {}).items()
        }

    def rate_of(self, event: Event) -> ClusterRate | None:
        """The cluster's rate after a worker's reading (the stream adds it after the reading)."""
        return self.rates.add(event) if isinstance(event, Throughput) else None

    def new_job(self, mode: str) -> None:
        """A new board for a job: a training job's speedup is against one benchmarked worker."""
        self.rates = RateBoard(baseline=self.baseline(), speedup=mode == "train")

    def job_ended(self, job_id: str, mode: str, at: float) -> ClusterRate | None:
        """Keep each host's whole-run images/s under the job's mode; the run's summary rate."""
        per_host = dict(self.rates.host_rates())
        if per_host:
            self.by_mode[mode] = per_host
            self.workspace.set_speeds(mode, per_host, job_id)
        return self.rates.summary(job_id, at)

    def history(self) -> dict[str, Series]:
        """Host -> images/s over the whole job (every reading, none coalesced away)."""
        return self.rates.history

    def host_rates(self) -> dict[str, float]:
        return dict(self.rates.host_rates())

    def baseline(self) -> float | None:
        """One worker's benchmark rate: the slowest host's whole-run figure over its workers."""
        bench = self.workspace.state.get("speeds", {}).get("benchmark", {})
        return min(bench.values()) / max(1, self._workers_per_host()) if bench else None

    def _workers_per_host(self) -> int:
        workers = self.workspace.train_options().job.workers or len(self.hosts) or 1
        return max(1, -(-workers // max(1, len(self.hosts))))

    def topology(self) -> Topology:
        opts = self.workspace.train_options()
        workers = opts.job.workers or len(self.hosts) or 1
        return Topology(opts.train.kv_store, workers, opts.train.engine)

    def diagnosis(self) -> Diagnosis:
        return diagnose(self.by_mode, self.topology(), self.workspace.state.get("speed_jobs", {}))

    def host_reading(
        self, host: str, rate: float | None, gpu_util: float | None, cpu: float | None
    ) -> HostReading:
        """A host's live figures with its last --test-io and --benchmark ones (for its cause)."""
        test_io = self.by_mode.get("test-io", {}).get(host)
        bench = self.by_mode.get("benchmark", {}).get(host)
        return HostReading(rate, gpu_util, cpu, test_io, bench)

    def host_cause(
        self, host: str, rate: float | None, gpu_util: float | None, cpu: float | None
    ) -> str:
        """input | compute | network | "" (not enough to say) for one host's live figures."""
        return host_cause(self.host_reading(host, rate, gpu_util, cpu), self.topology())
