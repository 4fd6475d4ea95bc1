"""filter: classes below N images move to ROOT_filtered/, journaled; undo restores the tree exactly."""

import pytest
from tree_helpers import crash_on_move, make_tree, snapshot

from engine.cli import main
from engine.errors import UserError
from engine.prep.filter import count_images, filter_classes, undo_filter


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "train", {"n01": 5, "n02": 2, "n03": 3, "n04": 1})


def test_moves_small_classes_beside_root(tree):
    result = filter_classes(tree, min_images=3)
    assert result.dest == tree.with_name("train_filtered")
    assert result.kept == (("n01", 5), ("n03", 3)) and result.removed == (("n02", 2), ("n04", 1))
    assert sorted(p.name for p in tree.iterdir()) == ["n01", "n03"]
    assert sorted(p.name for p in result.dest.iterdir()) == ["n02", "n04"]
    again = filter_classes(tree, min_images=3)
    assert (again.removed, again.earlier, again.moved_now) == ((), (("n02", 2), ("n04", 1)), 0)


def test_extensions_count_in_any_case_and_others_do_not(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    for name in ("a.JPEG", "b.jpeg", "c.JPG", "d.Png", "e.txt", "f.gif", "g"):
        (folder / name).write_bytes(b"x")
    assert count_images(folder) == 4


def test_undo_restores_the_tree_exactly(tree):
    before = snapshot(tree.parent)
    filter_classes(tree, min_images=3)
    filter_classes(tree, min_images=4)  # a second, stricter run: undo reverts both
    assert sorted(p.name for p in tree.iterdir()) == ["n01"]
    result = undo_filter(tree)
    assert result.restored == 3
    assert snapshot(tree.parent) == before
    assert sorted(p.name for p in tree.parent.iterdir() if not p.name.startswith(".")) == ["train"]


def test_crash_mid_filter_resumes_the_same_plan(tree, monkeypatch):
    crash_on_move(monkeypatch, lambda: filter_classes(tree, min_images=3), 2)
    # Resumed with another threshold: the interrupted plan is finished first, as it was journaled.
    result = filter_classes(tree, min_images=1)
    assert result.removed == (("n02", 2), ("n04", 1)) and result.moved_now == 1
    assert sorted(p.name for p in tree.iterdir()) == ["n01", "n03"]


def test_undo_after_a_crash_restores_everything(tree, monkeypatch):
    before = snapshot(tree.parent)
    crash_on_move(monkeypatch, lambda: filter_classes(tree, min_images=3), 2)
    undo_filter(tree)
    assert snapshot(tree.parent) == before


def test_existing_destination_is_a_clear_error(tree):
    (tree.with_name("train_filtered") / "n02").mkdir(parents=True)
    with pytest.raises(UserError, match="train_filtered/n02 already exists"):
        filter_classes(tree, min_images=3)
    assert sorted(p.name for p in tree.iterdir()) == ["n01", "n02", "n03", "n04"]


def test_cli_prints_keep_and_remove_per_class(tree, capsys):
    assert main(["filter", str(tree), "--min-images", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[:4]] == [
        ["keep", "n01"],
        ["remove", "n02"],
        ["keep", "n03"],
        ["remove", "n04"],
    ]
    assert main(["filter", str(tree), "--undo"]) == 0
    assert "moved 2 classes back" in capsys.readouterr().out
    assert sorted(p.name for p in tree.iterdir()) == ["n01", "n02", "n03", "n04"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["filter", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "nope does not exist" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "f").write_text("x")
    assert main(["filter", str(tmp_path / "f")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "t").mkdir()
    assert main(["filter", str(tmp_path / "t"), "--undo"]) == 2
    assert "nothing to undo" in capsys.readouterr().err


def test_filtering_every_class_away_is_refused(tree):
    with pytest.raises(UserError, match="largest, n01, has 5"):
        filter_classes(tree, min_images=6)
    assert sorted(p.name for p in tree.iterdir()) == ["n01", "n02", "n03", "n04"]
