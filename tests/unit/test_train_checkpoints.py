"""Finding the newest complete checkpoint: a partial (temporary) file never counts."""

import pathlib

import pytest

from engine.paths import write_atomic
from engine.train import checkpoints as ck


def touch(path, data=b"x"):
    path.write_bytes(data)
    return path


def test_no_symbol_means_no_checkpoint(tmp_path):
    prefix = str(tmp_path / "r50")
    touch(tmp_path / "r50-0003.params")
    assert ck.newest_checkpoint(prefix) is None


def test_newest_complete_epoch_ignores_temporary_and_foreign_files(tmp_path):
    prefix = str(tmp_path / "r50")
    touch(tmp_path / "r50-symbol.json")
    for name in (
        "r50-0001.params",
        "r50-0002.params",
        "r50-0003.params.tmp1234",
        "r50-0004.states",
        "r50-extra-0009.params",
        "r50-0002.b000100.params",
    ):
        touch(tmp_path / name)
    assert ck.epoch_checkpoints(prefix) == [1, 2]
    assert ck.newest_checkpoint(prefix) == 2


def test_resume_point_prefers_a_later_batch_checkpoint_and_its_states(tmp_path):
    prefix = str(tmp_path / "r50")
    touch(tmp_path / "r50-symbol.json")
    touch(tmp_path / "r50-0002.params")
    touch(tmp_path / "r50-0002.b000100.params")
    touch(tmp_path / "r50-0002.b000100.states")
    point = ck.newest_resume_point(prefix)
    assert (point.epoch, point.batch) == (2, 100)
    assert point.params.endswith("r50-0002.b000100.params") and point.states.endswith(".states")
    touch(tmp_path / "r50-0003.params")
    assert ck.newest_resume_point(prefix) == ck.ResumePoint(3, 0, ck.params_path(prefix, 3), None)


def test_prefix_with_glob_characters_is_taken_literally(tmp_path):
    prefix = str(tmp_path / "run[1]")
    touch(tmp_path / "run[1]-symbol.json")
    touch(tmp_path / "run[1]-0005.params")
    assert ck.newest_checkpoint(prefix) == 5


def test_write_atomic_leaves_nothing_when_writing_fails(tmp_path):
    target = tmp_path / "r-0001.params"

    def fail(tmp):
        pathlib.Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(str(target), fail)
    assert list(tmp_path.iterdir()) == []  # neither the target nor the half-written temp file


def test_remove_batch_checkpoints_keeps_only_the_given_one(tmp_path):
    prefix = str(tmp_path / "r")
    for name in (
        "r-0001.b000010.params",
        "r-0001.b000010.states",
        "r-0001.b000020.params",
        "r-0001.params",
    ):
        touch(tmp_path / name)
    ck.remove_batch_checkpoints(prefix, keep=(1, 20))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r-0001.b000020.params", "r-0001.params"]


def test_the_torch_engines_newest_epoch_needs_no_symbol_file(tmp_path):
    prefix = str(tmp_path / "m")
    for name in ("m-0001.pt", "m-0002.pt", "m-0002.b000040.pt", "m-0003.pt.tmp9", "m-0004.params"):
        (tmp_path / name).write_bytes(b"x")
    assert ck.newest_checkpoint(prefix, ck.TORCH) == 2
    assert ck.newest_checkpoint(prefix) is None  # MXNet's needs PREFIX-symbol.json too
