"""The scaling sweep on the hosts at hand: defaults sized to them, a duration before it starts, per-run progress."""

from __future__ import annotations

from test_bench_report import _collect, _scripted_runner

from engine.bench import scaling
from engine.events import StageProgress


def test_cpu_hosts_get_a_small_network_and_image_gpu_hosts_the_tutorials():
    cpu = scaling.sweep_defaults(0)
    assert cpu["networks"] == "resnet-18:8" and cpu["image_shape"] == "3,32,32"
    assert scaling.sweep_defaults(None) == cpu  # no probe yet: assume no GPU, stay quick
    assert scaling.sweep_defaults(8)["networks"] == "resnet-50:32"


def test_the_estimate_before_a_sweep_is_minutes_on_cpu_defaults_and_grows_with_the_image():
    small = scaling.sweep_config("resnet-18:8", workers="1,2", image_shape="3,32,32")
    seconds = scaling.estimate_seconds(small, gpus=0)
    assert 30 < seconds < 5 * 60
    big = scaling.sweep_config("resnet-50:32", workers="1,2,4")  # 224 px on a CPU: the case
    assert scaling.estimate_seconds(big, gpus=0) > 20 * seconds


async def test_each_run_reports_its_speedometer_readings_as_they_come():
    config = scaling.sweep_config("resnet-18:4", workers="1,2", warmup=1, readings=2)
    runner = _scripted_runner({1: [1.0, 10.0, 10.0], 2: [1.0, 9.0, 9.0]})
    events = await _collect(config, runner)
    readings = [e for e in events if isinstance(e, StageProgress) and e.unit == "readings"]
    one = [(e.done, e.total) for e in readings if e.part == "resnet-18 on 1 worker"]
    assert one == [(1, 3), (2, 3), (3, 3)]
    two = [(e.done, e.total) for e in readings if e.part.endswith("2 workers")]
    assert two[-1] == (6, 6) and len(two) == 6
