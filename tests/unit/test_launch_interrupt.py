"""Issue 11 item 4: Ctrl-C while a job starts stops every process that was started."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def processes_of(job: str) -> list[int]:
    needle = f"IMGSCALE_JOB={job}".encode()
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = pathlib.Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry))
    return found


@pytest.mark.parametrize("when", ["starting", "started"])
def test_ctrl_c_while_starting_leaves_no_process(tmp_path, when):
    job = f"int-{when}"
    env = {**os.environ, "IMGSCALE_HOME": str(tmp_path / "state"), "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "engine.cli", "launch", "-n", "4", "-s", "0", "--job", job,
            "--run-dir", str(tmp_path / "runs"), "--", "sh", "-c", "sleep 600"]  # fmt: skip
    launcher = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        for line in launcher.stdout:
            if f"job {job} {when}" in line or (
                when == "starting" and f"job {job}: starting" in line
            ):
                launcher.send_signal(signal.SIGINT)
                break
        launcher.communicate(timeout=60)
        assert launcher.returncode == 130
        assert processes_of(job) == []
        record = json.loads((tmp_path / "state" / "jobs" / job / "job.json").read_text())
        assert record["state"] == "stopped" and record["clean"] is True
    finally:
        launcher.kill()
        for pid in processes_of(job):
            os.kill(pid, signal.SIGKILL)
