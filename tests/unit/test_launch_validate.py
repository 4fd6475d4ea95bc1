"""Issue 21 item 5: `launch --dry-run` refuses exactly what the real launch refuses, and no host
is given more processes than one machine can run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from engine.cluster.hosts import HOST_CAP
from engine.errors import UserError
from engine.train.launch.launch import LaunchSpec, validate

MISTAKES = [
    (["--job", "../../x"], "--job '../../x'"),
    (["--launcher", "slurm", "--time", "abc"], "--time abc"),
    (["--launcher", "slurm", "--gpus-per-node", "65"], "--gpus-per-node 65"),
    (["--launcher", "slurm", "--nodes", "0"], "--nodes 0"),
    (["-H", "HOSTS", "-n", "1024", "-s", "0"], "host node-a would run 512 processes"),
]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "launch"])
@pytest.mark.parametrize("flags, says", MISTAKES, ids=[m[1] for m in MISTAKES])
def test_dry_run_refuses_what_the_launch_refuses(tmp_path, flags, says, dry_run):
    (tmp_path / "hosts").write_text("node-a\nnode-b\n")
    flags = [str(tmp_path / "hosts") if f == "HOSTS" else f for f in flags]
    argv = ["launch", "-n", "2", "--run-dir", str(tmp_path / "runs"), *flags]
    argv += ["--dry-run"] if dry_run else []
    env = {**os.environ, "IMGSCALE_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-m", "engine", *argv, "--", "true"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_all_processes_on_one_host_are_bounded_naming_the_host(tmp_path):
    (tmp_path / "hosts").write_text("solo\n")
    spec = LaunchSpec(
        command=("true",),
        num_workers=HOST_CAP + 1,
        num_servers=0,
        hosts_file=str(tmp_path / "hosts"),
    )
    with pytest.raises(UserError, match=f"host solo would run {HOST_CAP + 1} processes"):
        validate(spec)
    validate(LaunchSpec(command=("true",), num_workers=HOST_CAP, num_servers=0,
                        hosts_file=str(tmp_path / "hosts")))  # fmt: skip


@pytest.mark.parametrize(
    ("command", "refused"),
    [
        (("imgscale", "train", "--model-prefix", "{p}"), True),
        ((sys.executable, "-m", "engine", "train", "--engine", "torch"), True),
        (("imgscale", "train", "--resume"), False),
        (("imgscale", "train", "--load-epoch", "1"), False),
        (("imgscale", "train", "--fresh"), False),
        (("python", "my_train.py", "--lr", "0.1"), False),  # not ours: its flags mean nothing here
    ],
)
def test_a_first_launch_over_old_checkpoints_is_refused_before_restarts_could_resume_it(
    tmp_path, command, refused
):
    """Refused by the trainer only, its exit was a fault that --max-restarts relaunched with
    --resume: the old run went on although the user had not asked to continue it."""
    prefix = tmp_path / "ckpt" / "r50"
    prefix.parent.mkdir()
    (tmp_path / "ckpt" / "r50-0003.pt").write_bytes(b"x")
    spec = LaunchSpec(
        tuple(w.format(p=prefix) for w in command),
        1,
        launcher="local",
        run_root=str(tmp_path / "runs"),
        resume_prefix=str(prefix),
        max_restarts=3,
    )
    if refused:
        with pytest.raises(UserError, match="--resume"):
            validate(spec)
    else:
        validate(spec)
