"""Issue 21 item 7: one lock per workspace. A second `prepare`, a `split --undo` or a console stage
while another run works on the workspace is refused in one line naming that run; a lock left by
a killed process is taken over. Real processes, paused with SIGSTOP at a known point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine import workspace as wsmod
from engine.errors import UserError
from engine.events import ignore
from engine.prep.wslock import WorkspaceLock
from engine.workspace.runner import StageRun

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def imgscale(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True,
                          text=True, env=ENV, timeout=120, **kw)  # fmt: skip


@pytest.fixture()
def paused_prepare(tmp_path):
    """`imgscale prepare --demo` stopped (SIGSTOP) as soon as its pack stage says it runs."""
    ws = tmp_path / "ws"
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "prepare", "--demo", str(ws)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        for line in proc.stderr:
            if line.startswith("pack: running"):
                proc.send_signal(signal.SIGSTOP)
                break
        else:
            raise AssertionError(f"prepare ended before pack: {proc.wait()}")
        yield ws, proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.communicate()


def resume(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGCONT)
    proc.communicate(timeout=120)
    return proc.returncode


def one_line_naming(result: subprocess.CompletedProcess, holder: subprocess.Popen) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"pid {holder.pid}" in lines[0] and "since" in lines[0], lines[0]
    return lines[0]


def test_a_second_prepare_is_refused_naming_the_running_one(paused_prepare):
    ws, first = paused_prepare
    line = one_line_naming(imgscale("prepare", str(ws)), first)
    assert "prepare" in line and str(ws) in line
    assert resume(first) == 0
    assert "nothing left to do" in imgscale("prepare", str(ws)).stdout


def test_split_undo_during_prepare_moves_nothing_and_prepare_finishes_whole(paused_prepare):
    ws, first = paused_prepare
    val = ws / "data" / "images_val"
    before = sorted(p.relative_to(val) for p in val.rglob("*.JPEG"))
    one_line_naming(imgscale("split", str(ws / "data" / "images"), "--undo"), first)
    assert sorted(p.relative_to(val) for p in val.rglob("*.JPEG")) == before and before
    assert resume(first) == 0
    assert wsmod.load(ws).stage_record("split")["state"] == "done"


def test_a_console_stage_is_refused_while_prepare_runs_and_blocks_the_cli(paused_prepare):
    ws, first = paused_prepare
    workspace = wsmod.load(ws)
    with pytest.raises(UserError, match=f"pid {first.pid}"):
        StageRun(workspace, "split", ignore, undo=True).begin()
    assert resume(first) == 0
    run = StageRun(workspace, "filter", ignore, undo=True)
    run.begin()  # the console's stage holds the lock now
    try:
        refused = imgscale("prepare", str(ws))
        assert refused.returncode == 2 and f"pid {os.getpid()}" in refused.stderr, refused.stderr
        assert "filter undo" in refused.stderr
    finally:
        run.own_lock.release()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    code = (
        "import sys; from engine.prep.wslock import WorkspaceLock; "
        f"WorkspaceLock([{str(tmp_path)!r}], 'prepare').take(); print('held', flush=True); "
        "sys.stdin.read()"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(UserError, match=f"pid {holder.pid}"):
            WorkspaceLock([tmp_path], "split").take()
        holder.kill()
        holder.wait()
        with WorkspaceLock([tmp_path], "split"):
            assert f'"pid": {os.getpid()}' in (tmp_path / ".imgscale" / "lock").read_text()
    finally:
        holder.kill()
        holder.communicate()


def test_the_lock_finds_workspaces_by_the_workspace_file_name(tmp_path):
    from engine.prep import wslock

    assert wslock.CONFIG_NAME == wsmod.CONFIG_NAME
    wsmod.create(tmp_path / "ws", {"root": "images"})
    assert wslock.lock_folder(tmp_path / "ws" / "images" / "n01") == tmp_path / "ws"
    assert wslock.lock_folder(tmp_path / "elsewhere" / "tree") == tmp_path / "elsewhere"


@pytest.mark.parametrize("command", ["filter", "list", "pack"])
def test_every_cli_stage_is_refused_while_prepare_runs(paused_prepare, command):
    ws, first = paused_prepare
    data = ws / "data"
    args = {
        "filter": ["filter", str(data / "images"), "--undo"],
        "list": ["list", str(data / "lists" / "again"), str(data / "images"), "--recursive"],
        "pack": ["pack", str(data / "lists" / "train"), str(data / "images")],
    }[command]
    line = one_line_naming(imgscale(*args), first)
    assert "prepare" in line
    assert resume(first) == 0
