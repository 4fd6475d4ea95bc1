"""Item 1 of issue 11: stages never reach outside the workspace or move folders that are not classes."""

from pathlib import Path

import pytest
from tree_helpers import make_tree, snapshot

from engine import workspace as wsmod
from engine.errors import UserError
from engine.events import SkippedItem
from engine.prep.filter import filter_classes
from engine.prep.split import split_validation
from engine.workspace.pipeline import prepare


def test_workspace_root_leaving_the_workspace_is_refused(tmp_path):
    outside = make_tree(tmp_path / "system", {"n01": 4, "n02": 1})
    before = snapshot(outside)
    wsmod.create(tmp_path / "a" / "ws", {"root": "../../system", "hosts": ""})
    with pytest.raises(UserError, match=r"root = '../../system' leads to .*outside the workspace"):
        prepare(tmp_path / "a" / "ws")
    assert snapshot(outside) == before  # nothing moved or added
    assert not (tmp_path / "system_filtered").exists()


def test_a_written_path_leaving_the_workspace_is_refused(tmp_path):
    ws = wsmod.create(tmp_path / "ws", {"root": "images", "lists_dir": "/etc/imgscale-lists"})
    with pytest.raises(UserError, match="lists_dir"):
        ws.check_paths()


def test_a_root_given_on_the_command_line_may_lie_outside(tmp_path):
    ws = wsmod.create(tmp_path / "ws", {"root": str(tmp_path / "tree")})
    with pytest.raises(UserError, match="--source"):
        ws.check_paths()
    ws.given = ((tmp_path / "tree").resolve(),)
    ws.check_paths()  # named on the command line: accepted


def test_filter_never_moves_a_folder_without_images(tmp_path):
    root = make_tree(tmp_path / "train", {"n01": 5, "n02": 2, "n03": 4})
    (root / "docs").mkdir()
    (root / "docs" / "readme.txt").write_text("not a class")
    events = []
    result = filter_classes(root, min_images=3, on_event=events.append)
    assert result.removed == (("n02", 2),)
    assert (root / "docs" / "readme.txt").is_file()
    skipped = [e for e in events if isinstance(e, SkippedItem)]
    assert [(Path(e.path).name, e.reason) for e in skipped] == [
        ("docs", "holds no image: not a class, left in place")
    ]


@pytest.mark.parametrize("stage", ["filter", "split"])
def test_a_root_of_mostly_non_class_folders_is_refused(tmp_path, stage):
    root = make_tree(tmp_path / "etc-like", {"n01": 9})
    for name in ("apt", "cron.d", "ssl"):
        (root / name).mkdir()
        (root / name / "conf").write_text("x")
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match=r"3 of its 4 subfolders hold no image"):
        if stage == "filter":
            filter_classes(root, min_images=20)
        else:
            split_validation(root, tmp_path / "val", per_class=2)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("root", ["/", "/etc", "/usr/share", "/root", "/home", "~"])
@pytest.mark.parametrize("stage", ["filter", "split"])
def test_system_and_home_folders_are_refused_as_root(tmp_path, root, stage):
    root = Path(root).expanduser()
    if not root.is_dir():
        pytest.skip(f"{root} does not exist on this machine")
    with pytest.raises(UserError, match="system or home folder"):
        if stage == "filter":
            filter_classes(root, min_images=10**9, dest=tmp_path / "out")
        else:
            split_validation(root, tmp_path / "val", per_class=1)
