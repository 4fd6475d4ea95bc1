"""torch_env gives every process of a torch job the torchrun environment a launcher must set."""

import pytest

from engine.errors import UserError
from engine.train.launch.torch_env import torch_env
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


# ---- the launcher's torch plan: one job, torchrun's variables, no scheduler or servers ----------
from engine.cluster.hosts import parse_hosts  # noqa: E402
from engine.train.launch.engines import Layout  # noqa: E402
from engine.train.launch.launch import (  # noqa: E402
    LaunchSpec,
    check_spec,
    place_processes,
    plan_lines,
    planned_processes,
)
from engine.train.launch.registry import ENGINES, engine_for  # noqa: E402
from engine.train.launch.torch_env import refuse_without_world  # noqa: E402

TORCH = ENGINES["torch"]

HOSTS = "node-a slots=2\nnode-b slots=2\n"


def _spec(tmp_path, n=3, command=("python", "my_ddp.py"), **extra):
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    return LaunchSpec(command=command, num_workers=n, hosts_file=str(path), **extra)


def test_slots_are_processes_per_host_and_ranks_run_host_by_host(tmp_path):
    spec = _spec(tmp_path, engine="torch", env={"OMP_NUM_THREADS": "2"}, interface="eth1")
    hosts = parse_hosts(HOSTS)
    placement = place_processes(spec, hosts)
    planned = planned_processes(spec, "job-1", 0, hosts, placement, 29600, spec.command)
    envs = [p.process.env for p in planned]
    assert [(p.record.host, p.record.role, p.record.rank) for p in planned] == [
        ("node-a", "worker", 0),
        ("node-a", "worker", 1),
        ("node-b", "worker", 2),
    ]
    assert [(e["RANK"], e["LOCAL_RANK"], e["GROUP_RANK"], e["LOCAL_WORLD_SIZE"]) for e in envs] == [
        ("0", "0", "0", "2"),
        ("1", "1", "0", "2"),
        ("2", "0", "1", "1"),
    ]
    for env in envs:
        assert env["MASTER_ADDR"] == "node-a" and env["MASTER_PORT"] == "29600"
        assert env["WORLD_SIZE"] == "3" and env["IMGSCALE_JOB"] == "job-1"
        assert env["OMP_NUM_THREADS"] == "2" and env["GLOO_SOCKET_IFNAME"] == "eth1"
        assert not any(k.startswith("DMLC_") for k in env)  # no ps-lite roles at all


def test_without_slots_processes_go_round_robin_and_ranks_stay_contiguous_per_host():
    placement = TORCH.place(Layout(3), [None, None])
    assert [(p.rank, p.host) for p in placement] == [(0, 0), (1, 0), (2, 1)]


@pytest.mark.parametrize(
    ("command", "torch"),
    [
        (("imgscale", "train", "--engine", "torch", "--gpus", "0"), True),
        (("python", "-m", "engine", "train", "--engine=torch"), True),
        (("python", "-m", "engine.train.torch.run", "--lr", "0.1"), True),
        (("imgscale", "train", "--engine", "mxnet"), False),
        (("python", "train_imagenet.py", "--kv-store", "dist_sync"), False),
    ],
)
def test_the_engine_is_read_from_the_command(command, torch):
    assert (engine_for(None, command) is TORCH) is torch


def test_dry_run_shows_the_ranks_of_each_host(tmp_path):
    lines = plan_lines(_spec(tmp_path, command=("imgscale", "train", "--engine", "torch")))
    assert lines == [
        "engine: torch",
        "rendezvous: MASTER_ADDR=node-a MASTER_PORT=(a free port on node-a)",
        "node-a: rank 0 (local 0), rank 1 (local 1)",
        "node-b: rank 2 (local 0)",
    ]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"num_servers": 2}, "-s: a torch job has no parameter servers"),
        ({"servers_per_host": 1}, "--servers-per-host"),
        ({"env_server": {"A": "1"}}, "--env-server"),
        ({"engine": "tf"}, "--engine tf"),
    ],
)
def test_server_options_with_torch_are_one_clear_error(tmp_path, extra, words):
    spec = _spec(tmp_path, **{"engine": "torch", **extra})
    with pytest.raises(UserError, match=words):
        check_spec(spec)


def test_more_processes_than_slots_is_refused(tmp_path):
    with pytest.raises(UserError, match="offers only 4 slots"):
        plan_lines(_spec(tmp_path, n=5, engine="torch"))


def test_a_relaunch_resumes_the_torch_engine_from_its_newest_checkpoint():
    command = ("imgscale", "train", "--engine", "torch", "--load-epoch", "3", "--lr", "0.1")
    assert TORCH.resume_command(command, "/ckpt/r50") == (
        "imgscale",
        "train",
        "--engine",
        "torch",
        "--lr",
        "0.1",
        "--resume",
    )
    resumed = TORCH.resume_command((*command[:4], "--resume"), "/ckpt/r50")
    assert resumed == (*command[:4], "--resume")


@pytest.mark.parametrize(
    ("env", "refused"),
    [
        ({"DMLC_ROLE": "worker", "DMLC_NUM_WORKER": "2"}, "DMLC_NUM_WORKER is set"),
        ({"IMGSCALE_JOB": "train-1"}, "IMGSCALE_JOB is set"),
        ({"IMGSCALE_JOB": "train-1", "WORLD_SIZE": "2"}, None),
        ({}, None),  # run by hand: one process trains alone, as asked
    ],
)
def test_a_torch_process_started_by_a_launcher_without_world_size_refuses(env, refused):
    reason = refuse_without_world(env)
    if refused is None:
        assert reason is None
    else:
        assert refused in reason and "imgscale launch --engine torch" in reason


def test_fewer_processes_on_a_host_than_listed_gpus_is_refused():
    from engine.train.torch.run import idle_gpus

    assert "slots=4" in idle_gpus([0, 1, 2, 3], {"LOCAL_WORLD_SIZE": "1"})
    assert idle_gpus([0, 1], {"LOCAL_WORLD_SIZE": "2"}) is None
    assert idle_gpus([0, 1], {}) is None  # alone: one process per GPU is spawned here
