"""The cross-host pre-flight's comparisons: each finding names the host and the fix."""

from engine.train.launch.preflight_hosts import (
    HostAnswer,
    bandwidth_findings,
    compare,
    data,
    gpus,
    port_finding,
    versions,
)
from engine.train.launch.registry import ENGINES

REC = ["demo_train.rec", 1000, 80, "ab" * 32]


def _facts(**extra):
    facts = {"imgscale": "0.1.0", "python": "3.12.1", "torch": "2.13.0", "gpus": 8}
    facts["data"] = {"/data/train": [REC]}
    return {**facts, **extra}


def _lines(findings):
    return [f"{f.level} {f.what} -> {f.change}" for f in findings]


def test_same_versions_and_data_everywhere_give_no_error():
    answers = [HostAnswer(f"node{i}", 8, _facts()) for i in range(3)]
    found = compare(answers, ENGINES["torch"], gpus_wanted=True)
    assert [f.level for f in found] == ["info", "info"], _lines(found)
    assert "3 of 3 host(s) reached" in found[0].what
    assert "the same 1 .rec/.idx file(s) on every host" in found[1].what


def test_an_unreached_host_is_named_with_the_command_to_check_it():
    (finding,) = compare(
        [HostAnswer("node2", None, error="connection refused")], ENGINES["torch"], False
    )
    assert finding.level == "error" and "node2" in finding.what and "refused" in finding.what
    assert "imgscale hosts check -H" in finding.change


def test_a_different_engine_version_or_a_missing_engine_is_an_error_naming_the_host():
    answers = [
        HostAnswer("node1", 1, _facts()),
        HostAnswer("node2", 1, _facts(torch="2.12.0")),
        HostAnswer("node3", 1, _facts(torch=None)),
    ]
    lines = _lines(versions(answers, ENGINES["torch"]))
    assert lines == [
        "error node2: torch 2.12.0 but node1 has 2.13.0 -> install torch 2.13.0 on node2 "
        "(every host runs the same code)",
        "error node3: torch is not installed -> pip install 'imgscale[torch]' torch==2.13.0",
    ]


def test_data_missing_resized_or_with_another_index_on_a_host_is_an_error():
    answers = [
        HostAnswer("node1", 1, _facts()),
        HostAnswer("node2", 1, _facts(data={"/data/train": [[*REC[:3], "cd" * 32]]})),
        HostAnswer("node3", 1, _facts(data={"/data/train": []})),
        HostAnswer("node4", 1, _facts(data={"/data/train": [[REC[0], 999, 80, REC[3]]]})),
    ]
    lines = _lines(data(answers))
    assert "error node2: /data/train/demo_train.rec: its .idx differs" in lines[0]
    assert lines[1].startswith("error node3: /data/train holds no .rec files -> copy the data")
    assert "error node4: /data/train/demo_train.rec differs (999 bytes, node1 1000)" in lines[2]
    assert all("node1" in line for line in lines)  # where to copy from


def test_fewer_gpus_than_slots_says_which_slots_to_set():
    answers = [HostAnswer("node1", 8, _facts()), HostAnswer("node2", 8, _facts(gpus=4))]
    (finding,) = gpus(answers)
    assert finding.what == "node2: slots=8 (one process per GPU) but torch sees 4 GPU(s)"
    assert finding.change == "set slots=4 for node2"


def test_a_busy_master_port_is_an_error():
    (finding,) = port_finding("node1", 29500, free=False)
    assert "node1: port 29500" in finding.what and finding.level == "error"
    assert port_finding("node1", 29500, free=True) == []


def test_a_host_with_under_half_the_bandwidth_is_warned_about():
    results = [
        {"host": "node1", "rank": 0, "MBps": 900.0},
        {"host": "node2", "rank": 1, "MBps": 1000.0},
        {"host": "node3", "rank": 2, "MBps": 100.0},
    ]
    lines = _lines(bandwidth_findings(results, 3))
    assert "info node1: all-reduce over 3 processes: 900 MB/s" in lines[0]
    assert any(line.startswith("warning node3: all-reduce 100 MB/s") for line in lines)
    assert not any(line.startswith("warning node1") for line in lines)
