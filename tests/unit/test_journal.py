"""Move journals: the plan is durable before any move, a crash is resumable, undo is repeatable."""

import errno
import json
import os

import pytest
from tree_helpers import crash_on_move, snapshot

from engine.errors import UserError
from engine.prep import journal as jmod
from engine.prep.journal import Journal, default_journal_path, move_path, undo_journal


def make_files(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(f"content of {name}")
    return [folder / n for n in names]


def test_journal_lives_beside_the_tree_not_inside_it(tmp_path):
    path = default_journal_path("filter", tmp_path / "train")
    assert path == tmp_path / ".imgscale" / "filter-train.jsonl"


def test_plan_is_written_and_synced_before_the_first_move(tmp_path, monkeypatch):
    srcs = make_files(tmp_path / "a", ["1.jpg", "2.jpg"])
    moves = [(s, tmp_path / "b" / s.name) for s in srcs]
    seen_before_move = []

    def spying_move(src, dst, on_copied=None):
        seen_before_move.append(
            [json.loads(line)["op"] for line in journal_file.read_text().splitlines()]
        )
        real_move(src, dst, on_copied)

    journal_file = tmp_path / "j.jsonl"
    real_move = jmod.move_path
    monkeypatch.setattr(jmod, "move_path", spying_move)
    with Journal(journal_file) as j:
        j.execute(j.begin("t", {}, moves))
    assert seen_before_move == [["plan", "move"], ["plan", "move", "move"]]
    assert [r.done for r in Journal(journal_file).runs()] == [True]


def test_crash_mid_run_leaves_an_unfinished_run_that_resumes(tmp_path, monkeypatch):
    srcs = make_files(tmp_path / "a", ["1.jpg", "2.jpg", "3.jpg"])
    moves = [(s, tmp_path / "b" / s.name) for s in srcs]

    def run():
        with Journal(tmp_path / ".imgscale" / "j.jsonl") as j:
            j.execute(j.begin("t", {}, moves))

    crash_on_move(monkeypatch, run, 2)  # the process dies between two moves
    run = Journal(tmp_path / ".imgscale" / "j.jsonl").unfinished()
    assert run is not None and run.started == {0, 1}
    with Journal(tmp_path / ".imgscale" / "j.jsonl") as j:
        assert j.execute(run) == 2
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["1.jpg", "2.jpg", "3.jpg"]
    assert Journal(tmp_path / ".imgscale" / "j.jsonl").unfinished() is None


def test_torn_last_line_is_ignored(tmp_path):
    srcs = make_files(tmp_path / "a", ["1.jpg"])
    with Journal(tmp_path / ".imgscale" / "j.jsonl") as j:
        j.execute(j.begin("t", {}, [(srcs[0], tmp_path / "b" / "1.jpg")]))
    with open(tmp_path / ".imgscale" / "j.jsonl", "a") as f:
        f.write('{"op":"plan","run":"x","moves":[["/a",')  # power cut mid-append
    runs = Journal(tmp_path / ".imgscale" / "j.jsonl").runs()
    assert len(runs) == 1 and runs[0].done


def test_undo_restores_exactly_and_retires_the_journal(tmp_path):
    make_files(tmp_path / "tree" / "c1", ["1.jpg", "2.jpg"])
    make_files(tmp_path / "tree" / "c2", ["3.jpg"])
    before = snapshot(tmp_path)
    with Journal(tmp_path / ".imgscale" / "j.jsonl") as j:
        j.execute(j.begin("t", {}, [(tmp_path / "tree" / "c1", tmp_path / "out" / "c1")]))
        j.execute(
            j.begin(
                "t", {}, [(tmp_path / "tree" / "c2" / "3.jpg", tmp_path / "val" / "c2" / "3.jpg")]
            )
        )
    assert snapshot(tmp_path) != before
    result = undo_journal(tmp_path / ".imgscale" / "j.jsonl")
    assert (result.restored, result.conflicts) == (2, ())
    assert snapshot(tmp_path) == before
    assert (
        not (tmp_path / ".imgscale" / "j.jsonl").exists()
        and (tmp_path / ".imgscale" / "j.jsonl.undone").exists()
    )
    assert not (tmp_path / "val" / "c2").exists()  # folders the run created are gone again


def test_interrupted_undo_can_be_run_again(tmp_path, monkeypatch):
    srcs = make_files(tmp_path / "a", ["1.jpg", "2.jpg", "3.jpg"])
    before = snapshot(tmp_path)
    with Journal(tmp_path / ".imgscale" / "j.jsonl") as j:
        j.execute(j.begin("t", {}, [(s, tmp_path / "b" / s.name) for s in srcs]))
    crash_on_move(monkeypatch, lambda: undo_journal(tmp_path / ".imgscale" / "j.jsonl"), 2)
    result = undo_journal(tmp_path / ".imgscale" / "j.jsonl")
    assert (result.restored, result.already) == (2, 1)
    assert snapshot(tmp_path) == before


def test_undo_never_overwrites_a_file_that_came_back(tmp_path):
    srcs = make_files(tmp_path / "a", ["1.jpg"])
    with Journal(tmp_path / ".imgscale" / "j.jsonl") as j:
        j.execute(j.begin("t", {}, [(srcs[0], tmp_path / "b" / "1.jpg")]))
    srcs[0].write_text("a new file with the old name")
    result = undo_journal(tmp_path / ".imgscale" / "j.jsonl")
    assert result.restored == 0 and len(result.conflicts) == 1
    assert srcs[0].read_text() == "a new file with the old name"
    assert (tmp_path / ".imgscale" / "j.jsonl").exists()  # kept: the conflict still needs a person


def test_resumed_run_with_a_vanished_source_names_it(tmp_path):
    srcs = make_files(tmp_path / "a", ["1.jpg"])
    with Journal(tmp_path / ".imgscale" / "j.jsonl") as j:
        run = j.begin("t", {}, [(srcs[0], tmp_path / "b" / "1.jpg")])
    srcs[0].unlink()
    with (
        pytest.raises(UserError, match="1.jpg is gone"),
        Journal(tmp_path / ".imgscale" / "j.jsonl") as j,
    ):
        j.execute(run)


def test_move_across_file_systems_copies_then_removes(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.jpg").write_bytes(b"pixels")
    real_rename = os.rename

    def no_cross_device(a, b):
        if str(a).endswith("src"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(a, b)

    monkeypatch.setattr(jmod.os, "rename", no_cross_device)
    move_path(tmp_path / "src", tmp_path / "other" / "dst")
    assert (tmp_path / "other" / "dst" / "x.jpg").read_bytes() == b"pixels"
    assert not (tmp_path / "src").exists()


def test_move_refuses_to_overwrite(tmp_path):
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    with pytest.raises(FileExistsError):
        move_path(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "b"


def test_two_runs_on_one_journal_at_once_are_refused(tmp_path):
    first = Journal(tmp_path / "j.jsonl").__enter__()
    with (
        pytest.raises(UserError, match="another imgscale run holds"),
        Journal(tmp_path / "j.jsonl"),
    ):
        pass
    first.close()
    with Journal(tmp_path / "j.jsonl"):
        pass  # released when the first run ended
