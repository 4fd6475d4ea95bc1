"""The demo's own launch dialogs raise no warning about the demo's own settings."""

from __future__ import annotations

from engine import api
from engine.train.check import WARNING, run_checks
from engine.train.facts import Facts
from engine.train.options import TrainOptions


async def test_the_prepared_demo_plans_every_mode_without_warnings(prepared_ws):
    session = await api.open_workspace(prepared_ws, telemetry=False)
    try:
        for mode in ("train", "benchmark", "test-io"):
            plan = await session.plan_launch(mode)
            assert not any(f.startswith(("warning", "error")) for f in plan.findings), (
                mode,
                plan.findings,
            )
        bench = await session.plan_launch("benchmark")
        assert not any("--num-classes" in f or "crops" in f for f in bench.findings)
    finally:
        await session.close()


def test_a_benchmark_hears_nothing_about_data_it_does_not_read():
    facts = dict(packed_edge=480, packed_edge_source="first records", missing_data=["/nope"])
    assert any(f.level == WARNING for f in run_checks(Facts(**facts)))
    quiet = run_checks(Facts(train=TrainOptions(benchmark=True), **facts))
    assert not any("crops" in f.what or "/nope" in f.what for f in quiet)
