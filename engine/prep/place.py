"""Move packed .rec files into train/ and val/, journaled and undoable.

MXNet's reader, given a --data-train directory, reads every non-empty file in it, so only .rec files
move: the .idx, .lst, label map and skip reports stay in the lists folder beside train/ and val/.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError
from engine.events import EventSink, StageState, ignore
from engine.paths import require_folder_path
from engine.prep.disk import ensure_moves_fit
from engine.prep.journal import Journal, MoveProgress, UndoResult, default_journal_path, undo_stage

TRAIN_GLOB = "train*.rec"
VAL_GLOB = "val*.rec"


@dataclass(frozen=True)
class PlaceResult:
    train_dir: Path
    val_dir: Path
    train: tuple[str, ...]  # .rec names now in train_dir
    val: tuple[str, ...]
    moved_now: int
    strays: tuple[
        str, ...
    ]  # files in train_dir/val_dir that are not .rec: the reader would read them
    journal: Path


def check_complete(prefix_dir: Path, globs: tuple[str, str], targets: tuple[Path, Path]) -> None:
    """Every .lst whose .rec would be placed must have been packed: never place half a dataset."""
    for lst in sorted(prefix_dir.glob("*.lst")):
        rec = lst.with_suffix(".rec")
        for glob, target in zip(globs, targets):
            if fnmatch.fnmatch(rec.name, glob) and not (
                rec.is_file() or (target / rec.name).is_file()
            ):
                raise UserError(
                    f"{rec} is missing (its list {lst.name} is not packed yet); run `imgscale pack` first"
                )


def plan_place(
    prefix_dir: Path, train_dir: Path, val_dir: Path, globs: tuple[str, str]
) -> list[tuple[Path, Path]]:
    moves = []
    for rec in sorted(p for p in prefix_dir.glob("*.rec") if p.is_file()):
        is_train, is_val = (fnmatch.fnmatch(rec.name, g) for g in globs)
        if is_train and is_val:
            raise UserError(
                f"{rec.name} matches both --train {globs[0]!r} and --val {globs[1]!r}; make them distinct"
            )
        if is_train or is_val:
            target = (train_dir if is_train else val_dir) / rec.name
            if target.exists():
                raise UserError(
                    f"{target} already exists; move it away (or `imgscale place --undo`) and run again"
                )
            moves.append((rec, target))
    return moves


def check_dirs(
    prefix_dir: str | os.PathLike[str],
    train_dir: str | os.PathLike[str],
    val_dir: str | os.PathLike[str],
) -> tuple[Path, Path, Path]:
    prefix_dir, train_dir, val_dir = (Path(p).resolve() for p in (prefix_dir, train_dir, val_dir))
    if not prefix_dir.is_dir():
        raise UserError(
            f"{prefix_dir} is not a folder; give the folder where pack wrote the .rec files"
        )
    for d, flag in ((train_dir, "TRAIN_DIR"), (val_dir, "VAL_DIR")):
        if d.exists() and not d.is_dir():
            raise UserError(f"{flag} {d} is not a folder; give a folder for the .rec files")
        require_folder_path(d, flag)
        if d == prefix_dir:
            raise UserError(
                f"{flag} {d} is the lists folder itself; give a separate folder (e.g. {d / 'train'})"
            )
    if train_dir == val_dir:
        raise UserError(f"TRAIN_DIR and VAL_DIR are both {train_dir}; give two folders")
    return prefix_dir, train_dir, val_dir


def place_records(
    prefix_dir: str | os.PathLike[str],
    train_dir: str | os.PathLike[str],
    val_dir: str | os.PathLike[str],
    *,
    train_glob: str = TRAIN_GLOB,
    val_glob: str = VAL_GLOB,
    on_event: EventSink = ignore,
    journal_path: str | os.PathLike[str] | None = None,
) -> PlaceResult:
    """Move ``train_glob`` .rec files of ``prefix_dir`` into ``train_dir`` and ``val_glob`` ones into
    ``val_dir``; resumes an interrupted run; a second run with nothing left to move is a no-op."""
    prefix_dir, train_dir, val_dir = check_dirs(prefix_dir, train_dir, val_dir)
    globs = (train_glob, val_glob)
    journal = Journal(journal_path or default_journal_path("place", prefix_dir))
    on_event(
        StageState("place", "running", f"{train_glob} -> {train_dir}, {val_glob} -> {val_dir}")
    )
    with journal:
        run = journal.unfinished()
        if run is None:
            check_complete(prefix_dir, globs, (train_dir, val_dir))
            moves = plan_place(prefix_dir, train_dir, val_dir, globs)
            if not moves and not any(r.done for r in journal.runs()):
                raise UserError(
                    f"no {train_glob} or {val_glob} in {prefix_dir}; run `imgscale pack` first"
                )
            ensure_moves_fit("place", moves)
            run = (
                journal.begin("place", {"train": str(train_dir), "val": str(val_dir)}, moves)
                if moves
                else None
            )
        made = journal.execute(run, MoveProgress("place", len(run.moves), on_event)) if run else 0
    result = summarize(train_dir, val_dir, made, journal.path)
    on_event(
        StageState(
            "place",
            "done",
            f"{len(result.train)} train and {len(result.val)} val .rec files placed",
        )
    )
    return result


def summarize(train_dir: Path, val_dir: Path, made: int, journal: Path) -> PlaceResult:
    def names(d: Path, rec: bool) -> tuple[str, ...]:
        if not d.is_dir():
            return ()
        return tuple(sorted(p.name for p in d.iterdir() if (p.suffix == ".rec") == rec))

    strays = tuple(str(d / n) for d in (train_dir, val_dir) for n in names(d, rec=False))
    return PlaceResult(
        train_dir, val_dir, names(train_dir, True), names(val_dir, True), made, strays, journal
    )


def undo_place(
    prefix_dir: str | os.PathLike[str],
    *,
    on_event: EventSink = ignore,
    journal_path: str | os.PathLike[str] | None = None,
) -> UndoResult:
    """Move the placed .rec files back into ``prefix_dir``; safe to repeat after a crash."""
    prefix_dir = Path(prefix_dir).resolve()
    path = Path(journal_path or default_journal_path("place", prefix_dir))
    return undo_stage("place", path, on_event, "files", f" (for {prefix_dir})")
