"""The training-log parser on real MXNet 1.9.1 output (tests/data/mxnet_logs, re-recorded by record.py there)."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

from engine.events import EpochSummary, Failure, Throughput
from engine.train.logparse import LogParser, host_rates, latest_summaries, parse_line, parse_log

LOGS = pathlib.Path(__file__).resolve().parents[1] / "data" / "mxnet_logs"


def _read(name: str) -> str:
    return (LOGS / name).read_text()


def test_speedometer_lines_of_module_fit_become_throughput_with_every_metric():
    events = parse_log(_read("module_fit_speedometer.log"), host="node-a", rank=0)
    speeds = [e for e in events if isinstance(e, Throughput)]
    assert len(speeds) == 9  # 3 epochs x 3 reports (every 5 of 20 batches)
    first = speeds[0]
    assert (first.host, first.rank, first.epoch, first.batch) == ("node-a", 0, 0, 5)
    assert first.samples_per_sec > 0
    assert [name for name, _ in first.metrics] == ["accuracy", "top_k_accuracy_2", "cross-entropy"]
    assert {e.epoch for e in speeds} == {0, 1, 2}


def test_epoch_summary_collects_train_validation_time_and_checkpoint():
    summaries = latest_summaries(
        parse_log(_read("module_fit_speedometer.log"), host="node-a", rank=0)
    )
    assert [s.epoch for s in summaries] == [0, 1, 2]
    last = summaries[-1]
    assert dict(last.train).keys() == {"accuracy", "top_k_accuracy_2", "cross-entropy"}
    assert dict(last.validation).keys() == {"accuracy", "top_k_accuracy_2", "cross-entropy"}
    assert last.time_cost_s is not None and last.time_cost_s > 0
    assert last.checkpoint.endswith("mlp-0003.params")  # checkpoint N is written after epoch N-1
    assert summaries[0].checkpoint.endswith("mlp-0001.params")


def test_a_lr_change_line_or_mxnet_stderr_is_not_mistaken_for_progress():
    assert (
        parse_line(
            "2026-11-26 07:45:05,614 Node[0] Update[41]: Change learning rate to 1.00000e-02"
        )
        is None
    )
    assert (
        parse_line("[07:42:31] ../src/io/iter_image_recordio_2.cc:177: ImageRecordIOParser2: a.rec")
        is None
    )


def test_speedometer_without_auto_reset_is_parsed_the_same():
    speeds = [
        e for e in parse_log(_read("module_fit_no_auto_reset.log")) if isinstance(e, Throughput)
    ]
    assert [(s.epoch, s.batch) for s in speeds] == [(0, 10), (1, 10), (2, 10)]


def test_rank_and_host_come_from_the_node_prefix_when_the_caller_does_not_know_them():
    line = "2026-11-26 07:42:32,964 Node[3@node-b] Epoch[2] Batch [0-5]\tSpeed: 246.62 samples/sec\taccuracy=0.171875"
    (event,) = LogParser().feed(line)
    assert (event.host, event.rank, event.epoch, event.batch, event.samples_per_sec) == (
        "node-b",
        3,
        2,
        5,
        246.62,
    )
    assert event.metrics == (("accuracy", 0.171875),)


def mxnet_parse_log() -> pathlib.Path:
    """MXNet's own tools/parse_log.py, as the mxnet wheel installs it (site-packages/mxnet/tools)."""
    spec = importlib.util.find_spec("mxnet")  # finds the package without importing it
    if spec is None or spec.origin is None:
        pytest.skip("the reference parse_log.py ships in the mxnet wheel, not installed here")
    return pathlib.Path(spec.origin).parent / "tools" / "parse_log.py"


