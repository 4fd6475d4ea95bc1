"""Scaling results as table, CSV, JSON, PNG and braille plot; the sweep's pure parts; bandwidth line parsing."""

import csv
import io
import json
import subprocess
import sys

import pytest

from engine.bench import bandwidth, report, scaling, sweep
from engine.bench.scaling import NetworkSpec, RunPlan, RunTally, SweepConfig
from engine.errors import UserError
from engine.events import ScalingPoint, Throughput


def _points():
    raw = [
        ScalingPoint("alexnet", 512, 1, 1, 457.07),
        ScalingPoint("alexnet", 512, 2, 2, 870.43, per_worker=(435.0, 435.43), readings=6),
        ScalingPoint("alexnet", 512, 4, 4, 1514.8),
        ScalingPoint("resnet-152", 32, 1, 1, 20.8),
        ScalingPoint("resnet-152", 32, 2, 2, 38.76),
        ScalingPoint("resnet-152", 32, 4, 4, None, message="worker 3 on node4: out of memory"),
    ]
    return report.add_speedup(raw)


def test_speedup_and_efficiency_are_against_the_smallest_size():
    pts = {(p.network, p.gpus): p for p in _points()}
    assert pts["alexnet", 1].speedup == pytest.approx(1.0)
    assert pts["alexnet", 2].speedup == pytest.approx(870.43 / 457.07)
    assert pts["alexnet", 4].efficiency == pytest.approx(1514.8 / 457.07 / 4)
    assert pts["resnet-152", 4].speedup is None


def test_speedup_when_the_sweep_does_not_start_at_one_gpu():
    pts = report.add_speedup([ScalingPoint("n", 8, 2, 2, 100.0), ScalingPoint("n", 8, 4, 4, 180.0)])
    assert [p.speedup for p in pts] == pytest.approx(
        [2.0, 3.6]
    )  # ideal speedup equals the GPU count


def test_tutorial_table_has_a_row_per_gpu_count_and_a_column_per_network():
    text = report.tutorial_table(_points())
    lines = text.splitlines()
    assert lines[0].split() == ["#GPUs", "alexnet", "resnet-152"]
    assert lines[2].startswith("1") and "457.1 (1.00x, 100%)" in lines[2]
    assert "1,514.8 (3.31x, 83%)" in lines[4] and "failed" in lines[4]


def test_report_lists_failed_runs_with_their_reason():
    text = report.format_report(_points())
    assert "resnet-152 on 4: worker 3 on node4: out of memory" in text
    assert "efficiency" in text


def test_csv_round_trips_every_point():
    rows = list(csv.DictReader(io.StringIO(report.to_csv(_points()))))
    assert len(rows) == 6
    assert rows[1]["images_per_sec"] == "870.43" and rows[1]["per_worker"] == "435.000;435.430"
    assert float(rows[2]["efficiency"]) == pytest.approx(1514.8 / 457.07 / 4, rel=1e-5)
    assert rows[5]["images_per_sec"] == "" and "out of memory" in rows[5]["message"]


def test_json_has_meta_and_ideal_speedup():
    data = json.loads(report.to_json(_points(), {"kv_store": "dist_sync"}))
    assert data["meta"] == {"kv_store": "dist_sync"}
    assert [p["ideal_speedup"] for p in data["points"]] == [1, 2, 4, 1, 2, 4]
    assert data["points"][5]["images_per_sec"] is None


