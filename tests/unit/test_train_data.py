"""Which files a --data-train path reads, and the equal-batches guard, without MXNet."""

import pytest

from engine.errors import UserError
from engine.recordio import frame
from engine.train.mxnet.data import fixed_batches, imgrec_arg
from engine.train.recfiles import rec_files


def test_a_directory_gives_its_rec_chunks_and_names_the_ignored_files(tmp_path):
    for name in ("b.rec", "a.rec", "a.idx", "train.lst"):
        (tmp_path / name).write_bytes(frame(b"one record") if name.endswith(".rec") else b"x")
    warnings = []
    files = rec_files(str(tmp_path), warn=warnings.append)
    assert files == [str(tmp_path / "a.rec"), str(tmp_path / "b.rec")]
    assert warnings == [f"--data-train {tmp_path}: ignoring 2 non-.rec file(s): a.idx, train.lst"]


def test_missing_path_empty_directory_and_non_rec_file_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        rec_files(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="no .rec files"):
        rec_files(str(tmp_path), "--data-val")
    (tmp_path / "x.idx").write_text("0\t0\n")
    with pytest.raises(UserError, match="not a .rec file"):
        rec_files(str(tmp_path / "x.idx"))


def test_chunks_are_joined_for_one_stream_and_semicolons_refused():
    assert imgrec_arg(["a.rec", "b.rec"]) == "a.rec;b.rec"
    with pytest.raises(UserError, match="rename"):
        imgrec_arg(["a;b.rec"])


class Counter:
    """A stand-in data iterator with `size` batches per pass."""

    def __init__(self, size):
        self.size, self.pos, self.resets = size, 0, 0

    def __next__(self):
        if self.pos == self.size:
            raise StopIteration
        self.pos += 1
        return self.pos

    def reset(self):
        self.pos, self.resets = 0, self.resets + 1


def test_fixed_batches_run_the_same_count_whatever_the_shard_holds():
    short, long = Counter(3), Counter(7)
    assert list(fixed_batches(short, 5)) == [1, 2, 3, 1, 2]  # a short shard starts over
    assert list(fixed_batches(long, 5)) == [1, 2, 3, 4, 5]  # a long one stops at the count
    assert list(fixed_batches(long, 5)) == [
        6,
        7,
        1,
        2,
        3,
    ]  # and the next epoch continues where it was
