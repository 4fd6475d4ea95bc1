"""filter, split and place SIGKILLed by a real signal mid-move (not an exception that lets cleanup
run), after exactly N moves: the journal holds N+1 move records, the rerun finishes the same plan as
an uninterrupted run, and undo restores the tree byte for byte."""

import shutil
import subprocess
import sys

import pytest
from tree_helpers import journal_moves, make_tree, sigkill_before_move, snapshot

from engine.prep.journal import default_journal_path

pytestmark = pytest.mark.slow


def imgscale(*argv):
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out


def files(top):
    return sorted(str(p.relative_to(top)) for p in top.rglob("*") if p.is_file())


def test_filter_sigkilled_mid_move_resumes_then_undoes(tmp_path):
    root = make_tree(tmp_path / "train", {"n01": 5, "n02": 2, "n03": 3, "n04": 1, "n05": 2})
    twin = tmp_path / "twin"
    shutil.copytree(root, twin / "train")
    before = snapshot(tmp_path / "train")

    sigkill_before_move(["filter", root, "--min-images", "4"], root, 2, tmp_path / "log")
    assert journal_moves(default_journal_path("filter", root)) == 3
    dest = tmp_path / "train_filtered"
    assert len(list(dest.iterdir())) == 2  # two classes moved, the third journaled only

    imgscale("filter", root, "--min-images", "4")
    imgscale("filter", twin / "train", "--min-images", "4")
    assert sorted(p.name for p in dest.iterdir()) == ["n02", "n03", "n04", "n05"]
    assert snapshot(dest) == snapshot(twin / "train_filtered")  # as if never interrupted

    imgscale("filter", root, "--undo")
    assert snapshot(root) == before and files(dest) == []


def test_split_sigkilled_mid_move_resumes_then_undoes(tmp_path):
    sizes = {"n01": 12, "n02": 9, "n03": 3, "n04": 4}
    root = make_tree(tmp_path / "train", sizes, notes=True)
    twin = make_tree(tmp_path / "twin" / "train", sizes, notes=True)
    before = snapshot(root)

    argv = ["split", root, tmp_path / "val", "--per-class", "4", "--seed", "3"]
    sigkill_before_move(argv, root, 5, tmp_path / "log")
    assert journal_moves(default_journal_path("split", root)) == 6
    assert len(files(tmp_path / "val")) == 5

    imgscale(*argv)
    imgscale("split", twin, tmp_path / "twin" / "val", "--per-class", "4", "--seed", "3")
    assert files(tmp_path / "val") == files(tmp_path / "twin" / "val")
    assert len(files(tmp_path / "val")) == 4 + 4  # n03 and n04 are too small to give any

    imgscale("split", root, "--undo")
    assert snapshot(root) == before and files(tmp_path / "val") == []


def test_place_sigkilled_mid_move_resumes_then_undoes(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    for stem in ("train_0", "train_1", "train_2", "val"):
        for ext in (".lst", ".idx", ".rec"):
            (lists / f"{stem}{ext}").write_text(f"{stem}{ext}")
    before = snapshot(lists)
    argv = ["place", lists, tmp_path / "train", tmp_path / "val"]

    sigkill_before_move(argv, lists, 1, tmp_path / "log")
    assert journal_moves(default_journal_path("place", lists)) == 2
    placed = files(tmp_path / "train") + files(tmp_path / "val")
    assert len(placed) == 1

    imgscale(*argv)
    assert files(tmp_path / "train") == ["train_0.rec", "train_1.rec", "train_2.rec"]
    assert files(tmp_path / "val") == ["val.rec"] and not list(lists.glob("*.rec"))

    imgscale("place", lists, "--undo")
    assert snapshot(lists) == before
