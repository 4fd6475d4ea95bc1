"""Numbers the console shows: whole-run rates (never one reading), the doctor's topology, job kinds."""

from __future__ import annotations

import pytest

from engine import api
from engine import workspace as wsmod
from engine.api.plan import train_command
from engine.events import Throughput
from engine.train.launch.registry import job_kind
from engine.train.logparse import LogParser


def reading(rate: float, t: float, host: str = "h", rank: int = 0, **kw) -> Throughput:
    return Throughput(host, rank, rate, time=t, **kw)


def test_test_io_closing_line_is_the_runs_figure_not_its_last_reading():
    parser = LogParser("h", 0, "testio-1")
    events = []
    for text in (
        "test-io: Batch [0-20]\tSpeed: 9000.00 samples/sec",
        "test-io: Batch [20-40]\tSpeed: 233829.00 samples/sec",
        "test-io: 2560 images in 0.254 s: 10096.00 images/sec",
    ):
        events += parser.feed(text, time=1.0)
    assert [e.summary for e in events] == [False, False, True]
    board = api.RateBoard(speedup=False)
    for event in events:
        board.add(event)
    assert board.host_rates() == (("h", 10096.0),)
    final = board.summary("testio-1", 2.0)
    assert final.images_per_sec == 10096.0 and final.speedup is None


def test_whole_run_rate_takes_every_reading_after_the_first_not_the_last():
    board = api.RateBoard()
    for i, rate in enumerate([10.0, 100.0, 100.0, 100.0, 100000.0]):
        board.add(reading(rate, float(i)))
    ((host, rate),) = board.host_rates()
    # equal images per reading: the run's rate is the harmonic mean of readings 2..5
    assert rate == pytest.approx(4 / (3 / 100.0 + 1 / 100000.0))
    assert rate < 140


def test_a_benchmark_or_test_io_board_claims_no_speedup():
    live = api.RateBoard(speedup=False).add(reading(500.0, 1.0))
    assert live.speedup is None and live.baseline is None


def test_history_spans_the_whole_job_in_bounded_points():
    series = api.Series(limit=8)
    for i in range(1000):
        series.add(float(i), float(i))
    values = series.values()
    assert len(values) <= 9
    assert values[0] < 100 and values[-1] > 900  # the first minutes are still there


@pytest.mark.parametrize(
    ("topology", "verdict"),
    [
        (api.Topology("local", workers=1), "compute-bound"),
        (api.Topology("dist_sync", workers=1), "compute-bound"),
        (api.Topology("dist_sync", workers=4), "network-bound"),
    ],
)
def test_doctor_blames_the_network_only_when_gradients_cross_it(topology, verdict):
    speeds = {"test-io": {"a": 10096.0}, "benchmark": {"a": 60.0}, "train": {"a": 30.0}}
    diagnosis = api.diagnose(speeds, topology, {"benchmark": "bench-1", "train": "train-2"})
    assert diagnosis.verdict == verdict
    if verdict != "network-bound":
        assert not any("servers" in a or "dist_device_sync" in a for a in diagnosis.advice)
    assert "benchmark 60 img/s (bench-1)" in diagnosis.basis
    assert "training" not in diagnosis.basis or "train 30" in diagnosis.basis
    assert topology.kv_store in diagnosis.basis


def test_io_slower_than_compute_without_network_is_io_bound():
    speeds = {"test-io": {"a": 40.0}, "benchmark": {"a": 200.0}, "train": {"a": 20.0}}
    assert api.diagnose(speeds, api.Topology("local", 1)).verdict == "io-bound"


def test_benchmark_and_test_io_runs_never_name_the_training_model_prefix(tmp_path):
    ws = wsmod.create(tmp_path / "ws", {"root": "images"})
    prefix = str(ws.resolve(ws.train_options().train.model_prefix))
    assert prefix in train_command(ws, "train")
    for mode in ("benchmark", "test-io"):
        command = train_command(ws, mode)
        assert "--model-prefix" not in command and prefix not in command


def test_job_kind_names_benchmark_and_test_io_runs():
    assert job_kind(("python", "-m", "engine", "train", "--benchmark")) == "bench"
    assert job_kind(("python", "-m", "engine", "train", "--test-io")) == "testio"
    assert job_kind(("python", "-m", "engine", "train")) == "train"
