"""Issue 11 item 11: training on a cut or damaged .rec ends in one line naming the file and offset."""

from __future__ import annotations

import shutil

import pytest
from trainrun import COMMON, data_args, run_train

from engine.recordio import read_index

pytestmark = [pytest.mark.mxnet, pytest.mark.slow]


@pytest.fixture
def damaged(demo_rec, tmp_path):
    """A copy of the demo data whose training chunks can be damaged freely."""
    train = tmp_path / "train"
    shutil.copytree(demo_rec.train_dir, train)
    return demo_rec, train


def last_line(out):
    return out.stdout.strip().splitlines()[-1]


def test_a_record_damaged_mid_file_is_named_with_its_offset(damaged):
    data, train = damaged
    rec = sorted(train.glob("*.rec"))[0]
    offsets = sorted(o for _, o in read_index(f"{data.lists}/{rec.stem}.idx"))
    # not one of the records the start-up check samples: MXNet's reader meets it mid-epoch
    bad = offsets[len(offsets) // 3 + 1]
    with open(rec, "r+b") as f:
        f.seek(bad)
        f.write(b"JUNK")
    out = run_train(
        *COMMON, *data_args(data), "--data-train", train, "--num-epochs", 1, "--kv-store", "local"
    )
    assert out.returncode != 0 and "Traceback" not in out.stdout
    assert last_line(out) == (
        f"imgscale train: {rec}: bad magic at offset {bad}; MXNet stopped there: "
        "pack that file again (imgscale pack)"
    )


def test_a_truncated_rec_is_refused_before_training(damaged):
    data, train = damaged
    rec = sorted(train.glob("*.rec"))[-1]
    rec.write_bytes(rec.read_bytes()[:-100])
    out = run_train(
        *COMMON, *data_args(data), "--data-train", train, "--num-epochs", 1, "--kv-store", "local"
    )
    assert out.returncode == 2 and "Traceback" not in out.stdout
    assert last_line(out).startswith(f"imgscale train: --data-train {rec}: record at offset")
    assert "is cut short (the file is truncated)" in last_line(out)
