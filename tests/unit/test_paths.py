"""engine.paths: folders made with one clear line, text files written whole."""

import os
import stat

import pytest

from engine import paths
from engine.errors import UserError
from engine.paths import make_folder, write_text_atomic


def test_a_private_file_is_readable_by_its_owner_alone(tmp_path):
    path = write_text_atomic(tmp_path / "job.json", "{}", private=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "{}"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_text_atomic(tmp_path / "a.txt", "old")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "half \udcff")  # a lone surrogate cannot be written as UTF-8
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_a_file_in_the_way_of_a_folder_is_named(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match=r"a file is in the way \(.*/f is a file"):
        make_folder(tmp_path / "f" / "sub", "--out")


def test_writeback_is_asked_for_a_written_range_and_a_bad_descriptor_is_only_a_refused_hint(
    tmp_path,
):
    path = tmp_path / "big.bin"
    with open(path, "wb", buffering=0) as out:
        out.write(b"x" * (1 << 20))
        assert paths.start_writeback(out.fileno(), 0, 1 << 20)
        assert not paths.start_writeback(out.fileno(), 0, 0)  # nothing to write
    fd = os.open(path, os.O_RDONLY)
    os.close(fd)
    assert not paths.start_writeback(fd, 0, 1 << 20)  # closed: refused, no exception
