"""SLURM's answers and forms, parsed by pure functions (recorded shapes from slurm-wlm 22.05)."""

import pytest

from engine.cluster.slurm import sbatch as slurm
from engine.cluster.slurm.steps import srun_argv
from engine.errors import UserError
from engine.train.launch.slurm_driver import Plan, plan_processes

SCONTROL_JOB = (
    "JobId=7 JobName=imgscale-train-1 UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=1 "
    "Nice=0 Account=(null) QOS=(null) JobState=PENDING Reason=Resources Dependency=(null) "
    "Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 TimeLimit=01:00:00 "
    "Partition=debug NodeList=(null) NumNodes=3-3 NumCPUs=3 NumTasks=3 "
    "Command=/home/u/.imgscale/runs/train-1/a0/job.sbatch WorkDir=/home/u/my data"
)


def test_time_limits_in_every_form_slurm_accepts():
    assert slurm.time_minutes("90") == 90
    assert slurm.time_minutes("10:30") == 11  # MM:SS, rounded up
    assert slurm.time_minutes("1:30:00") == 90
    assert slurm.time_minutes("2-00:00:00") == 2880
    assert slurm.time_minutes("1-2") == 1560
    assert slurm.time_minutes("infinite") > 10**6
    assert slurm.time_minutes("1h") is None


def test_tasks_per_node_expands_repeats():
    assert slurm.parse_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert slurm.parse_tasks_per_node("4") == [4]
    with pytest.raises(ValueError):
        slurm.parse_tasks_per_node("two")


def test_scontrol_one_line_keeps_values_with_spaces():
    info = slurm.parse_key_values(SCONTROL_JOB)
    assert info["JobState"] == "PENDING" and info["Reason"] == "Resources"
    assert info["WorkDir"] == "/home/u/my data"
    assert info["NodeList"] == "(null)"


def test_gres_gpu_counts():
    assert slurm.gres_gpus("gpu:a100:8(S:0-1)") == 8
    assert slurm.gres_gpus("gpu:4,shard:2") == 4
    assert slurm.gres_gpus("(null)") == 0


def test_pending_state_describes_reason_and_position():
    state = slurm.SlurmState("PENDING", "Resources", position=2)
    assert state.describe() == "PENDING (Resources) position 2 in the queue"
    assert slurm.SlurmState("TIMEOUT", exit_code="0:15").describe() == "TIMEOUT exit code 0:15"
    assert slurm.ENDED["NODE_FAIL"] == "failed" and slurm.ENDED["CANCELLED"] == "stopped"


def test_request_checked_against_the_partition():
    parts = [slurm.PartitionInfo("gpu", "2-00:00:00", 4, 8, True, default=True)]
    ok = slurm.SlurmRequest(8, nodes=2, gpus_per_node=8, time="1-00:00:00")
    assert slurm.check_request(ok, parts) == []
    too_much = slurm.SlurmRequest(8, nodes=6, gpus_per_node=16, time="3-00:00:00")
    findings = slurm.check_request(too_much, parts)
    assert [f.split()[0] for f in findings] == ["warning", "error", "error"]
    assert "nodes have 8 GPUs" in findings[1] and "allows 2-00:00:00" in findings[2]
    assert (
        "no such partition" in slurm.check_request(slurm.SlurmRequest(1, partition="x"), parts)[0]
    )


@pytest.mark.parametrize(
    ("request_", "flag"),
    [
        (slurm.SlurmRequest(2, nodes=3), "--nodes 3"),
        (slurm.SlurmRequest(2, time="soon"), "--time soon"),
        (slurm.SlurmRequest(2, sbatch_args=("qos=high",)), "--sbatch-arg qos=high"),
    ],
)
def test_bad_requests_name_the_flag(request_, flag):
    with pytest.raises(UserError, match=flag):
        request_.check()


def test_batch_script_quotes_and_names_the_driver():
    script = slurm.batch_script(
        slurm.SlurmRequest(4, nodes=2, partition="gpu", sbatch_args=("--qos=high",)),
        job="j1",
        attempt=1,
        python="/opt/my env/bin/python",
        plan_path="/runs/j1/a1/plan.json",
        output="/runs/j1/a1/slurm.out",
        workdir="/work",
        driver="engine.train.launch.slurm_driver",
    )
    assert script.startswith("#!/bin/sh\n")
    assert "#SBATCH --ntasks=4\n" in script and "#SBATCH --qos=high\n" in script
    assert (
        "exec '/opt/my env/bin/python' -m engine.train.launch.slurm_driver /runs/j1/a1/plan.json"
        in script
    )


def plan(engine: str, workers: int, servers: int = 0, gpus: int = 0) -> Plan:
    return Plan("j", 0, engine, ("python", "t.py"), workers, servers, {"K": "v"}, "/w", "/r", gpus)


def test_torch_ranks_fill_nodes_in_order_with_torchrun_variables():
    procs = plan_processes(
        plan("torch", 4, gpus=2), ["a", "b"], [2, 2], {"a": "10.0.0.1", "b": "10.0.0.2"}, 555
    )
    assert [(p.node, p.env["RANK"], p.env["LOCAL_RANK"], p.env["GROUP_RANK"]) for p in procs] == [
        ("a", "0", "0", "0"), ("a", "1", "1", "0"), ("b", "2", "0", "1"), ("b", "3", "1", "1"),
    ]  # fmt: skip
    assert {p.env["MASTER_ADDR"] for p in procs} == {"10.0.0.1"}
    assert {p.env["WORLD_SIZE"] for p in procs} == {"4"} and procs[0].env["K"] == "v"
    assert "--gpus=1" in srun_argv(procs[3], "/w", ("t",)) and "--exact" in srun_argv(
        procs[3], "/w", ("t",)
    )


def test_mxnet_roles_scheduler_on_the_first_node_servers_overlap_workers_hold_gpus():
    procs = plan_processes(
        plan("mxnet", 2, 2, gpus=4), ["a", "b"], [1, 1], {"a": "h1", "b": "h2"}, 9000
    )
    roles = [(p.record.role, p.record.rank, p.node) for p in procs]
    assert roles == [
        ("scheduler", 0, "a"), ("server", 0, "a"), ("server", 1, "b"), ("worker", 0, "a"), ("worker", 1, "b"),
    ]  # fmt: skip
    assert {p.env["DMLC_PS_ROOT_URI"] for p in procs} == {"h1"}
    assert procs[4].env["DMLC_NODE_HOST"] == "h2" and procs[4].gpus == 4
    assert "--overlap" in srun_argv(procs[1], "/w", ("t",))
    assert all("v" not in arg for arg in srun_argv(procs[4], "/w", ("t",)) if arg.startswith("K"))
