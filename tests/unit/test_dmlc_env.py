"""Per-process environment: DMLC_* for ps-lite, IMGSCALE_* for attribution and kill, user env for all."""

import pytest

from engine.errors import UserError
from engine.train.launch.dmlc_env import (
    ClusterEnv,
    check_user_key,
    forwarded_env,
    parse_env_args,
    parse_role_env,
    process_env,
)
from engine.train.launch.placement import place

CLUSTER = ClusterEnv("job-1", "10.0.0.1", 9123, num_workers=2, num_servers=1)


def env_for(role, rank=0, cluster=CLUSTER, user=None):
    proc = next(p for p in place(2, 1, [None, None]) if p.role == role and p.rank == rank)
    return process_env(cluster, proc, "10.0.0.7", "node7", user)


def test_every_role_gets_the_ps_lite_variables():
    for role in ("scheduler", "server", "worker"):
        env = env_for(role)
        assert env["DMLC_ROLE"] == role
        assert env["DMLC_PS_ROOT_URI"] == "10.0.0.1" and env["DMLC_PS_ROOT_PORT"] == "9123"
        assert env["DMLC_NUM_WORKER"] == "2" and env["DMLC_NUM_SERVER"] == "1"


def test_user_env_reaches_every_role_which_launch_py_in_mxnet_1_9_1_fails_to_do():
    for role in ("scheduler", "server", "worker"):
        assert (
            env_for(role, user={"MXNET_BACKWARD_DO_MIRROR": "1"})["MXNET_BACKWARD_DO_MIRROR"] == "1"
        )


def test_node_host_is_the_process_host_but_the_scheduler_binds_the_root_uri():
    assert env_for("worker")["DMLC_NODE_HOST"] == "10.0.0.7"
    assert env_for("scheduler")["DMLC_NODE_HOST"] == "10.0.0.1"


def test_workers_carry_a_stable_rank_and_host_for_attribution():
    env = env_for("worker", 1)
    assert env["IMGSCALE_RANK"] == "1" and env["IMGSCALE_HOST"] == "node7"
    assert env["IMGSCALE_JOB"] == "job-1" and env["IMGSCALE_PROC"] == "worker-1"


def test_interface_and_heartbeats_only_when_asked():
    assert "DMLC_INTERFACE" not in env_for("worker") and "PS_HEARTBEAT_INTERVAL" not in env_for(
        "worker"
    )
    cluster = ClusterEnv(
        "j", "h", 1, 1, 1, interface="eth1", heartbeat_interval=5, heartbeat_timeout=30
    )
    env = env_for("server", cluster=cluster)
    assert env["DMLC_INTERFACE"] == "eth1"
    assert env["PS_HEARTBEAT_INTERVAL"] == "5" and env["PS_HEARTBEAT_TIMEOUT"] == "30"


def test_env_args_keep_hostile_values_verbatim():
    value = "a b;$(rm -rf /) 'q' \"d\"\nline2"
    assert parse_env_args([f"X={value}"]) == {"X": value}


def test_bare_env_name_copies_this_shell(monkeypatch):
    monkeypatch.setenv("MY_SETTING", "7")
    assert parse_env_args(["MY_SETTING"]) == {"MY_SETTING": "7"}
    monkeypatch.delenv("MY_SETTING")
    with pytest.raises(UserError, match="MY_SETTING is not set here"):
        parse_env_args(["MY_SETTING"])


@pytest.mark.parametrize(
    "key", ["DMLC_ROLE", "DMLC_PS_ROOT_PORT", "IMGSCALE_JOB", "A B", "1X", "X;Y"]
)
def test_reserved_or_malformed_names_are_refused_naming_the_flag(key):
    with pytest.raises(UserError, match="--env"):
        check_user_key(key, f"--env {key}=1")


def test_thread_settings_are_forwarded_unless_overridden():
    source = {"OMP_NUM_THREADS": "2", "KMP_AFFINITY": "x", "HOME": "/root"}
    assert forwarded_env({}, source) == {"OMP_NUM_THREADS": "2", "KMP_AFFINITY": "x"}
    assert forwarded_env({"OMP_NUM_THREADS": "4"}, source) == {"KMP_AFFINITY": "x"}


def test_role_env_accepts_launch_py_colon_form_and_refuses_reserved_names():
    assert parse_role_env(["OMP_NUM_THREADS:3", "A=b:c"], "--env-server") == {
        "OMP_NUM_THREADS": "3",
        "A": "b:c",
    }
    with pytest.raises(UserError, match="--env-worker DMLC_ROLE:x"):
        parse_role_env(["DMLC_ROLE:x"], "--env-worker")
    with pytest.raises(UserError, match="write NAME:VALUE"):
        parse_role_env(["JUSTNAME"], "--env-worker")
