"""place: only .rec files move into train/ and val/ (a --data-train folder reads every file); undoable."""

import pytest
from tree_helpers import snapshot

from engine.cli import main
from engine.errors import UserError
from engine.prep.place import place_records, undo_place


@pytest.fixture
def lists(tmp_path):
    """What list + pack leave: chunked train lists, one val list, indexes, label maps, reports."""
    folder = tmp_path / "lists"
    folder.mkdir()
    for stem in ("train_0", "train_1", "val"):
        for ext in (".lst", ".idx", ".rec", ".skipped.tsv", ".pack.json"):
            (folder / f"{stem}{ext}").write_text(f"{stem}{ext}")
    (folder / "train_labels.txt").write_text("n01\t0\n")
    (folder / "val_labels.txt").write_text("n01\t0\n")
    return folder


def test_only_rec_files_move(lists, tmp_path):
    result = place_records(lists, tmp_path / "train", tmp_path / "val")
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["train_0.rec", "train_1.rec"]
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == ["val.rec"]
    assert (lists / "train_0.idx").exists() and not list(lists.glob("*.rec"))
    assert (result.train, result.val, result.strays) == (
        ("train_0.rec", "train_1.rec"),
        ("val.rec",),
        (),
    )


def test_second_run_is_a_no_op_and_undo_restores(lists, tmp_path):
    before = snapshot(tmp_path)
    place_records(lists, tmp_path / "train", tmp_path / "val")
    again = place_records(lists, tmp_path / "train", tmp_path / "val")
    assert again.moved_now == 0 and len(again.train) == 2
    result = undo_place(lists)
    assert result.restored == 3
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "train").exists()  # the folder place made is gone again


def test_unpacked_list_refuses_to_place_half_a_dataset(lists, tmp_path):
    (lists / "train_1.rec").rename(lists / "train_1.rec.part")  # pack still running or interrupted
    with pytest.raises(UserError, match="train_1.rec is missing"):
        place_records(lists, tmp_path / "train", tmp_path / "val")
    assert not (tmp_path / "train").exists()


def test_nothing_packed_is_a_clear_error(tmp_path):
    (tmp_path / "lists").mkdir()
    with pytest.raises(UserError, match="run `imgscale pack` first"):
        place_records(tmp_path / "lists", tmp_path / "train", tmp_path / "val")


def test_stray_files_in_train_are_reported(lists, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "old.idx").write_text("left by hand")
    result = place_records(lists, tmp_path / "train", tmp_path / "val")
    assert result.strays == (str(tmp_path / "train" / "old.idx"),)


def test_custom_globs_for_im2rec_ratio_names(tmp_path):
    folder = tmp_path / "lists"
    folder.mkdir()
    for name in ("data_0_train", "data_1_train", "data_0_val"):
        (folder / f"{name}.lst").write_text("")
        (folder / f"{name}.rec").write_text(name)
    place_records(
        folder, tmp_path / "t", tmp_path / "v", train_glob="*_train.rec", val_glob="*_val.rec"
    )
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [
        "data_0_train.rec",
        "data_1_train.rec",
    ]


def test_existing_target_is_not_overwritten(lists, tmp_path):
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "val.rec").write_text("someone else's")
    with pytest.raises(UserError, match="val.rec already exists"):
        place_records(lists, tmp_path / "train", tmp_path / "val")
    assert (tmp_path / "val" / "val.rec").read_text() == "someone else's"


def test_cli_place_and_undo(lists, tmp_path, capsys):
    assert main(["place", str(lists), str(tmp_path / "train"), str(tmp_path / "val")]) == 0
    assert "2 .rec files" in capsys.readouterr().out
    assert main(["place", str(lists), "--undo"]) == 0
    assert len(list(lists.glob("*.rec"))) == 3
    capsys.readouterr()
    assert main(["place", str(lists)]) == 2
    err = capsys.readouterr().err
    assert "missing TRAIN_DIR and VAL_DIR" in err and len(err.strip().splitlines()) == 1
