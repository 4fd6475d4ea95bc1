"""engine.paths: folders made with one clear line, text files written whole."""

import os
import stat

import pytest

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
