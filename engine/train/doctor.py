"""The doctor: is a job bound by its input (reading, decoding), its compute, or its network?

It compares per-host whole-run images/s of --test-io (data only), --benchmark (no data) and the real
job, and it follows the job's topology: a local kvstore or a single worker exchanges no gradients over
the network, so the network is never blamed there.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from engine.train.launch import registry

MODES = (("test-io", "--test-io (i)"), ("benchmark", "--benchmark (b)"), ("train", "training (l)"))
NEAR = 0.8  # a rate within 80 % of another counts as bound by the same thing


@dataclass(frozen=True)
class Topology:
    """What the doctor needs to know about the job's shape."""

    kv_store: str = "dist_sync"
    workers: int = 1
    engine: str = registry.DEFAULT

    @property
    def uses_network(self) -> bool:
        return registry.engine_named(self.engine).crosses_hosts(self.kv_store, self.workers)

    def describe(self) -> str:
        return f"kv-store {self.kv_store}, {self.workers} worker{'s' if self.workers != 1 else ''}"


@dataclass(frozen=True)
class Diagnosis:
    """The verdict, the per-host rows it compared, what to try, and the measurements it rests on."""

    verdict: str  # io-bound | compute-bound | network-bound | unknown
    rows: tuple[
        tuple[str, float | None, float | None, float | None], ...
    ]  # host, test-io, bench, real
    advice: tuple[str, ...] = ()
    basis: str = ""  # "rests on: training 45 img/s (train-…), benchmark 50 img/s (bench-…)"


IO_ADVICE = (
    "raise --data-nthreads (n) so decoding keeps up",
    "pack with a smaller --resize so each image decodes faster",
    "put the .rec files on a local disk or faster shared filesystem",
)
COMPUTE_ADVICE = (
    "the devices are the limit: a larger batch per GPU, --dtype float16, or more GPUs",
)
NETWORK_ADVICE = (
    "gradient exchange is the limit: add servers (one per worker host), use dist_device_sync",
    "a larger batch per GPU sends fewer updates per image; check the hosts' link speed",
)


def diagnose(
    speeds: dict[str, dict[str, float]],
    topology: Topology = Topology(),
    jobs: dict[str, str] | None = None,
) -> Diagnosis:
    """Per-host speeds by mode (test-io, benchmark, train) → verdict, advice and what it rests on."""
    test_io, bench, real = (speeds.get(mode, {}) for mode, _ in MODES)
    hosts = sorted(set(test_io) | set(bench) | set(real))
    rows = tuple((h, test_io.get(h), bench.get(h), real.get(h)) for h in hosts)
    medians = {mode: _median(speeds.get(mode, {})) for mode, _ in MODES}
    basis = _basis(medians, jobs or {}, topology)
    t, b, r = medians["test-io"], medians["benchmark"], medians["train"]
    if r is None or (t is None and b is None):
        missing = [label for mode, label in MODES if medians[mode] is None]
        return Diagnosis("unknown", rows, (f"measure {', '.join(missing)} to compare",), basis)
    verdict = _verdict(t, b, r, topology)
    advice = {"io-bound": IO_ADVICE, "compute-bound": COMPUTE_ADVICE}.get(verdict, NETWORK_ADVICE)
    return Diagnosis(verdict, rows, advice, basis)


def _verdict(t: float | None, b: float | None, r: float, topology: Topology) -> str:
    if t is not None and t < (b or float("inf")) and r >= NEAR * t:
        return "io-bound"
    if b is not None and r >= NEAR * b:
        return "compute-bound"
    if topology.uses_network:
        return "network-bound"
    # No gradient exchange: the slower of reading and computing bounds the job (on a CPU host the
    # decoding threads and the network also share the same cores).
    if t is not None and (b is None or t <= b):
        return "io-bound"
    return "compute-bound"


def _basis(medians: dict[str, float | None], jobs: dict[str, str], topology: Topology) -> str:
    parts = [
        f"{mode} {value:,.0f} img/s" + (f" ({jobs[mode]})" if mode in jobs else "")
        for mode, value in medians.items()
        if value is not None
    ]
    measured = "; ".join(parts) if parts else "no measurement yet"
    return f"rests on: {measured}; topology: {topology.describe()}"


def _median(values: dict[str, float]) -> float | None:
    return statistics.median(values.values()) if values else None


CAUSE_ADVICE = {
    "input": "raise --data-nthreads (n) or pack smaller images",
    "compute": "larger batch per GPU, --dtype float16, or more GPUs",
    "network": "add servers or use dist_device_sync",
}
BUSY = 85.0  # % CPU (all cores) or GPU utilisation that counts as saturated


@dataclass(frozen=True)
class HostReading:
    """What is known of one host right now, for its cause of slowness."""

    rate: float | None = None  # images/s of its workers (Speedometer)
    gpu_util: float | None = None  # mean % over its GPUs; None without GPUs or data
    cpu_percent: float | None = None  # the whole host's CPU, where the data threads decode
    test_io: float | None = None  # its last --test-io figure
    benchmark: float | None = None  # its last --benchmark figure


def host_cause(r: HostReading, topology: Topology = Topology()) -> str:
    """input | compute | network | "" (not enough to say) for one host.

    Its last test-io/benchmark figures decide when the job's rate sits near one of them; else live
    utilisation does: busy GPUs mean compute, idle GPUs with busy CPUs mean decoding (input), idle
    GPUs and idle CPUs in a distributed job mean the workers wait on the network.
    """
    if r.rate is None:
        return ""
    if r.test_io and r.rate >= NEAR * r.test_io and r.test_io < (r.benchmark or float("inf")):
        return "input"
    if r.benchmark and r.rate >= NEAR * r.benchmark:
        return "compute"
    if r.gpu_util is not None:
        if r.gpu_util >= BUSY:
            return "compute"
        if r.cpu_percent is not None and r.cpu_percent >= BUSY:
            return "input"
        return "network" if topology.uses_network else "input"
    if r.cpu_percent is not None and r.cpu_percent >= BUSY:
        return "compute"  # no GPU: the CPUs train, and decoding shares them
    return "network" if topology.uses_network and r.cpu_percent is not None else ""
