"""engine.workspace.stages: a stage run as train-then-val passes reports one count; every stage of the one order has a runner."""

from engine.events import StageProgress, StageState
from engine.workspace.stages import Passes


def test_second_pass_adds_to_the_first_and_chunk_events_pass_unchanged():
    seen = []
    passes = Passes(seen.append)
    passes(StageProgress("pack", 109, 109, bytes_done=1000, skipped=0))
    passes.next_pass()
    chunk = StageProgress("pack", 5, 20, part="val")
    passes(chunk)
    passes(StageProgress("pack", 20, 20, bytes_done=200, skipped=1))
    passes(StageState("pack", "done"))
    whole = [e for e in seen if isinstance(e, StageProgress) and not e.part]
    assert (whole[-1].done, whole[-1].total, whole[-1].bytes_done, whole[-1].skipped) == (
        129,
        129,
        1200,
        1,
    )
    assert chunk in seen and isinstance(seen[-1], StageState)


def test_unknown_total_stays_unknown():
    seen = []
    passes = Passes(seen.append)
    passes(StageProgress("list", 7, None))
    assert seen[-1].total is None and seen[-1].done == 7


def test_the_stage_message_names_every_pass_not_only_the_last_chunk():
    seen = []
    passes = Passes(seen.append)
    passes(StageState("pack", "done", "110 records, 0 skipped"))
    passes.next_pass()
    passes(StageState("pack", "done", "19 records, 0 skipped"))
    states = [e for e in seen if isinstance(e, StageState)]
    assert [e.state for e in states] == [
        "running",
        "running",
    ]  # a pass ending is not the stage ending
    assert states[-1].message == "train: 110 records, 0 skipped; val: 19 records, 0 skipped"


def test_every_preparation_stage_in_the_one_order_has_a_runner():
    from engine.workspace import PREP_STAGES, STAGES, UNDOABLE, stages

    assert set(stages.RUN) == set(PREP_STAGES)
    assert STAGES[-1] == "train" and STAGES[:-1] == PREP_STAGES
    assert set(stages.UNDO) == set(UNDOABLE)
