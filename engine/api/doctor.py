"""The doctor: from per-host images/s of --test-io, --benchmark and the real job, what bounds a job."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnosis:
    """The doctor's verdict: which of IO, compute or network bounds the job, per host, and what to try."""

    verdict: str  # io-bound | compute-bound | network-bound | unknown
    rows: tuple[
        tuple[str, float | None, float | None, float | None], ...
    ]  # host, test-io, benchmark, real
    advice: tuple[str, ...] = ()


def diagnose(speeds: dict[str, dict[str, float]]) -> Diagnosis:
    """Compare per-host images/s of --test-io (data only), --benchmark (no data) and the real job.

    Real speed near the test-io speed and well below benchmark: reading/decoding bounds it (IO).
    Real near benchmark: the GPUs (compute) bound it. Benchmark itself far below a one-host
    benchmark, or real well below both: communication (network) bounds it.
    """
    test_io, bench, real = (speeds.get(k, {}) for k in ("test-io", "benchmark", "train"))
    hosts = sorted(set(test_io) | set(bench) | set(real))
    rows = tuple((h, test_io.get(h), bench.get(h), real.get(h)) for h in hosts)
    if not hosts:
        return Diagnosis(
            "unknown", rows, ("run --test-io (i), --benchmark (b) and a training job (l) first",)
        )
    t = _median_of(test_io)
    b = _median_of(bench)
    r = _median_of(real)
    if r is None or (t is None and b is None):
        missing = [
            name
            for name, v in (("--test-io (i)", t), ("--benchmark (b)", b), ("training (l)", r))
            if v is None
        ]
        return Diagnosis("unknown", rows, (f"measure {', '.join(missing)} to compare",))
    if t is not None and t < (b or float("inf")) and r >= 0.8 * t:
        return Diagnosis(
            "io-bound",
            rows,
            (
                "raise --data-nthreads (n) so decoding keeps up",
                "pack with a smaller --resize or use --no-upscale so each image decodes faster",
                "put the .rec files on a local disk or faster shared filesystem",
            ),
        )
    if b is not None and r >= 0.8 * b:
        return Diagnosis(
            "compute-bound",
            rows,
            ("the GPUs are the limit: a larger batch per GPU, --dtype float16, or more GPUs",),
        )
    return Diagnosis(
        "network-bound",
        rows,
        (
            "gradients exchange is the limit: add servers (one per worker host), use dist_device_sync",
            "a larger batch per GPU sends fewer updates per image; check the hosts' link speed",
        ),
    )


def _median_of(values: dict[str, float]) -> float | None:
    return statistics.median(values.values()) if values else None
