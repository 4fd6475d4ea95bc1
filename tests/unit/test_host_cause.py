"""Each host's cause of slowness from live utilisation, its rate and its last test-io/benchmark figures."""

from __future__ import annotations

import json

import pytest

from engine import api
from engine.cluster.probes.export import GRID_FIELDS, grid_rows, to_csv
from engine.events import GpuSample, HostSample, HostState

DIST = api.Topology("dist_sync", workers=4)


@pytest.mark.parametrize(
    ("reading", "topology", "cause"),
    [
        (api.HostReading(480.0, test_io=500.0, benchmark=2000.0), DIST, "input"),
        (api.HostReading(880.0, test_io=5000.0, benchmark=900.0), DIST, "compute"),
        (api.HostReading(300.0, gpu_util=95.0, cpu_percent=30.0), DIST, "compute"),
        (api.HostReading(300.0, gpu_util=40.0, cpu_percent=97.0), DIST, "input"),
        (api.HostReading(300.0, gpu_util=40.0, cpu_percent=20.0), DIST, "network"),
        (api.HostReading(300.0, gpu_util=40.0, cpu_percent=20.0), api.Topology("local"), "input"),
        (api.HostReading(30.0, cpu_percent=99.0), api.Topology("local"), "compute"),
        (api.HostReading(None, gpu_util=99.0), DIST, ""),
    ],
)
def test_host_cause(reading, topology, cause):
    assert api.host_cause(reading, topology) == cause
    assert (api.CAUSE_ADVICE.get(cause) is not None) == bool(cause)


def test_grid_rows_summarise_gpus_and_keep_missing_values_empty():
    events = [
        HostState("b", False, "timeout"),
        HostState("a", True),
        HostSample("a", cpu_percent=50.0, gpu_count=2),
        GpuSample("a", 0, util_percent=80.0),
        GpuSample("a", 1, util_percent=None),
    ]
    rows = grid_rows(events, {"a": 123.0})
    assert [r["host"] for r in rows] == ["a", "b"]
    assert rows[0]["gpu_util_mean"] == 80.0 and rows[0]["images_per_sec"] == 123.0
    assert len(rows[0]["gpus"]) == 2 and rows[1]["reason"] == "timeout"
    text = to_csv(rows, GRID_FIELDS)
    assert text.splitlines()[0].split(",") == list(GRID_FIELDS)
    assert text.splitlines()[2].startswith("b,False,timeout,,")
    json.dumps(rows)  # every value is plain JSON


def test_probe_json_prints_the_grid_of_this_machine(capsys):
    from engine.cli import main

    assert main(["probe", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["host"] and row["reachable"] is True and set(GRID_FIELDS) <= set(row)
