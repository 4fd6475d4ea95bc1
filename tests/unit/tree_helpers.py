"""What the prep tests share: file-tree snapshots, small class trees, a process that dies between moves
(by exception, or stopped at an exact point and SIGKILLed), a second file system."""

import contextlib
import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from engine.prep import journal as jmod


def snapshot(top, with_journals=False):
    """{relative path: sha256} of every file under TOP; journals (under .imgscale) only if asked."""
    return {
        str(p.relative_to(top)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(pathlib.Path(top).rglob("*"))
        if p.is_file() and (with_journals or ".imgscale" not in p.parts)
    }


def make_tree(root, sizes, notes=False):
    """ROOT/<class>/<class>_<i>.JPEG, SIZES[class] files each; with NOTES also a non-image notes.txt."""
    for cls, n in sizes.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            (root / cls / f"{cls}_{i}.JPEG").write_bytes(f"{cls}{i}".encode())
        if notes:
            (root / cls / "notes.txt").write_text("not an image: never moved")
    return root


def crash_on_move(monkeypatch, action, number):
    """Run ``action`` with the process 'dying' (KeyboardInterrupt) just before its NUMBER-th move."""
    real_move, calls = jmod.move_path, []

    def move(src, dst, on_copied=None):
        calls.append(src)
        if len(calls) == number:
            raise KeyboardInterrupt
        real_move(src, dst, on_copied)

    monkeypatch.setattr(jmod, "move_path", move)
    with pytest.raises(KeyboardInterrupt):
        action()
    monkeypatch.setattr(jmod, "move_path", real_move)


# A real `imgscale` process that stops itself (SIGSTOP) just before its (N+1)-th move of a path
# under a folder, so a test can SIGKILL it there: exactly N moves done, the next one journaled but
# not made. The audit hook only observes os.rename (every move is one); it changes nothing.
STOP_BEFORE_MOVE = r"""
import os, signal, sys
under, limit, moves = os.environ["STOP_UNDER"] + os.sep, int(os.environ["STOP_AFTER"]), 0

def stop_before_a_move(event, args):
    global moves
    if event == "os.rename" and os.fspath(args[0]).startswith(under):
        if moves == limit:
            os.kill(os.getpid(), signal.SIGSTOP)
        moves += 1

sys.addaudithook(stop_before_a_move)
from engine.cli import main
sys.exit(main())
"""
STOP_DEADLINE_S = 120.0


def start_until_it_stops(code, argv, env, log):
    """Run ``python -c CODE ARGV`` (output to ``log``) until it stops itself with SIGSTOP."""

    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *map(str, argv)],
            env={**os.environ, **env},
            stdout=out,
            stderr=out,
        )
    deadline = time.monotonic() + STOP_DEADLINE_S
    while True:
        pid, status = os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)
        if pid:
            if not os.WIFSTOPPED(status):
                proc.returncode = os.waitstatus_to_exitcode(status)
                raise AssertionError(f"it ended first: {pathlib.Path(log).read_text()[-2000:]}")
            return proc
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError("the process never reached its stop point")
        time.sleep(0.01)  # polling a condition with a deadline


def sigkill(proc) -> None:
    """SIGKILL a (stopped) process: no handler, no ``finally`` or ``__exit__`` runs."""

    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def sigkill_before_move(argv, under, moves, log):
    """Run ``imgscale ARGV`` until just before its move number ``moves + 1`` under ``under``, then
    SIGKILL it. ``log`` gets its output."""
    env = {"STOP_UNDER": str(under), "STOP_AFTER": str(moves)}
    sigkill(start_until_it_stops(STOP_BEFORE_MOVE, argv, env, log))


def journal_moves(path) -> int:
    """How many move records the journal at ``path`` holds (each is written before its move)."""

    lines = pathlib.Path(path).read_text().splitlines()
    return sum(json.loads(line).get("op") == "move" for line in lines if line.strip())


@contextlib.contextmanager
def tmpfs(path, size="32m"):
    """A tmpfs mounted at PATH (a second file system, or a small disk), unmounted afterwards;
    skips the test, saying why, where mounting is not allowed."""
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
