"""split: K seeded-random images per class go to VAL_ROOT; deterministic, journaled, undoable."""

import pytest
from tree_helpers import crash_on_move, make_tree, snapshot

from engine.cli import main
from engine.errors import UserError
from engine.events import SkippedItem
from engine.prep.split import split_validation, undo_split

SIZES = {"n01": 12, "n02": 9, "n03": 3, "n04": 4}


def chosen(val_root):
    return sorted(str(p.relative_to(val_root)) for p in val_root.rglob("*") if p.is_file())


def test_moves_k_per_class_and_leaves_small_classes_whole(tmp_path):
    root = make_tree(tmp_path / "train", SIZES, notes=True)
    events = []
    result = split_validation(root, tmp_path / "val", per_class=4, seed=0, on_event=events.append)
    assert result.moved == (("n01", 4), ("n02", 4)) and result.short == (("n03", 3), ("n04", 4))
    assert (
        len(list((root / "n01").glob("*.JPEG"))) == 8
        and len(list((root / "n04").glob("*.JPEG"))) == 4
    )
    assert not (tmp_path / "val" / "n03").exists()
    assert [e.path.endswith("n03") for e in events if isinstance(e, SkippedItem)] == [True, False]
    assert not list((tmp_path / "val").rglob("*.txt"))


def test_same_seed_same_choice_other_seed_other_choice(tmp_path):
    picks = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        root = make_tree(tmp_path / name / "train", SIZES, notes=True)
        split_validation(root, tmp_path / name / "val", per_class=4, seed=seed)
        picks.append(chosen(tmp_path / name / "val"))
    assert picks[0] == picks[1] != picks[2]


def test_choice_of_a_class_does_not_depend_on_other_classes(tmp_path):
    a = make_tree(tmp_path / "a" / "train", SIZES, notes=True)
    b = make_tree(tmp_path / "b" / "train", {"n01": 12}, notes=True)
    split_validation(a, tmp_path / "a" / "val", per_class=4)
    split_validation(b, tmp_path / "b" / "val", per_class=4)
    assert [p for p in chosen(tmp_path / "a" / "val") if p.startswith("n01")] == chosen(
        tmp_path / "b" / "val"
    )


def test_second_run_is_a_no_op_and_undo_restores_exactly(tmp_path):
    root = make_tree(tmp_path / "train", SIZES, notes=True)
    before = snapshot(tmp_path)
    split_validation(root, tmp_path / "val", per_class=4)
    again = split_validation(root, tmp_path / "val", per_class=4)
    assert again.moved_now == 0 and len(chosen(tmp_path / "val")) == 8
    result = undo_split(root, tmp_path / "val")
    assert result.restored == 8
    assert snapshot(tmp_path) == before


def test_crash_mid_split_resumes_then_undo_restores(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "train", SIZES, notes=True)
    before = snapshot(root)
    crash_on_move(
        monkeypatch, lambda: split_validation(root, tmp_path / "val", per_class=4, seed=3), 3
    )
    resumed = split_validation(root, tmp_path / "val", per_class=4, seed=3)
    assert resumed.moved_now == 6

    fresh = make_tree(tmp_path / "fresh" / "train", SIZES, notes=True)
    split_validation(fresh, tmp_path / "fresh" / "val", per_class=4, seed=3)
    assert chosen(tmp_path / "val") == chosen(
        tmp_path / "fresh" / "val"
    )  # same as never interrupted
    undo_split(root)
    assert snapshot(root) == before and not list((tmp_path / "val").rglob("*.JPEG"))


def test_val_root_inside_root_is_refused(tmp_path):
    root = make_tree(tmp_path / "train", SIZES, notes=True)
    with pytest.raises(UserError, match="inside ROOT"):
        split_validation(root, root / "val")
    with pytest.raises(UserError, match="ROOT .* is inside VAL_ROOT"):
        split_validation(root, tmp_path)


def test_split_into_another_folder_after_a_split_is_refused(tmp_path):
    root = make_tree(tmp_path / "train", SIZES, notes=True)
    split_validation(root, tmp_path / "val", per_class=2)
    with pytest.raises(UserError, match="already split"):
        split_validation(root, tmp_path / "val2", per_class=2)


def test_cli_split_and_undo(tmp_path, capsys):
    root = make_tree(tmp_path / "train", SIZES, notes=True)
    assert main(["split", str(root), str(tmp_path / "val"), "--per-class", "4"]) == 0
    out = capsys.readouterr().out
    assert "moved 8 images of 2 classes" in out and "left whole: n03 has only 3 images" in out
    assert main(["split", str(root), "--undo"]) == 0
    assert not list((tmp_path / "val").rglob("*.JPEG"))


def test_cli_missing_val_root_is_one_line(tmp_path, capsys):
    root = make_tree(tmp_path / "train", SIZES, notes=True)
    assert main(["split", str(root)]) == 2
    err = capsys.readouterr().err
    assert "missing VAL_ROOT" in err and len(err.strip().splitlines()) == 1
    assert main(["split", str(root), str(tmp_path / "v"), "--per-class", "0"]) == 2
    assert "--per-class 0" in capsys.readouterr().err
