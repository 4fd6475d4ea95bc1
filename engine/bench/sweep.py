"""One scaling sweep from the first run to the files: every run's events, the model's predictions, the outputs.

`imgscale bench scaling` (engine.bench.cli_bench, through ``run_sweep``) and the console's Scaling
screen (through engine.api) drive the same ``Sweep``::

    sweep = Sweep(config, network_gbits=10.0)
    async with contextlib.aclosing(sweep.events()) as events:  # closing stops the running job
        async for event in events:
            ...  # engine.bench.scaling.sweep_events: progress, job events, one ScalingPoint per cell
    result = await sweep.finish(sink)  # predictions (with a bandwidth), then the files (with out_dir)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from engine.bench import bandwidth, model, report
from engine.bench.scaling import STAGE, JobRunner, SweepConfig, image_shape_for, sweep_events
from engine.errors import UserError
from engine.events import Event, Failure, ScalingPoint, StageState

Sink = Callable[[Event], None]


@dataclass(frozen=True)
class SweepResult:
    points: tuple[ScalingPoint, ...]
    files: dict[str, Path]


class Sweep:
    """A sweep's events, the newest point of each cell, and its end: predictions and files."""

    def __init__(
        self,
        config: SweepConfig,
        network_gbits: float | None = None,
        runner: JobRunner | None = None,
    ) -> None:
        self.config = config
        self.network_gbits = network_gbits
        self.runner = runner
        self.latest: dict[tuple[str, int], ScalingPoint] = {}

    async def events(self) -> AsyncGenerator[Event, None]:
        """Every event of every run; closing this generator stops the running job on every host."""
        async with contextlib.aclosing(sweep_events(self.config, self.runner)) as events:
            async for event in events:
                if isinstance(event, ScalingPoint):
                    self.latest[(event.network, event.gpus)] = event
                yield event

    def points(self) -> list[ScalingPoint]:
        return report.add_speedup(self.latest.values())

    async def finish(self, sink: Sink) -> SweepResult:
        """Add the model's efficiency (with a bandwidth) and write the files (with out_dir).

        A model that cannot run is one Failure: the measured figures still count and are written.
        """
        points = self.points()
        if self.network_gbits and any(p.images_per_sec for p in points):
            sink(StageState(STAGE, "running", "predicting with the model …"))
            try:
                points = await asyncio.to_thread(
                    predicted_points, self.config, points, self.network_gbits
                )
            except UserError as exc:
                sink(Failure("model", str(exc)))
        files: dict[str, Path] = {}
        if self.config.out_dir is not None and points:
            meta = {**sweep_meta(self.config), "network_gbits": self.network_gbits}
            files = await asyncio.to_thread(write_outputs, points, self.config.out_dir, meta)
        return SweepResult(tuple(points), files)


def run_sweep(
    config: SweepConfig,
    sink: Sink,
    network_gbits: float | None = None,
    runner: JobRunner | None = None,
) -> SweepResult:
    """The CLI's blocking sweep: feed every event to ``sink``, then predict and write the outputs."""

    async def drive() -> SweepResult:
        sweep = Sweep(config, network_gbits, runner)
        async with contextlib.aclosing(sweep.events()) as events:
            async for event in events:
                sink(event)
        return await sweep.finish(sink)

    return asyncio.run(drive())


def write_outputs(points: Iterable[ScalingPoint], out_dir: Path, meta: dict) -> dict[str, Path]:
    """table.txt, scaling.csv, scaling.json and scaling.png in ``out_dir``."""
    points = list(points)
    out_dir = Path(out_dir)
    files = {
        "table": report.write_text(out_dir / "table.txt", report.format_report(points) + "\n"),
        "csv": report.write_text(out_dir / "scaling.csv", report.to_csv(points)),
        "json": report.write_text(out_dir / "scaling.json", report.to_json(points, meta)),
    }
    if report.can_plot():  # the plot is an extra: without it the numbers are all still written
        files["png"] = report.write_png(
            points,
            out_dir / "scaling.png",
            title=f"Speedup against ideal ({meta.get('kv_store', '')})",
        )
    return files


def sweep_meta(config: SweepConfig) -> dict:
    return {
        "kv_store": config.kv_store,
        "hosts_file": config.hosts_file,
        "warmup_readings": config.warmup,
        "kept_readings": config.readings,
        "disp_batches": config.disp_batches,
        "servers": config.servers,
        "synthetic_data": True,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def network_facts(network: str, image_shape: str, num_classes: int) -> model.NetworkFacts:
    """The model's facts for a network as our trainer builds it (a subprocess: no mxnet here)."""
    options = bandwidth.WorkerOptions(
        network=network, image_shape=image_shape, num_classes=num_classes
    )
    argv = bandwidth.worker_argv(sys.executable, options, "describe")
    out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise UserError(f"cannot describe {network}: {out.stderr.strip().splitlines()[-1:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return model.NetworkFacts(network, data["params"], data["largest_array"])


def predicted_points(
    config: SweepConfig, points: Sequence[ScalingPoint], network_gbits: float
) -> list[ScalingPoint]:
    """Attach the model's efficiency to every point, calibrated on each network's smallest run."""
    predicted = {}
    for run in config.runs:
        base = min(
            (p for p in points if p.network == run.network.name and p.images_per_sec),
            key=lambda p: p.gpus,
            default=None,
        )
        if base is None or base.images_per_sec is None:
            continue
        facts = network_facts(
            run.network.name, image_shape_for(config, run.network), config.num_classes
        )
        cluster = model.Cluster(
            gpus_per_machine=max(1, run.gpus_per_worker),
            servers=config.servers,
            network_gbits_s=network_gbits,
        )
        one = base.images_per_sec / base.gpus  # per-device rate at the smallest size
        p = model.predict(facts, run.network.batch_per_gpu, one, run.devices, cluster)
        predicted[(run.network.name, run.devices)] = p.efficiency
    return with_predictions(points, predicted)


def with_predictions(
    points: Sequence[ScalingPoint], predicted: dict[tuple[str, int], float]
) -> list[ScalingPoint]:
    """Attach the model's efficiency to each point that has one."""
    return [replace(p, predicted_efficiency=predicted.get((p.network, p.gpus))) for p in points]
