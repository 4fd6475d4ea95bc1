"""The launch command line and spec: parsing, the resume hook's option editing, the job record."""

import struct

import pytest

from engine.cli import build_parser
from engine.cluster.process import jobs
from engine.cluster.remote_cmd import with_python
from engine.errors import UserError
from engine.train.launch import mxnet_engine
from engine.train.launch.cli_jobs import spec_from_args
from engine.train.launch.engines import set_option
from engine.train.launch.registry import ENGINES
from engine.train.launch.spec import LaunchSpec, checkpoint_resume


def parse(*argv):
    return spec_from_args(build_parser().parse_args(["launch", *argv]))


def test_launch_py_flags_and_command_after_double_dash():
    spec = parse(
        "-n",
        "4",
        "-s",
        "2",
        "-H",
        "hosts",
        "--env",
        "MXNET_BACKWARD_DO_MIRROR=1",
        "--env-worker",
        "OMP_NUM_THREADS:4",
        "--",
        "python",
        "train.py",
        "--kv-store",
        "dist_sync",
    )
    assert spec.command == ("python", "train.py", "--kv-store", "dist_sync")
    assert (spec.num_workers, spec.num_servers, spec.hosts_file, spec.launcher) == (
        4,
        2,
        "hosts",
        "ssh",
    )
    assert spec.env == {"MXNET_BACKWARD_DO_MIRROR": "1"} and spec.env_worker == {
        "OMP_NUM_THREADS": "4"
    }


def test_without_hosts_the_local_launcher_is_the_default():
    assert parse("-n", "1", "--", "true").launcher == "local"


def test_spec_survives_the_job_record_round_trip():
    spec = LaunchSpec(
        ("python", "a b.py"), 2, 1, "h", env={"A": "1"}, max_restarts=2, stall_timeout_s=30.0
    )
    assert LaunchSpec.from_dict(spec.to_dict()) == spec


def test_set_option_replaces_or_appends():
    assert set_option(("t.py", "--load-epoch", "3"), "--load-epoch", "7") == (
        "t.py",
        "--load-epoch",
        "7",
    )
    assert set_option(("t.py", "--load-epoch=3"), "--load-epoch", "7") == ("t.py", "--load-epoch=7")
    assert set_option(("t.py",), "--load-epoch", "7") == ("t.py", "--load-epoch", "7")


def test_leading_python_word_becomes_the_hosts_interpreter():
    assert with_python(("python", "t.py"), "/opt/py/bin/python") == ("/opt/py/bin/python", "t.py")
    assert with_python(("sh", "-c", "python"), "/x") == ("sh", "-c", "python")


@pytest.mark.parametrize("name", ["-bad", ".x", "a b", "x/y", "a" * 65])
def test_bad_job_names_are_refused(name):
    with pytest.raises(UserError, match="--job"):
        jobs.check_job_name(name)


def test_job_records_round_trip_and_newest_active_is_resolved(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGSCALE_HOME", str(tmp_path))
    proc = jobs.ProcRecord("node1", "worker", 0, "~/.imgscale/runs/j1/a0/worker-0")
    jobs.save(
        jobs.JobRecord(
            "j1",
            "train",
            ("true",),
            None,
            ("localhost",),
            processes=(proc,),
            state="done",
            created=1.0,
        )
    )
    jobs.save(
        jobs.JobRecord("j2", "train", ("true",), None, ("localhost",), state="running", created=2.0)
    )
    assert jobs.load("j1").processes == (proc,)
    assert jobs.resolve(None).job == "j2"
    assert (tmp_path / "jobs" / "j1" / "job.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(UserError, match="no job 'nope'"):
        jobs.load("nope")


def test_resume_hook_sets_load_epoch_to_the_newest_complete_checkpoint(tmp_path):
    prefix = str(tmp_path / "r50")
    hook = checkpoint_resume(prefix, ENGINES["mxnet"])
    command = ("python", "train.py", "--load-epoch", "7")
    assert hook(command, 1) == command  # no checkpoint yet: the command as given
    whole = struct.pack("<QQQQ", 0x112, 0, 0, 0)  # an mx.nd.save file of no arrays
    for name in ("r50-symbol.json", "r50-0001.params", "r50-0002.params", "r50-0003.params.tmp41"):
        (tmp_path / name).write_bytes(whole)
    assert mxnet_engine.newest_checkpoint(prefix) == 2  # the partial epoch 3 does not count
    assert hook(command, 1) == ("python", "train.py", "--load-epoch", "2")
    (tmp_path / "r50-0002.params").write_bytes(whole[:20])  # cut: the one before it is used
    assert hook(command, 1) == ("python", "train.py", "--load-epoch", "1")


def test_a_relaunch_before_any_epoch_checkpoint_resumes_instead_of_being_refused(tmp_path):
    hook = checkpoint_resume(str(tmp_path / "r50"), ENGINES["mxnet"])
    assert hook(("python", "train.py"), 1) == ("python", "train.py", "--resume")


def test_resume_hook_lets_a_failure_through_instead_of_turning_resume_off(tmp_path, monkeypatch):
    def broken(prefix):
        raise ImportError("engine.train.checkpoints is missing")

    monkeypatch.setattr(mxnet_engine, "newest_checkpoint", broken)
    with pytest.raises(ImportError):
        checkpoint_resume(str(tmp_path / "r50"), ENGINES["mxnet"])(("python", "train.py"), 1)
