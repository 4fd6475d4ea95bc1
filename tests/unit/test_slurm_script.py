"""Issue 21 item 6: no value reaches the SLURM batch script as a line of its own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from engine.errors import UserError
from engine.train.launch.launch import LaunchSpec, validate

INJECTED = "\ntouch INJECTED\n"


def dry_run(cwd, *flags: str) -> subprocess.CompletedProcess:
    argv = ["launch", "--launcher", "slurm", "-n", "2", "--dry-run", *flags, "--", "true"]
    return subprocess.run(
        [sys.executable, "-m", "engine", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        timeout=60,
    )


@pytest.mark.parametrize(
    "flag, says",
    [
        ("--partition=gpu" + INJECTED, "--partition"),
        ("--time=60" + INJECTED, "--time"),
        ("--account=me" + INJECTED, "--account"),
        ("--sbatch-arg=--qos=high" + INJECTED, "--sbatch-arg"),
        ("--run-dir=/tmp/runs" + INJECTED, "--run-dir"),
    ],
)
def test_a_newline_in_a_slurm_flag_is_refused_not_written_into_the_script(tmp_path, flag, says):
    out = dry_run(tmp_path, flag)
    assert out.returncode == 2 and out.stdout == "", out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "control character" in lines[0], out.stderr


def test_a_newline_in_the_current_folder_is_refused(tmp_path):
    folder = tmp_path / ("work" + INJECTED.strip("\n").replace(" ", "_") + "\nx")
    folder.mkdir()
    out = dry_run(folder)
    assert out.returncode == 2 and "the current folder" in out.stderr, out.stderr


@pytest.mark.parametrize("key", ["partition", "time", "account", "sbatch_args"])
def test_a_newline_in_the_workspace_slurm_table_is_refused_naming_the_key(key):
    value = ["--qos=high" + INJECTED] if key == "sbatch_args" else "x" + INJECTED
    spec = LaunchSpec(command=("true",), num_workers=2, launcher="slurm", slurm={key: value})
    with pytest.raises(UserError, match=f"\\[slurm\\] {key}"):
        validate(spec)


def test_the_printed_script_run_by_sh_executes_no_value(tmp_path):
    """Shell words in values stay words: #SBATCH lines are quoted, the exec line too."""
    folder = tmp_path / "a $(touch INJECTED) `touch INJECTED` b"
    folder.mkdir()
    out = dry_run(
        folder, "--partition=x;touch INJECTED", "--sbatch-arg=--comment=$(touch INJECTED)"
    )
    assert out.returncode == 0, out.stderr
    (folder / "job.sh").write_text(out.stdout)
    subprocess.run(["sh", "job.sh"], cwd=folder, capture_output=True, timeout=60)
    assert not list(tmp_path.rglob("INJECTED"))
