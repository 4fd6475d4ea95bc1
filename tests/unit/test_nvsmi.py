"""nvidia-smi CSV parsing on recorded output; each case is named after the failure it prevents."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cluster.probes import nvsmi
from engine.cluster.probes.nvsmi import SampleGrouper, parse_line, parse_output, query_command

DATA = Path(__file__).parent.parent / "data" / "nvsmi"
FAKE = DATA / "fake_nvidia_smi.py"


def fake(sample: str, argv: list[str]) -> subprocess.CompletedProcess:
    """Run the fake nvidia-smi (as the test hosts do) on a recorded sample."""
    env = {**os.environ, "IMGSCALE_FAKE_NVSMI": sample}
    return subprocess.run(
        [sys.executable, str(FAKE), *argv], capture_output=True, text=True, env=env, timeout=30
    )


def nvidia_smi_answer(sample: str) -> str:
    """What nvidia-smi prints for the probes' own query (query_command) on this sample."""
    argv = shlex.split(query_command(None))[1:]
    out = fake(sample, argv)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def parse(name: str):
    return parse_output(nvidia_smi_answer(name), "h", now=1.0)


def test_multi_gpu_rows_become_one_sample_per_gpu_with_numbers():
    gpus = parse("normal_4gpu.csv")
    assert [g.index for g in gpus] == [0, 1, 2, 3]
    g = gpus[0]
    assert (g.name, g.util_percent, g.mem_used_mib, g.mem_total_mib) == (
        "Tesla V100-SXM2-16GB",
        97.0,
        15012.0,
        16160.0,
    )
    assert (g.temperature_c, g.power_w, g.power_limit_w, g.lost) == (67.0, 251.32, 300.0, False)
    assert g.uuid.startswith("GPU-")


def test_na_fields_become_none_instead_of_crashing_the_grid():
    gpu0 = parse("na_fields.csv")[0]
    assert gpu0.util_percent is None and gpu0.temperature_c is None and gpu0.power_w is None
    assert gpu0.mem_used_mib == 1024.0 and not gpu0.lost


def test_power_not_supported_becomes_none_not_an_exception():
    gpus = parse("power_not_supported.csv")
    assert [g.power_w for g in gpus] == [None, None]
    assert [g.power_limit_w for g in gpus] == [None, None]
    assert gpus[1].util_percent == 0.0  # a real zero stays zero, not None


def test_mig_gpu_without_utilization_is_still_listed():
    gpus = parse("mig.csv")
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[0].util_percent is None and gpus[0].mem_total_mib == 40536.0


def test_gpu_fallen_off_the_bus_is_reported_lost_at_its_missing_index():
    gpus = parse("fallen_off_bus.csv")
    assert [(g.index, g.lost) for g in gpus] == [(0, False), (1, True), (2, False), (3, False)]
    assert gpus[1].name is None and gpus[1].util_percent is None


def test_bracketed_gpu_is_lost_values_mark_the_gpu_lost():
    line = "2, Tesla T4, [GPU is lost], [GPU is lost], [GPU is lost], [GPU is lost], 40, 30, 70"
    gpu = parse_line(line, "h")
    assert gpu.index == 2 and gpu.lost and gpu.uuid is None


def test_garbage_header_truncated_and_warning_lines_are_ignored():
    for line in [
        "",
        "index, name, uuid",
        "0, Tesla",
        "WARNING: infoROM is corrupted at gpu 0000:04:00.0",
        "No devices were found",
        "NVIDIA-SMI has failed because it couldn't communicate",
    ]:
        assert parse_line(line, "h") is None


def test_looping_output_is_grouped_into_whole_samples_without_waiting_for_the_next():
    grouper = SampleGrouper("h")
    text = nvidia_smi_answer("normal_4gpu.csv").splitlines()
    first = [grouper.feed(line) for line in text]
    # the first sample is known complete only when the next one starts
    assert first == [[], [], [], []]
    second = [grouper.feed(line) for line in text]
    assert [len(g) for g in second[0]] == [4]
    assert [len(g) for g in second[3]] == [4]  # from now on complete at its last row
    assert grouper.expected == 4


def test_the_probe_query_is_csv_without_header_or_units_and_loops():
    command = query_command(1.0)
    assert "--format=csv,noheader,nounits" in command and command.endswith("-l 1")
    assert "utilization.gpu" in command and "power.limit" in command


def test_loop_period_is_whole_seconds_as_nvidia_smi_requires():
    assert query_command(0.3).endswith("-l 1") and query_command(2.4).endswith("-l 2")
    assert " -l " not in query_command(None)


def test_fake_answers_exactly_the_fields_asked_in_the_order_asked():
    out = fake("normal_4gpu.csv", ["--query-gpu=power.draw,index", "--format=csv,noheader,nounits"])
    assert out.returncode == 0
    assert out.stdout.splitlines() == ["251.32, 0", "243.10, 1", "258.77, 2", "239.05, 3"]


def test_fake_refuses_a_field_the_recording_lacks_like_nvidia_smi():
    query = ["--query-gpu=index,clocks.sm", "--format=csv,noheader,nounits"]
    out = fake("normal_4gpu.csv", query)
    assert out.returncode == 2 and 'Field "clocks.sm" is not a valid field' in out.stdout


def test_every_sample_holds_every_field_the_probes_query():
    for path in DATA.glob("*.csv"):
        (query,) = [x for x in path.read_text().splitlines() if x.startswith("# query:")]
        assert set(nvsmi.QUERY_FIELDS) <= set(query.split(":", 1)[1].strip().split(",")), path


def test_a_query_reordered_against_the_parser_is_caught(monkeypatch):
    """Swap two fields in the probes' query only: the parser's positional unpacking now reads
    memory.total as memory.used, and the end-to-end check above fails."""
    fields = list(nvsmi.QUERY_FIELDS)
    used, total = fields.index("memory.used"), fields.index("memory.total")
    fields[used], fields[total] = fields[total], fields[used]
    monkeypatch.setattr(nvsmi, "QUERY_FIELDS", tuple(fields))
    with pytest.raises(AssertionError):
        test_multi_gpu_rows_become_one_sample_per_gpu_with_numbers()
