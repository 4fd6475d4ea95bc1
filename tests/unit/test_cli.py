"""The `imgscale` command: user mistakes get one line and exit status 2, never a traceback."""

import subprocess
import sys

import pytest


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args, names",
    [
        (("pack", "--bogus", "p", "r"), "--bogus"),
        (("filter",), "ROOT"),
        (("nosuch",), "nosuch"),
        (("filter", "/no/such/folder"), "/no/such/folder"),
    ],
)
def test_user_error_is_one_line_naming_the_culprit(args, names):
    result = _run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0] and "Traceback" not in result.stderr


def test_help_lists_every_area():
    out = _run("--help").stdout
    for command in ("prepare", "pack", "launch", "train", "bench"):
        assert command in out
