"""The app's one bridge carries the Scaling screen's sweep too: its events go to that screen only."""

from __future__ import annotations

from engine import api
from engine.events import JobState, LogLine
from tui import messages as msg


def test_the_sweeps_events_reach_the_scaling_screen_not_the_consoles_log_or_job_panes():
    own = LogLine("node1", "worker", 0, "Epoch[0] Batch [20]\tSpeed: 100.0 samples/sec")
    sweep_line = LogLine("localhost", "worker", 0, "Epoch[0] Batch [2]\tSpeed: 6.17 samples/sec")
    sweep_job = JobState("bench-1", "running")
    messages = msg.split_batch(
        [api.SweepEvent(sweep_line), own, api.SweepEvent(sweep_job), api.SweepEnd("stopped")]
    )
    assert [type(m).__name__ for m in messages] == [
        "LogBatch",
        "ScalingEvent",
        "ScalingEvent",
        "ScalingEnd",
    ]
    assert messages[0].lines == [own]  # the console's log pane: its workspace's job only
    assert [m.event for m in messages[1:3]] == [sweep_line, sweep_job]  # in order
    assert messages[3].end.outcome == "stopped"
