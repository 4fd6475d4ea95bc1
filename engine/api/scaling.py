"""The scaling sweep as the console sees it: the sweep itself (engine.bench.sweep, as `imgscale bench
scaling` runs it), the tutorial's published table against our model, and the report's rows and plots.
"""

from __future__ import annotations

import math

from engine.bench import model, published
from engine.bench.report import (
    IDEAL,
    TABLE_COLUMNS,
    TextPlot,
    add_speedup,
    speedup_plot,
    speedup_series,
    table_rows,
)
from engine.bench.scaling import STAGE, SweepConfig, estimate_seconds, sweep_config, sweep_defaults
from engine.bench.sweep import Sweep, SweepResult
from engine.events import ScalingPoint
from engine.train.options import KV_STORES


def published_points() -> tuple[list[ScalingPoint], float]:
    """The tutorial's figures as ScalingPoints carrying the model's efficiency, and the model's worst error."""
    rows = model.compare_published()
    per_machine = published.GPUS_PER_MACHINE  # one worker per machine drives its GPUs
    points = [
        ScalingPoint(
            c.network,
            published.PUBLISHED[c.network].batch_per_gpu,
            c.gpus,
            math.ceil(c.gpus / per_machine),
            c.published_images_per_s,
            predicted_efficiency=c.predicted_efficiency,
            time=0.0,
        )
        for c in rows
    ]
    return add_speedup(points), max(abs(c.error_points) for c in rows)


def published_cluster() -> dict[str, object]:
    """The tutorial's cluster, for a caption: machines, GPUs per machine, GPU, Gbit/s, kv-store."""
    return {
        "machines": published.MACHINES,
        "gpus": published.GPUS_PER_MACHINE,
        "gpu": published.GPU,
        "gbits": published.NETWORK_GBITS_S,
        "kv": published.KV_STORE,
    }


__all__ = [
    "estimate_seconds",
    "sweep_defaults",
    "IDEAL",
    "KV_STORES",
    "STAGE",
    "TABLE_COLUMNS",
    "Sweep",
    "SweepConfig",
    "SweepResult",
    "TextPlot",
    "add_speedup",
    "published_cluster",
    "published_points",
    "speedup_plot",
    "speedup_series",
    "sweep_config",
    "table_rows",
]
