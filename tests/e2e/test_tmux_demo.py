"""The real `imgscale-tui --demo` in tmux: keys run the preparation stages and a short local training."""

from __future__ import annotations

import hashlib
import os
import re
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
        (
            line
            for line in screen.splitlines()
            if line.strip("│ ").lstrip("▶ ").startswith(stage + " ")  # a dashboard pane has borders
        ),
        "",
    )


def start(tmp_path, size: tuple[int, int]) -> tuple[Tmux, Path]:
    """The console on a new demo workspace in a private tmux of `size`; it stays open after quitting."""
    tmux = Tmux(tmp_path / "tmux.sock")
    demo = tmp_path / "demo"
    env = {
        "IMGSCALE_HOME": str(tmp_path / "home"),
        "OMP_NUM_THREADS": "1",
        "TERM": "xterm-256color",
    }
    # COLUMNS/LINES (set under pytest) would override the tmux window's size in Textual
    command = " ".join(
        [
            "env -u COLUMNS -u LINES",
            *(f"{k}={v}" for k, v in env.items()),
            str(TUI),
            "--demo",
            str(demo),
        ]
    )
    # after the console exits the shell prints a marker and waits, so what it printed stays on screen
    width, height = size
    tmux.run(
        "new-session",
        "-d",
        "-x",
        str(width),
        "-y",
        str(height),
        f"{command}; echo QUIT-DONE; sleep 120",
    )
    return tmux, demo


def header(screen: str) -> str:
    return screen.splitlines()[0] if screen else ""


def checkpoint_files(demo: Path) -> dict[str, str]:
    """The model's files by content (its TensorBoard folder, PREFIX-tb, beside them is not one)."""
    files = [p for p in (demo / "model").iterdir() if p.is_file()]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.parametrize("size", [(200, 60), (80, 24)], ids=["200x60", "80x24"])
def test_demo_journey_prepare_train_benchmark_quit(tmp_path, size):
    tmux, demo = start(tmp_path, size)
    dashboard = size == (200, 60)
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
        if not dashboard:
            tmux.wait_for(
                lambda s: " running " in row(s, "train") or " done " in row(s, "train"),
                "train running",
                60,
            )
            tmux.keys("3")
        screen = tmux.wait_for(
            lambda s: "epoch 0 localhost#0: train accuracy=" in s, "the epoch summary", TRAIN_S
        )
        if (
            dashboard
        ):  # one screen: the stages, the hosts grid with the job's img/s, the training log
            screen = tmux.wait_for(lambda s: " done " in row(s, "train"), "train done", TRAIN_S)
            host = next(
                line for line in screen.splitlines() if "localhost " in line and "%" in line
            )
            assert re.search(r"\s\d[\d,]*\s", host.split("%")[-1]), host  # IMG/S of the job
            assert "1 Stages" in screen and "2 Hosts" in screen and "3 Log" in screen
            assert "Saved checkpoint" in screen and "ep 1/1" in row(screen, "train")
        else:
            tmux.keys("1")
            tmux.wait_for(lambda s: " done " in row(s, "train"), "train done", TRAIN_S)
        assert " img/s" in header(screen) and "train-" in header(tmux.screen())
        trained = checkpoint_files(demo)
        assert "resnet-0001.params" in trained

        tmux.keys("b")  # a benchmark: its own job kind, never the model's checkpoint
        tmux.wait_for(lambda s: "Launch benchmark?" in s, "the benchmark plan", 60)
        assert "warning" not in tmux.screen()
        tmux.keys("y")
        tmux.wait_for(
            lambda s: "bench-" in header(s) and "running" in header(s), "benchmark running", 60
        )
        tmux.keys("q")
        screen = tmux.wait_for(lambda s: "QUIT-DONE" in s, "the console quit", 30)
        assert "keeps running" in screen and "imgscale attach bench-" in screen, screen
        bench = next(
            p for p in (tmp_path / "home" / "jobs").iterdir() if p.name.startswith("bench-")
        )
        attach = subprocess.run(
            [str(TUI.with_name("imgscale")), "attach", bench.name, "--lines", "0"],
            env={**os.environ, "IMGSCALE_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=TRAIN_S,
            check=False,
        )
        assert attach.returncode == 0 and "done" in attach.stderr + attach.stdout, attach
        assert (
            checkpoint_files(demo) == trained
        )  # byte-identical: the benchmark wrote nothing there
    finally:
        tmux.run("kill-server")