def test_png_is_written_atomically(tmp_path):
    path = report.write_png(_points(), tmp_path / "out" / "scaling.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["scaling.png"]  # no temporary left behind


def test_report_module_does_not_import_matplotlib():
    code = (
        "import sys, engine.bench.report, engine.bench.scaling; print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _braille_dots(plot):
    return sum(
        (ord(c) - report.BRAILLE_BASE).bit_count()
        for line in plot.lines
        for c in line
        if report.BRAILLE_BASE < ord(c) <= report.BRAILLE_BASE + 0xFF
    )


def test_braille_plot_marks_each_series_and_draws_the_ideal_diagonal():
    plot = report.speedup_plot(report.speedup_series(_points()), width=40, height=10)
    assert {name: mark for mark, name in plot.legend} == {"alexnet": "a", "resnet-152": "r"}
    body = plot.lines[:10]
    assert all(len(line) == len(body[0]) for line in body)
    # one mark per measured point; at (1, 1) both networks meet and the later one is shown
    assert sum(line.count("a") for line in body) == 2
    assert sum(line.count("r") for line in body) == 2
    assert _braille_dots(plot) > 20
    assert "ideal" in plot.lines[-1] and "a alexnet" in plot.lines[-1]
    # the ideal line runs from the bottom-left to the top-right corner of the plot area
    assert plot.owners[9][plot.lines[9].index("┤") + 1] in (report.IDEAL, 0, 1)


def test_braille_plot_owners_align_with_text():
    plot = report.speedup_plot([("tiny", [(1.0, 1.0), (2.0, 1.7)])], width=20, height=6)
    assert len(plot.owners) == len(plot.lines)
    for line, owners in zip(plot.lines, plot.owners):
        assert len(owners) == len(line)
    marked = [
        (r, c) for r, line in enumerate(plot.lines[:6]) for c, ch in enumerate(line) if ch == "t"
    ]
    assert len(marked) == 2 and all(plot.owners[r][c] == 0 for r, c in marked)


def test_braille_plot_of_nothing_still_draws_axes():
    plot = report.speedup_plot([], width=10, height=4)
    assert len(plot.lines) == 4 + 3


def test_log_axes_only_for_wide_sweeps():
    assert report.use_log_axes([("n", [(1, 1), (256, 200)])])
    assert not report.use_log_axes([("n", [(1, 1), (2, 1.8)])])


# --- sweep: pure parts ---


def test_networks_and_sizes_are_parsed_and_mistakes_named():
    specs = scaling.parse_networks("alexnet:512, inception-v3:32,resnet-152:32")
    assert [(s.name, s.base, s.layers, s.batch_per_gpu) for s in specs] == [
        ("alexnet", "alexnet", 0, 512),
        ("inception-v3", "inception-v3", 0, 32),
        ("resnet-152", "resnet", 152, 32),
    ]
    with pytest.raises(UserError, match="network:batch-per-GPU"):
        scaling.parse_networks("alexnet")
    with pytest.raises(UserError, match="unknown network"):
        scaling.parse_networks("lenet:8")
    assert scaling.parse_sizes("4,1,2,2", "--workers") == [1, 2, 4]
    with pytest.raises(UserError, match="--workers"):
        scaling.parse_sizes("1,x", "--workers")


def test_gpu_sweep_fills_hosts_with_one_worker_each():
    runs = scaling.plan_runs(
        [NetworkSpec("resnet-152", 32)], gpus=[1, 8, 16, 32, 256], gpus_per_host=16
    )
    assert [(r.workers, r.gpus_per_worker, r.devices, r.batch_per_worker) for r in runs] == [
        (1, 1, 1, 32),
        (1, 8, 8, 256),
        (1, 16, 16, 512),
        (2, 16, 32, 512),
        (16, 16, 256, 512),
    ]
    with pytest.raises(UserError, match="multiple of --gpus-per-host"):
        scaling.plan_runs([NetworkSpec("alexnet", 8)], gpus=[24], gpus_per_host=16)
    with pytest.raises(UserError, match="either --workers"):
        scaling.plan_runs([NetworkSpec("alexnet", 8)], gpus=[1], workers=[1], gpus_per_host=1)


def test_default_worker_command_is_imgscale_train_benchmark():
    config = SweepConfig(runs=(), warmup=2, readings=3, disp_batches=4, python="py")
    argv = scaling.train_argv(config, RunPlan(NetworkSpec("resnet-152", 32), 2, 4))
    assert argv[:5] == ["py", "-m", "engine.cli", "train", "--benchmark"]
    words = dict(zip(argv[5::2], argv[6::2]))
    assert words["--network"] == "resnet" and words["--num-layers"] == "152"
    assert words["--batch-size"] == "128"  # per worker: 32 per GPU × 4 GPUs
    assert words["--gpus"] == "0,1,2,3" and words["--kv-store"] == "dist_sync"
    assert words["--num-batches"] == str((2 + 3 + scaling.SPARE_READINGS) * 4 + 1)


def test_command_template_placeholders():
    config = SweepConfig(
        runs=(), command="{python} w.py --bs {batch_size} --net {name}", python="py"
    )
    assert scaling.train_argv(config, RunPlan(NetworkSpec("alexnet", 8), 1, 0)) == [
        "py",
        "w.py",
        "--bs",
        "8",
        "--net",
        "alexnet",
    ]
    with pytest.raises(UserError, match="unknown placeholder"):
        scaling.train_argv(
            SweepConfig(runs=(), command="x {nope}"), RunPlan(NetworkSpec("alexnet", 8), 1, 0)
        )


def test_steady_state_drops_warmup_and_takes_the_median_per_worker_summed():
    run = RunPlan(NetworkSpec("resnet-18", 4), 2, 0)
    tally = RunTally(workers=2, warmup=2, readings=3)
    for rank, values in {0: [5, 50, 100, 110, 90], 1: [1, 2, 200, 220, 210]}.items():
        for v in values:
            assert not tally.complete
            tally.add(Throughput("h", rank, float(v)))
    assert tally.complete
    point = scaling.point_from_tally(run, tally, job="j")
    assert point.per_worker == (100.0, 210.0) and point.images_per_sec == 310.0
    assert (point.gpus, point.workers, point.readings, point.job) == (2, 2, 6, "j")


def test_a_faster_worker_extra_readings_do_not_count():
    """The run stops once the slowest worker has its readings; the fastest may have logged more."""
    run = RunPlan(NetworkSpec("resnet-18", 4), 2, 0)
    tally = RunTally(workers=2, warmup=1, readings=2)
    for v in (5, 100, 100, 1000, 1000):  # rank 0 ran ahead: its last two readings are extra
        tally.add(Throughput("h", 0, float(v)))
    for v in (5, 50, 50):
        tally.add(Throughput("h", 1, float(v)))
    point = scaling.point_from_tally(run, tally)
    assert point.per_worker == (100.0, 50.0) and point.readings == 4


def test_a_worker_without_readings_makes_the_point_a_failure():
    tally = RunTally(workers=2, warmup=1, readings=1)
    tally.add(Throughput("h", 0, 10.0))
    tally.add(Throughput("h", 0, 12.0))
    point = scaling.point_from_tally(RunPlan(NetworkSpec("alexnet", 8), 2, 0), tally)
    assert point.images_per_sec is None and "worker(s) 1" in point.message


# --- bandwidth: the console side ---

LINES = [
    (
        0,
        "imgscale-bandwidth arrays=60 bytes=44719936 devices=1 workers=2 rank=0 kv_store=dist_sync",
    ),
    (0, "imgscale-bandwidth iter=1 seconds=0.2 bytes=44719936 gbytes_per_s=0.45 error=0"),
    (0, "imgscale-bandwidth iter=2 seconds=0.1 bytes=44719936 gbytes_per_s=0.9 error=0"),
    (1, "some other log line"),
    (1, "imgscale-bandwidth iter=1 seconds=0.1 bytes=44719936 gbytes_per_s=0.9 error=0"),
    (1, "imgscale-bandwidth iter=2 seconds=0.1 bytes=44719936 gbytes_per_s=0.9 error=0"),
]


def test_bandwidth_lines_are_summarised():
    result = bandwidth.summarize(LINES, "dist_sync")
    assert (result.workers, result.arrays, result.model_bytes, result.rounds) == (
        2,
        60,
        44719936,
        2,
    )
    assert result.seconds == pytest.approx(0.1)
    assert result.per_worker == pytest.approx((0.675, 0.9))
    assert bandwidth.network_gbits_from(result) == pytest.approx(44719936 * 8 / 0.1 / 1e9)
    assert "0.900 GB/s per worker" in bandwidth.format_result(result)


def test_bandwidth_without_timed_rounds_is_an_error():
    with pytest.raises(ValueError, match="no timed"):
        bandwidth.summarize(LINES[:1], "dist_sync")


def test_bandwidth_wrong_values_are_reported():
    bad = [(0, "imgscale-bandwidth iter=1 seconds=0.1 bytes=4 gbytes_per_s=1 error=0.5")]
    assert "ERROR" in bandwidth.format_result(bandwidth.summarize(bad, "dist_sync"))


# --- sweep events with a scripted runner (no processes) ---

TRAINER_LINE = "2026-11-26 07:44:36,888 Node[0@node1] Epoch[0] Batch [0-5]\tSpeed: 52.83 samples/sec\taccuracy=0.83"
MXNET_LINE = "Epoch[2] Batch [20]\tSpeed: 1234.5 samples/sec\taccuracy=0.100000"


def test_speedometer_lines_of_the_trainer_and_of_mxnet_are_read():
    from engine.events import LogLine

    t = scaling.speedometer_reading(LogLine("node1", "worker", 1, TRAINER_LINE, job="j"))
    assert (t.host, t.rank, t.samples_per_sec, t.epoch, t.batch, t.job) == (
        "node1",
        1,
        52.83,
        0,
        5,
        "j",
    )
    assert (
        scaling.speedometer_reading(LogLine("h", "worker", 0, MXNET_LINE)).samples_per_sec == 1234.5
    )
    assert (
        scaling.speedometer_reading(LogLine("h", "worker", 0, "Epoch[0] Train-accuracy=0.5"))
        is None
    )


def _scripted_runner(rates, end_state="done", closed=None):
    """A runner that plays Speedometer lines: rates[workers] = per-worker readings."""
    from engine.events import JobState, LogLine

    async def runner(config, run, argv):
        try:
            yield JobState("job-x", "running")
            for reading in range(len(rates[run.workers])):
                for rank in range(run.workers):
                    text = f"Epoch[0] Batch [{reading}]\tSpeed: {rates[run.workers][reading]} samples/sec"
                    yield LogLine(f"node{rank + 1}", "worker", rank, text, job="job-x")
            yield JobState("job-x", end_state, message="ended")
        finally:
            if closed is not None:
                closed.append(run.workers)

    return runner


async def _collect(config, runner):
    return [e async for e in scaling.sweep_events(config, runner)]


async def test_sweep_events_yield_progress_throughput_and_points_with_speedup():
    from engine.events import StageProgress, StageState

    closed = []
    config = scaling.sweep_config("resnet-18:4", workers="1,2", warmup=1, readings=2)
    runner = _scripted_runner({1: [1.0, 10.0, 10.0, 99.0], 2: [1.0, 9.0, 9.0, 99.0]}, closed=closed)
    events = await _collect(config, runner)
    points = [e for e in events if isinstance(e, ScalingPoint)]
    assert [(p.workers, p.images_per_sec) for p in points] == [(1, 10.0), (2, 18.0)]
    assert points[1].speedup == pytest.approx(1.8) and points[1].efficiency == pytest.approx(0.9)
    assert (
        sum(isinstance(e, Throughput) for e in events) == 3 + 6
    )  # the 4th reading is never needed
    assert closed == [1, 2]  # each job was closed (stopped) as soon as it was measured
    progress = [e for e in events if isinstance(e, StageProgress)]
    assert (progress[-1].done, progress[-1].total) == (2, 2)
    assert isinstance(events[-1], StageState) and events[-1].state == "done"


async def test_a_job_that_ends_early_gives_a_point_without_figure_and_the_sweep_goes_on():
    config = scaling.sweep_config("alexnet:8", workers="1,2", warmup=1, readings=2)
    runner = _scripted_runner({1: [5.0, 6.0, 6.0], 2: [5.0]}, end_state="failed")
    points = [e for e in await _collect(config, runner) if isinstance(e, ScalingPoint)]
    assert points[0].images_per_sec == 6.0
    assert points[1].images_per_sec is None and points[1].message == "ended"


def test_run_sweep_writes_every_output(tmp_path):
    config = scaling.sweep_config(
        "resnet-18:4", workers="1,2", warmup=0, readings=1, out_dir=tmp_path
    )
    seen = []
    result = sweep.run_sweep(config, seen.append, None, _scripted_runner({1: [4.0], 2: [3.0]}))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "scaling.csv",
        "scaling.json",
        "scaling.png",
        "table.txt",
    ]
    assert [p.images_per_sec for p in result.points] == [4.0, 6.0]
    assert any(isinstance(e, ScalingPoint) for e in seen)


# --- the CLI (no processes launched) ---


def test_bench_model_prints_predicted_against_published(capsys):
    from engine import cli

    assert cli.main(["bench", "model"]) == 0
    out = capsys.readouterr().out
    assert "published img/s" in out and "61,938.4" in out and "largest efficiency error" in out


def test_bench_model_predicts_a_cluster_of_your_own(capsys):
    from engine import cli

    argv = [
        "bench",
        "model",
        "--network",
        "resnet-152",
        "--images-per-sec-1gpu",
        "20.8",
        "--gpus",
        "1,256",
        "--gpus-per-machine",
        "8",
        "--network-gbits",
        "100",
    ]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["GPUs", "machines", "compute"]
    assert lines[-1].split()[:2] == ["256", "32"]  # 256 GPUs on machines of 8


@pytest.mark.parametrize(
    "argv, words",
    [
        (["bench", "scaling", "--networks", "resnet-152"], "network:batch-per-GPU"),
        (["bench", "scaling", "--networks", "alexnet:8", "--workers", "0,1"], "--workers"),
        (["bench", "scaling", "--gpus", "32"], "--gpus-per-host"),
        (["bench", "model", "--network", "lenet", "--images-per-sec-1gpu", "5"], "--params"),
    ],
)
def test_bench_mistakes_are_one_clear_line(argv, words, capsys):
    from engine import cli

    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_scaling_without_matplotlib_writes_the_numbers_then_one_line(tmp_path, monkeypatch, capsys):
    """Issue 11 item 11: no traceback after the sweep; the PNG is the only thing missing."""
    import sys

    from engine.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if imgscale[plot] were not installed
    monkeypatch.setattr(scaling, "launcher_runner", _scripted_runner({1: [4.0], 2: [3.0]}))
    argv = ["bench", "scaling", "--networks", "resnet-18:4", "--workers", "1,2", "--warmup", "0",
            "--readings", "1", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "scaling.csv",
        "scaling.json",
        "table.txt",
    ]
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "scaling.png not drawn: it needs matplotlib (pip install 'imgscale[plot]')"
