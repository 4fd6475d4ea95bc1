"""Issue 21 item 8: a training run killed with its loader workers leaves no pymp-* folders behind."""

import os
import signal
import subprocess
import sys
import tempfile

import pytest

pytest.importorskip("torch", reason="the torch engine is an extra: pip install -e .[torch]")
pytest.importorskip("cv2", reason="OpenCV decodes the images")

from test_torch_data import _loader, solid_rec  # noqa: F401 - the fixture is used by name

from engine.train.torch import data

# A trainer's loader with one worker process: one batch read, then it waits to be killed.
TRAINER = """
import sys
from engine.train.torch import data
loader = data.RecordLoader(data.open_index(sys.argv[1]), 4, data.Augment(size=16, mode="centre"),
                           threads=1, mean=(0, 0, 0), std=(1, 1, 1))
next(iter(loader))
print("ready", flush=True)
sys.stdin.read()
"""


def pymp_folders(top):
    return [
        path for path, _dirs, _files in os.walk(top) if os.path.basename(path).startswith("pymp-")
    ]


def test_a_run_killed_with_its_workers_leaves_no_pymp_folders_after_the_next_start(
    tmp_path_factory,
    solid_rec,  # noqa: F811 - the fixture
    monkeypatch,
):
    temp = tmp_path_factory.mktemp("t")  # short: a socket's path must fit in 107 bytes
    trainer = subprocess.Popen(
        [sys.executable, "-c", TRAINER, solid_rec],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=dict(os.environ, TMPDIR=str(temp)),
        start_new_session=True,
        text=True,
    )
    try:
        assert trainer.stdout.readline().strip() == "ready"
        assert pymp_folders(temp)  # the worker passes its batches through one
    finally:
        os.killpg(
            trainer.pid, signal.SIGKILL
        )  # the trainer and its worker, as the OOM killer would
        trainer.wait()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    _loader(solid_rec, threads=1)  # the next run's loader, on the same host
    assert pymp_folders(temp) == []
    assert os.listdir(temp) == []


def test_the_folder_of_a_running_trainer_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    os.mkdir(data.loader_temp_dir(os.getpid()))
    data.remove_stale_loader_temp_dirs()
    assert os.listdir(tmp_path) == [os.path.basename(data.loader_temp_dir(os.getpid()))]


def test_a_temp_folder_too_long_for_sockets_is_left_as_it_is(tmp_path, monkeypatch):
    long = tmp_path / ("x" * 60)
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    data.use_loader_temp_dir(
        os.getpid()
    )  # the worker would wait for ever on a socket it cannot make
    assert tempfile.tempdir == str(long) and os.listdir(long) == []
