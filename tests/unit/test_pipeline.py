"""prepare: every stage in order on a workspace; finished stages skipped, interrupted ones resumed."""

import json
import pathlib

import pytest
from tree_helpers import snapshot

from engine.cli import main
from engine.errors import UserError
from engine.events import StageProgress
from engine.prep.demo import make_demo_tree
from engine.recordio import RecordReader, unpack
from engine.workspace import PREP_STAGES
from engine.workspace.pipeline import prepare


def labels_in(rec_dir):
    labels = []
    for rec in sorted(pathlib.Path(rec_dir).glob("*.rec")):
        with RecordReader(rec) as reader:
            labels += [int(unpack(record)[0].label) for record in reader]
    return labels


def test_demo_runs_every_stage_and_says_what_to_train_with(tmp_path, capsys):
    assert main(["prepare", "--demo", str(tmp_path / "ws")]) == 0
    out = capsys.readouterr().out
    state = json.loads((tmp_path / "ws" / "state.json").read_text())
    assert all(state["stages"][stage]["state"] == "done" for stage in PREP_STAGES)
    data = tmp_path / "ws" / "data"
    assert {p.suffix for p in (data / "train").iterdir()} == {
        ".rec"
    }  # --data-train reads every file
    assert [p.name for p in (data / "val").iterdir()] == ["val.rec"]
    train_labels = labels_in(data / "train")
    classes = len((data / "lists" / "train_labels.txt").read_text().splitlines())
    assert f"--num-classes {classes} --num-examples {len(train_labels)}" in out
    assert set(train_labels) == set(labels_in(data / "val")) == set(range(classes))
    assert "skipped files are listed in" in out  # the demo's broken files are reported, not lost
    assert (data / "imagenet_demo.tar").exists()  # the source is never deleted
    assert f"imgscale-tui {tmp_path / 'ws'}" in out  # and the next command to run
    assert f"imgscale train --data-train {data / 'train'}" in out


def test_second_run_skips_everything(tmp_path, capsys):
    prepare(tmp_path / "ws", demo=True)
    before = snapshot(tmp_path / "ws" / "data", with_journals=True)
    assert main(["prepare", str(tmp_path / "ws")]) == 0
    assert "nothing left to do" in capsys.readouterr().out
    assert snapshot(tmp_path / "ws" / "data", with_journals=True) == before


class StopAt:
    """A sink that interrupts the run (as Ctrl-C would) at a stage's second progress event."""

    def __init__(self, stage):
        self.stage, self.seen = stage, 0

    def __call__(self, event):
        if isinstance(event, StageProgress) and event.stage == self.stage:
            self.seen += 1
            if self.seen == 2:
                raise KeyboardInterrupt


@pytest.mark.parametrize("stage", ["split", "pack"])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, stage, monkeypatch):
    from engine.prep import journal, pack

    monkeypatch.setattr(
        journal.MoveProgress, "EVERY_S", 0.0
    )  # an event per move: stop after the 2nd
    monkeypatch.setattr(pack, "PROGRESS_INTERVAL_S", 0.0)
    with pytest.raises(KeyboardInterrupt):
        prepare(tmp_path / "a", demo=True, on_event=StopAt(stage))
    state = json.loads((tmp_path / "a" / "state.json").read_text())
    assert state["stages"][stage]["state"] == "stopped"
    monkeypatch.undo()
    resumed = prepare(tmp_path / "a", demo=True)
    assert resumed.ran[0] == stage
    prepare(tmp_path / "b", demo=True)
    for folder in ("train", "val", "images", "images_val"):
        a, b = (snapshot(tmp_path / run / "data" / folder, with_journals=True) for run in "ab")
        assert a == b, folder


def test_existing_tree_as_source(tmp_path):
    make_demo_tree(
        tmp_path / "photos", classes=4, images_per_class=[3, 8, 9, 10], max_side=48, seed=2
    )
    options = {
        "filter": {"min_images": 5},
        "split": {"val_per_class": 2},
        "list": {"chunks": 2},
        "pack": {"resize": 32},
    }
    result = prepare(tmp_path / "ws", source=tmp_path / "photos", options=options)
    assert (result.num_classes, result.num_examples, result.val_examples) == (3, 21, 6)
    assert sorted(p.name for p in (tmp_path / "photos_filtered").iterdir()) == ["n01440764"]
    assert len(list((tmp_path / "ws" / "train").glob("*.rec"))) == 2


def test_changed_option_on_a_used_workspace_is_refused(tmp_path):
    prepare(tmp_path / "ws", demo=True)
    with pytest.raises(UserError, match="filter.min_images"):
        prepare(tmp_path / "ws", options={"filter": {"min_images": 3}})


def test_threshold_not_above_val_count_is_refused(tmp_path):
    make_demo_tree(tmp_path / "photos", classes=2, images_per_class=[3, 3], max_side=16)
    with pytest.raises(UserError, match="--min-images 5 must be above --per-class 5"):
        prepare(
            tmp_path / "ws",
            source=tmp_path / "photos",
            options={"filter": {"min_images": 5}, "split": {"val_per_class": 5}},
        )


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err
    assert "is not a workspace yet; add --source" in err and len(err.strip().splitlines()) == 1
    assert main(["prepare", str(tmp_path / "ws"), "--source", str(tmp_path / "nope.tar")]) == 2
    assert "--source" in capsys.readouterr().err


def test_a_threshold_that_filters_everything_can_be_lowered(tmp_path, capsys):
    make_demo_tree(tmp_path / "photos", classes=2, images_per_class=[6, 7], max_side=16)
    ws = str(tmp_path / "ws")
    first = [
        "prepare",
        ws,
        "--source",
        str(tmp_path / "photos"),
        "--min-images",
        "50",
        "--per-class",
        "2",
    ]
    assert main(first) == 2
    assert "lower --min-images" in capsys.readouterr().err
    assert len(list((tmp_path / "photos").iterdir())) == 2  # nothing was moved
    args = [
        "prepare",
        ws,
        "--source",  # a root outside the workspace is named again (workspace.toml alone cannot)
        str(tmp_path / "photos"),
        "--min-images",
        "5",
        "--per-class",
        "2",
        "--resize",
        "16",
        "--chunks",
        "1",
    ]
    assert main(args) == 0
    assert "2 classes, 9 training and 4 validation images" in capsys.readouterr().out


def test_the_labels_are_checked_once_after_the_list_stage_and_its_last_word_is_kept(
    tmp_path, monkeypatch
):
    from engine.workspace import stages

    calls = []
    check = stages.check_labels
    monkeypatch.setattr(stages, "check_labels", lambda ws: calls.append(ws) or check(ws))
    prepare(tmp_path / "ws", demo=True)
    assert len(calls) == 1  # the console's runner and prepare's are one: no second check
    state = json.loads((tmp_path / "ws" / "state.json").read_text())
    assert state["stages"]["filter"]["message"]  # the stage's own summary, as the console saves it
