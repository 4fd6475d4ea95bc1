"""The real `imgscale-tui --demo` in tmux: keys run the preparation stages and a short local training."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

TUI = Path(sys.executable).with_name("imgscale-tui")
STAGES_S = 180.0
TRAIN_S = 300.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.mxnet,
    pytest.mark.skipif(
        shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)"
    ),
]


class Tmux:
    """One private tmux server (its own socket) running one window."""

    def __init__(self, socket: Path) -> None:
        self.socket = str(socket)

    def run(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-S", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return out.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", *keys)

    def wait_for(self, predicate, what: str, timeout: float) -> str:
        """Poll the screen until `predicate(screen)` holds; fail with the last screen after `timeout`."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(
                0.2
            )  # polling interval of a condition with a deadline, not a synchronisation sleep
        raise AssertionError(f"timed out waiting for {what}; screen:\n{screen}")

    def alive(self) -> bool:
        return (
            subprocess.run(
                ["tmux", "-S", self.socket, "has-session"], capture_output=True, check=False
            ).returncode
            == 0
        )


def row(screen: str, stage: str) -> str:
    return next(
        (line for line in screen.splitlines() if line.strip().lstrip("▶ ").startswith(stage + " ")),
        "",
    )


def test_demo_prepares_and_trains_from_the_keyboard(tmp_path):
    tmux = Tmux(tmp_path / "tmux.sock")
    demo = tmp_path / "demo"
    env = {
        "IMGSCALE_HOME": str(tmp_path / "home"),
        "OMP_NUM_THREADS": "1",
        "TERM": "xterm-256color",
    }
    command = " ".join([*(f"{k}={v}" for k, v in env.items()), str(TUI), "--demo", str(demo)])
    tmux.run(
        "new-session", "-d", "-x", "80", "-y", "24", command
    )  # the smallest terminal we support
    try:
        tmux.wait_for(lambda s: "place" in s and "STAGE" in s, "the stages pane", 60)
        tmux.keys("a")  # run every preparation stage
        screen = tmux.wait_for(lambda s: " done " in row(s, "place"), "place done", STAGES_S)
        for stage in ("disk", "extract", "filter", "split", "list", "pack"):
            assert " done " in row(screen, stage), screen
        assert list((demo / "data/train").glob("*.rec"))
        tmux.keys("l")  # launch: the plan comes first
        tmux.wait_for(lambda s: "Launch train?" in s and "global" in s, "the launch plan", 60)
        tmux.keys("y")
        tmux.wait_for(
            lambda s: " running " in row(s, "train") or " done " in row(s, "train"),
            "train running",
            60,
        )
        tmux.keys("3")
        tmux.wait_for(
            lambda s: "cluster:" in s and "img/s" in s and "localhost" in s,
            "throughput and log lines",
            TRAIN_S,
        )
        tmux.wait_for(
            lambda s: "epoch 0 localhost#0: train accuracy=" in s, "the epoch summary", TRAIN_S
        )
        tmux.keys("1")
        tmux.wait_for(lambda s: " done " in row(s, "train"), "train done", TRAIN_S)
        assert list((demo / "model").glob("resnet-0001.params"))
        tmux.keys("q")
        deadline = time.monotonic() + 30
        while (
            tmux.alive()
        ):  # the window's only command is the console: it closes when the console exits
            assert time.monotonic() < deadline, "q did not quit"
            time.sleep(0.2)
    finally:
        tmux.run("kill-server")
