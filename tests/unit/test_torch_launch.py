"""torch_env gives every process of a torch job the torchrun environment a launcher must set."""

import pytest

from engine.errors import UserError
from engine.cluster.torch_env import torch_env
from engine.train.torch.launch import worker_argv


def test_two_hosts_of_two_gpus_get_global_and_local_ranks_host_by_host():
    envs = torch_env(["node-a", "node-b"], 2, master_port=23456)
    assert [(e["RANK"], e["LOCAL_RANK"], e["GROUP_RANK"]) for e in envs] == [
        ("0", "0", "0"),
        ("1", "1", "0"),
        ("2", "0", "1"),
        ("3", "1", "1"),
    ]
    assert {e["WORLD_SIZE"] for e in envs} == {"4"}
    assert {e["MASTER_ADDR"] for e in envs} == {"node-a"}  # the first host, when none is named
    assert {e["MASTER_PORT"] for e in envs} == {"23456"}
    assert {e["LOCAL_WORLD_SIZE"] for e in envs} == {"2"}


def test_hosts_with_different_slot_counts_number_ranks_consecutively():
    envs = torch_env(["a", "b"], [1, 3], master_addr="10.0.0.1", master_port=29500)
    assert [e["RANK"] for e in envs] == ["0", "1", "2", "3"]
    assert [e["LOCAL_RANK"] for e in envs] == ["0", "0", "1", "2"]
    assert [e["LOCAL_WORLD_SIZE"] for e in envs] == ["1", "3", "3", "3"]
    assert envs[0]["MASTER_ADDR"] == "10.0.0.1"


@pytest.mark.parametrize(
    ("hosts", "procs", "port", "words"),
    [
        ([], 1, 29500, "no hosts"),
        (["a", "b"], [1], 29500, "one per host"),
        (["a"], 0, 29500, "host a"),
        (["a"], 1, 70000, "70000"),
    ],
)
def test_impossible_layouts_are_one_clear_error(hosts, procs, port, words):
    with pytest.raises(UserError, match=words):
        torch_env(hosts, procs, master_port=port)


def test_every_worker_runs_the_torch_entry_module_with_the_same_flags():
    assert worker_argv("/usr/bin/python3", ["--batch-size", "64"]) == [
        "/usr/bin/python3",
        "-m",
        "engine.train.torch.run",
        "--batch-size",
        "64",
    ]
