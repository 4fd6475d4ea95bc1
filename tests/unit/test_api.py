"""Pure parts of the console API: cluster rate and stragglers, the doctor's verdicts, a stage's stop request."""

from __future__ import annotations

import asyncio

import pytest

from engine import api
from engine.events import StageProgress, StageState, Throughput
from engine.workspace.runner import StageRun


def tp(host: str, rank: int, rate: float, t: float = 100.0) -> Throughput:
    return Throughput(host, rank, rate, time=t)


def test_cluster_rate_sums_workers_and_marks_stragglers_below_k_median():
    board = api.RateBoard(k=0.8)
    for i, rate in enumerate([300.0, 310.0, 290.0, 120.0]):
        rate_event = board.add(tp(f"h{i}", i, rate))
    assert rate_event.images_per_sec == pytest.approx(1020.0)
    assert rate_event.workers == 4
    assert rate_event.stragglers == ("h3#3",)
    assert rate_event.speedup == pytest.approx(
        1020.0 / 310.0
    )  # no benchmark: the fastest worker is the baseline
    assert dict(rate_event.hosts)["h3"] == 120.0


def test_speedup_uses_the_benchmark_baseline_and_forgets_silent_workers():
    board = api.RateBoard(baseline=100.0)
    board.add(tp("a", 0, 90.0, t=0.0))
    latest = board.add(tp("b", 1, 95.0, t=api.RATE_WINDOW_S + 1))
    assert latest.workers == 1  # a's last report is older than the window
    assert latest.speedup == pytest.approx(0.95)


@pytest.mark.parametrize(
    ("speeds", "verdict"),
    [
        ({"test-io": {"a": 500.0}, "benchmark": {"a": 2000.0}, "train": {"a": 480.0}}, "io-bound"),
        (
            {"test-io": {"a": 5000.0}, "benchmark": {"a": 900.0}, "train": {"a": 880.0}},
            "compute-bound",
        ),
        (
            {"test-io": {"a": 5000.0}, "benchmark": {"a": 900.0}, "train": {"a": 300.0}},
            "network-bound",
        ),
        ({"train": {"a": 300.0}}, "unknown"),
        ({}, "unknown"),
    ],
)
def test_doctor_verdicts(speeds, verdict):
    diagnosis = api.diagnose(speeds, api.Topology("dist_sync", workers=4))
    assert diagnosis.verdict == verdict
    assert diagnosis.advice


def test_stage_run_raises_on_stop_and_keeps_counts(tmp_path):
    from engine import workspace as wsmod

    ws = wsmod.create(tmp_path, {"root": "images"})
    seen = []
    run = StageRun(ws, "pack", seen.append)
    run(StageProgress("pack", 3, 10, skipped=1))
    run.stop.set()
    with pytest.raises(api.StageStopped):
        run(StageProgress("pack", 4, 10))
    assert run.counts() == {"done": 4, "total": 10, "unit": "images", "skipped": 1}
    assert len(seen) == 2  # the event that raised still reached the console


def test_a_stage_run_saves_its_end_and_its_last_word(tmp_path):
    from engine import workspace as wsmod

    ws = wsmod.create(tmp_path, {"root": "images"})
    ws.update_stage("place", state="done")
    run = StageRun(ws, "split", lambda event: None)
    run.begin()
    assert ws.stage_record("split")["state"] == "running"
    run(StageState("split", "done", "moved 5 images per class"))
    run.end("done", run.message)
    assert ws.stage_record("split")["message"] == "moved 5 images per class"
    assert ws.stage_record("place")["state"] == "stale"  # its input changed


async def test_unknown_stage_and_undo_of_a_plain_stage_are_refused(tmp_path):
    from engine import workspace as wsmod
    from engine.errors import UserError

    ws = wsmod.create(tmp_path, {"root": "images"})
    session = api.Session(ws, asyncio.get_running_loop())
    with pytest.raises(UserError, match="unknown stage"):
        await session.start_stage("bake")
    with pytest.raises(UserError, match="cannot be undone"):
        await session.undo_stage("pack")
