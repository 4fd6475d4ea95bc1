"""The CLI's plain progress line: count, bytes, rate, ETA, skipped."""

import io

from engine.cli_progress import CliProgress, human_bytes, human_duration, progress_line
from engine.events import SkippedItem, StageProgress


def test_line_shows_count_bytes_rate_eta_and_skipped():
    event = StageProgress(
        "pack", done=50, total=100, bytes_done=3 * 1024 * 1024, skipped=2, part="train_0"
    )
    line = progress_line(event, elapsed_s=10.0)
    assert "50/100 images" in line and "3.0 MiB" in line and "5.0/s" in line
    assert "ETA 00:10" in line and "skipped 2" in line and "train_0" in line


def test_instant_stage_shows_no_absurd_rate():
    line = progress_line(StageProgress("filter", done=1000, total=1000), elapsed_s=0.001)
    assert "--/s" in line


def test_unknown_total_shows_count_without_eta():
    line = progress_line(
        StageProgress("extract", done=7, total=None, unit="classes"), elapsed_s=2.0
    )
    assert "7 classes" in line and "ETA --:--" in line


def test_non_tty_sink_prints_skips_and_final_progress():
    out = io.StringIO()
    sink = CliProgress(stream=out)
    sink(SkippedItem("pack", "a/b.JPEG", "truncated JPEG"))
    sink(StageProgress("pack", done=3, total=3))
    text = out.getvalue()
    assert "skipped a/b.JPEG: truncated JPEG" in text and "3/3 images" in text


def test_human_units():
    assert (
        human_bytes(None) == "N/A"
        and human_bytes(512) == "512 B"
        and human_bytes(1536) == "1.5 KiB"
    )
    assert human_duration(3725) == "1:02:05" and human_duration(None) == "--:--"
    # a clock that went backwards or a rate of 0 gives no ETA rather than a negative one
    assert {human_duration(v) for v in (-1.0, float("nan"), float("inf"))} == {"--:--"}


def test_log_file_shows_each_completion_once():
    out = io.StringIO()
    sink = CliProgress(stream=out)
    for _ in range(3):
        sink(StageProgress("pack", done=5, total=5, part="train_0"))
    assert out.getvalue().count("5/5 images") == 1