def their_table(log: pathlib.Path, metrics: list[str]) -> list[list[str]]:
    out = subprocess.run(
        [sys.executable, str(mxnet_parse_log()), str(log), "--format", "none"]
        + ["--metric-names", *metrics],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [line.split("\t") for line in out.stdout.splitlines()[1:]]


def our_table(log: pathlib.Path, metrics: list[str]) -> list[list[str]]:
    """Our epoch summaries in parse_log.py's --format none table (epochs counted from 1)."""
    rows = []
    for s in latest_summaries(parse_log(log.read_text())):
        train, val = dict(s.train), dict(s.validation)
        rows.append(
            [f"{s.epoch + 1:2d}"]
            + [f"{train[m]:f}" for m in metrics]
            + [f"{val[m]:f}" for m in metrics]
            + [f"{s.time_cost_s:.1f}"]
        )
    return rows


@pytest.mark.parametrize(
    ("name", "metrics"),
    [
        ("module_fit_speedometer.log", ["accuracy", "top_k_accuracy_2", "cross-entropy"]),
        ("module_fit_no_auto_reset.log", ["accuracy", "top_k_accuracy_2", "cross-entropy"]),
        ("imgscale_train_local.log", ["accuracy"]),
        ("dist_sync_worker0.log", ["accuracy"]),
        ("dist_sync_worker1.log", ["accuracy"]),
    ],
)
def test_epoch_summaries_match_mxnet_parse_log_on_recorded_logs(name, metrics):
    ours = our_table(LOGS / name, metrics)
    assert len(ours) == 3  # every recorded run has 3 epochs
    assert ours == their_table(LOGS / name, metrics)


def test_our_engine_log_has_progress_in_every_epoch():
    events = parse_log(_read("imgscale_train_local.log"))
    assert {e.epoch for e in events if isinstance(e, Throughput)} == {0, 1, 2}


def test_dist_sync_worker_logs_are_attributed_per_worker():
    events = parse_log(_read("dist_sync_worker1.log"))
    ranks = {e.rank for e in events if isinstance(e, (Throughput, EpochSummary))}
    assert ranks == {1}


def test_test_io_lines_give_throughput_without_epoch():
    (event,) = LogParser(host="h", rank=0).feed(
        "2026 Node[0] test-io: Batch [20-40]\tSpeed: 5000.50 samples/sec"
    )
    assert isinstance(event, Throughput) and event.epoch is None and event.samples_per_sec == 5000.5


def test_nan_metrics_and_exponents_do_not_break_parsing():
    (event,) = LogParser().feed(
        "Epoch[0] Batch [0-20]\tSpeed: 1.5e+03 samples/sec\tcross-entropy=nan"
    )
    assert event.samples_per_sec == 1500.0 and event.metrics[0][0] == "cross-entropy"


def test_batch_checkpoint_is_attached_to_the_running_epoch():
    (event,) = LogParser().feed('Saved checkpoint to "/ck/r18-0004.b000100.params"')
    assert isinstance(event, EpochSummary) and event.epoch == 4


def test_real_cpu_allocation_failure_becomes_one_failure_with_advice():
    parser = LogParser(host="node-a", rank=2, batch_size=256)
    events = parser.feed_text(_read("cpu_bad_alloc.log"))
    failures = [e for e in events if isinstance(e, Failure)]
    assert len(failures) == 1
    assert failures[0].source == "worker 2 on node-a"
    assert "host out of memory" in failures[0].diagnosis
    assert any("--data-nthreads" in a for a in failures[0].advice)


def test_per_host_rate_sums_the_newest_rate_of_each_worker():
    events = []
    for host, rank, lines in (("a", 0, ["100", "120"]), ("a", 1, ["80"]), ("b", 2, ["50"])):
        parser = LogParser(host=host, rank=rank)
        for speed in lines:
            events += parser.feed(
                f"Epoch[0] Batch [0-20]\tSpeed: {speed} samples/sec\taccuracy=0.1"
            )
    assert host_rates(events) == {"a": 200.0, "b": 50.0}


def test_torch_engine_checkpoint_names_count_like_mxnet_params():
    """The torch engine writes PREFIX-NNNN.pt; the console must attach it to the right epoch."""
    parser = LogParser("node1", 0, "job", 32)
    (summary,) = parser.feed('INFO:root:Saved checkpoint to "/ckpt/m-0003.pt"')
    assert isinstance(summary, EpochSummary) and summary.epoch == 2
    assert summary.checkpoint == "/ckpt/m-0003.pt"
