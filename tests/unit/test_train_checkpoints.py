"""Finding the newest complete checkpoint: a partial (temporary) file never counts."""

import io
import pathlib
import struct
import zipfile

import pytest

from engine.paths import write_atomic
from engine.train import checkpoints as ck

EMPTY_PARAMS = struct.pack("<QQQQ", 0x112, 0, 0, 0)  # mx.nd.save of no arrays: a whole file


def empty_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("m/data.pkl", b"x")
    return out.getvalue()


def touch(path, data=None):
    """A checkpoint file that reads whole (by its suffix), or ``data``."""
    if data is None:
        name = str(path)
        data = (
            EMPTY_PARAMS
            if name.endswith(".params")
            else empty_zip()
            if name.endswith(".pt")
            else b"x"
        )
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
        touch(tmp_path / name)
    assert ck.newest_checkpoint(prefix, ck.TORCH) == 2
    assert ck.newest_checkpoint(prefix) is None  # MXNet's needs PREFIX-symbol.json too


# ---- issue 21 item 2: the newest checkpoint that loads; writes that fail say where ------------------


@pytest.mark.parametrize("damage", ["cut", "garbage"])
def test_a_damaged_newest_checkpoint_is_skipped_naming_it(tmp_path, damage):
    prefix = str(tmp_path / "m")
    touch(tmp_path / "m-symbol.json")
    touch(tmp_path / "m-0001.params")
    newest = touch(tmp_path / "m-0002.params", EMPTY_PARAMS[:20] if damage == "cut" else b"\0" * 64)
    skipped: list[str] = []
    assert ck.newest_loadable(prefix, warn=skipped.append) == (1, 0)
    assert ck.newest_checkpoint(prefix) == 1  # what the launcher's relaunch passes as --load-epoch
    assert ck.newest_resume_point(prefix).epoch == 1
    assert len(skipped) == 1 and str(newest) in skipped[0]
    assert ("cut short" if damage == "cut" else "not an MXNet .params file") in skipped[0]


def test_a_cut_torch_checkpoint_is_skipped(tmp_path):
    prefix = str(tmp_path / "m")
    touch(tmp_path / "m-0001.pt")
    touch(tmp_path / "m-0001.b000010.pt", empty_zip()[:-30])
    assert ck.newest_loadable(prefix, ck.TORCH, warn=lambda _l: None) == (1, 0)


def test_mxnets_own_params_files_read_whole(tmp_path):
    mx = pytest.importorskip("mxnet", reason="checks the framing against MXNet's own writer")
    path = str(tmp_path / "m-0001.params")
    mx.nd.save(path, {"arg:w": mx.nd.ones((3, 2)), "aux:m": mx.nd.zeros((4,), dtype="float16")})
    assert ck.load_problem(path) is None
    with open(path, "rb") as f:
        data = f.read()
    for cut in (len(data) - 1, len(data) // 2, 30):
        pathlib.Path(path).write_bytes(data[:cut])
        assert ck.load_problem(path) is not None, cut


def test_write_atomic_syncs_the_file_and_its_folder(tmp_path, monkeypatch):
    import os

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    write_atomic(tmp_path / "a", lambda tmp: pathlib.Path(tmp).write_text("x"))
    assert len(synced) == 2  # the file before the rename, the folder after it


def test_a_read_only_prefix_folder_is_one_line_naming_it(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()

    def refuse(tmp):
        raise PermissionError(13, "Permission denied", tmp)

    with pytest.raises(ck.UserError) as err:
        ck.save_file(str(folder / "m"), str(folder / "m-0001.pt"), refuse)
    assert str(folder) in str(err.value) and "permission denied" in str(err.value)
    assert list(folder.iterdir()) == []


def test_a_first_run_over_old_checkpoints_is_refused_naming_resume_and_fresh(tmp_path):
    prefix = str(tmp_path / "m")
    touch(tmp_path / "m-0003.pt")
    with pytest.raises(ck.UserError, match=r"--model-prefix .*m-0003.pt.*--resume.*--fresh"):
        ck.refuse_overwrite(prefix, resume=False, load_epoch=None, fresh=False)
    ck.refuse_overwrite(prefix, resume=True, load_epoch=None, fresh=False)
    ck.refuse_overwrite(prefix, resume=False, load_epoch=None, fresh=True)
    ck.start_fresh(prefix, resume=False, load_epoch=None, fresh=True)
    assert not (tmp_path / "m-0003.pt").exists()
