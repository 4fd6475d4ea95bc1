"""Issue 11 items 5 and 6: a move across file systems killed with SIGKILL is finished by resume and
by undo alike; an undo never runs while a stage holds the journal."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tree_helpers import make_tree, snapshot, tmpfs

from engine.errors import UserError
from engine.prep.filter import filter_classes, undo_filter
from engine.prep.journal import Journal, default_journal_path
from engine.prep.split import split_validation, undo_split

REPO = Path(__file__).resolve().parents[2]

# Runs one stage in a child that SIGKILLs itself before its Nth file copy or Nth unlink.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from engine.prep import journal
    from engine.prep.filter import filter_classes
    from engine.prep.split import split_validation

    stage, point, n, root, other = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    calls = []

    def dying(real):
        def call(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        return call

    if point == "copy":
        journal._copy_synced = dying(journal._copy_synced)
    else:
        os.unlink = dying(os.unlink)
    if stage == "filter":
        filter_classes(root, min_images=41, dest=other + "/filtered")
    else:
        split_validation(root, other + "/val", per_class=30, seed=1)
    """
)


@pytest.fixture
def other_fs(tmp_path):
    """A second file system in the test's folder: a tmpfs, unmounted in teardown."""
    with tmpfs(tmp_path / "other-fs") as mount:
        yield mount


def kill_mid_move(stage, point, n, root, other):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", CHILD, stage, point, str(n), str(root), str(other)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr


def images(folder):
    return sorted(p.name for p in Path(folder).rglob("*.JPEG"))


@pytest.mark.parametrize("point", ["copy", "remove"])
@pytest.mark.parametrize("finish", ["resume", "undo"])
def test_filter_killed_mid_cross_fs_move_resumes_or_undoes(tmp_path, other_fs, point, finish):
    root = make_tree(tmp_path / "disk" / "train", {"n00000": 40, "n00001": 41})
    before = snapshot(root)
    kill_mid_move("filter", point, 20, root, other_fs)
    moved = other_fs / "filtered" / "n00000"
    if point == "remove":  # the state of the report: a whole copy, half an original
        assert len(images(moved)) == 40 and 0 < len(images(root / "n00000")) < 40
    if finish == "resume":
        filter_classes(root, min_images=41, dest=other_fs / "filtered")
        assert len(images(moved)) == 40 and not (root / "n00000").exists()
        assert undo_filter(root).conflicts == ()
    else:
        assert undo_filter(root).conflicts == ()
    assert snapshot(root) == before
    assert not moved.exists() and not list(other_fs.rglob("*.moving"))


@pytest.mark.parametrize("finish", ["resume", "undo"])
def test_split_killed_between_copy_and_unlink_resumes_or_undoes(tmp_path, other_fs, finish):
    root = make_tree(tmp_path / "disk" / "train", {"n00000": 40, "n00001": 41})
    before = snapshot(root)
    kill_mid_move("split", "remove", 25, root, other_fs)
    if finish == "resume":
        result = split_validation(root, other_fs / "val", per_class=30, seed=1)
        assert len(images(other_fs / "val")) == 60 and len(images(root)) == 21
        assert result.moved == (("n00000", 30), ("n00001", 30))
    undo = undo_split(root)
    assert undo.conflicts == () and snapshot(root) == before


def test_undo_waits_for_no_one_while_a_stage_holds_the_journal(tmp_path):
    root = make_tree(tmp_path / "train", {"n01": 5, "n02": 6})
    split_validation(root, tmp_path / "val", per_class=2)
    before = snapshot(tmp_path)
    with Journal(default_journal_path("split", root)):  # a split still running
        with pytest.raises(UserError, match="another imgscale run holds"):
            undo_split(root)
    assert snapshot(tmp_path) == before
