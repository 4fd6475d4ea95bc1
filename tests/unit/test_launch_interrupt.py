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


IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"
)


def test_second_ctrl_c_while_stopping_kills_every_process_and_ends_the_record(tmp_path):
    """Issue 21 item 5: the second Ctrl-C left TERM-ignoring ranks alive and the job `stopping`."""
    import time

    job = "int-twice"
    env = {**os.environ, "IMGSCALE_HOME": str(tmp_path / "state"), "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "engine.cli", "launch", "-n", "2", "-s", "0", "--job", job,
            "--grace", "60", "--run-dir", str(tmp_path / "runs"), "--",
            sys.executable, "-c", IGNORES_TERM]  # fmt: skip
    launcher = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = []
    try:
        ready = 0
        for line in launcher.stdout:
            output.append(line)
            ready += line.rstrip().endswith("| ready")
            if ready == 2:  # both ranks run and ignore TERM
                launcher.send_signal(signal.SIGINT)
                break
        for line in launcher.stdout:
            output.append(line)
            if f"job {job}: stopping" in line:  # TERM sent; the grace period has begun
                launcher.send_signal(signal.SIGINT)
                started = time.monotonic()
                break
        rest, _ = launcher.communicate(timeout=60)
        output.append(rest)
        assert time.monotonic() - started < 30, "the second Ctrl-C waited out the grace period"
        assert launcher.returncode == 130, "".join(output)
        assert processes_of(job) == []
        record = json.loads((tmp_path / "state" / "jobs" / job / "job.json").read_text())
        assert record["state"] == "stopped" and record["clean"] is True, record
        text = "".join(output)
        assert "same command again" not in text and f"imgscale attach {job}" in text, text
        assert "Traceback" not in text
    finally:
        launcher.kill()
        for pid in processes_of(job):
            os.kill(pid, signal.SIGKILL)


def test_ctrl_c_while_the_command_loads_is_one_line(monkeypatch, capsys):
    """Ctrl-C in the first half second (imports) printed a KeyboardInterrupt traceback."""
    import importlib

    from engine import cli

    def interrupted(name, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert cli.main(["launch", "-n", "1", "--", "true"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "imgscale launch: interrupted before it started"
