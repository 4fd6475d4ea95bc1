"""Move K seeded-random images per class from ROOT to VAL_ROOT/<class>/, journaled and undoable.

A class with K or fewer images is left whole and reported: taking K would empty it, and taking fewer
would give that class a different validation share than the rest.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError
from engine.events import EventSink, SkippedItem, StageState, ignore
from engine.paths import require_folder_path
from engine.prep.disk import ensure_moves_fit
from engine.prep.filter import (
    check_root,
    class_folders,
    class_images,
    refuse_mostly_non_classes,
    refuse_system_root,
    report_non_classes,
    require_classes,
)
from engine.prep.journal import (
    Journal,
    MoveProgress,
    Run,
    UndoResult,
    default_journal_path,
    undo_stage,
)


@dataclass(frozen=True)
class SplitResult:
    root: Path
    val_root: Path
    moved: tuple[tuple[str, int], ...]  # (class, images moved to validation)
    short: tuple[tuple[str, int], ...]  # (class, images) left whole: K or fewer images
    moved_now: int  # 0 when the split had already been done
    journal: Path


def choose(images: list[Path], per_class: int, seed: int, cls: str) -> list[Path]:
    """K images of one class; seeded by (seed, class) so a class's choice does not depend on the others."""
    return sorted(random.Random(f"{seed}:{cls}").sample(images, per_class))


def plan_split(
    root: Path, val_root: Path, per_class: int, seed: int, on_event: EventSink = ignore
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[tuple[Path, Path]]]:
    moved, short, moves = [], [], []
    found = {folder.name: class_images(folder) for folder in class_folders(root)}
    counts = {name: len(images) for name, images in found.items()}
    refuse_mostly_non_classes(root, counts)
    report_non_classes("split", root, counts, on_event)
    for folder in class_folders(root):
        images = found[folder.name]
        if not images:
            continue
        if len(images) <= per_class:
            short.append((folder.name, len(images)))
            continue
        for rel in choose(images, per_class, seed, folder.name):
            target = val_root / folder.name / rel
            if os.path.lexists(target):
                raise UserError(
                    f"{target} already exists; use an empty VAL_ROOT (or undo the earlier split)"
                )
            moves.append((folder / rel, target))
        moved.append((folder.name, per_class))
    return moved, short, moves


def check_split_paths(
    root: str | os.PathLike[str], val_root: str | os.PathLike[str], per_class: int
) -> tuple[Path, Path]:
    root = check_root(root)
    val_root = Path(val_root).resolve()
    if val_root.exists() and not val_root.is_dir():
        raise UserError(
            f"VAL_ROOT {val_root} is not a folder; give a folder for the validation images"
        )
    require_folder_path(val_root, "VAL_ROOT")
    refuse_system_root(val_root, "VAL_ROOT")
    if val_root == root or root in val_root.parents:
        raise UserError(
            f"VAL_ROOT {val_root} is inside ROOT {root}; choose a folder outside it (e.g. a sibling)"
        )
    if val_root in root.parents:
        raise UserError(f"ROOT {root} is inside VAL_ROOT {val_root}; choose a VAL_ROOT outside it")
    if per_class < 1:
        raise UserError(f"--per-class {per_class}: give a number of validation images >= 1")
    return root, val_root


def split_validation(
    root: str | os.PathLike[str],
    val_root: str | os.PathLike[str],
    *,
    per_class: int = 50,
    seed: int = 0,
    on_event: EventSink = ignore,
    journal_path: str | os.PathLike[str] | None = None,
) -> SplitResult:
    """Move ``per_class`` random images of each class to ``val_root``; resumes an interrupted run and
    does nothing when the split is already done (undo it first to split differently)."""
    root, val_root = check_split_paths(root, val_root, per_class)
    journal = Journal(journal_path or default_journal_path("split", root))
    params = {"val_root": str(val_root), "per_class": per_class, "seed": seed}
    on_event(StageState("split", "running", f"{per_class} images per class -> {val_root}"))
    with journal:
        run = journal.unfinished()
        done_before = [r for r in journal.runs() if r.done]
        if run is None and done_before:
            return already_split(root, val_root, done_before[-1], journal.path, on_event)
        if run is None:
            require_classes(root)
            moved, short, moves = plan_split(root, val_root, per_class, seed, on_event)
            report_short(root, short, per_class, on_event)
            ensure_moves_fit("split", moves)
            run = journal.begin("split", dict(params, short=short), moves)
        else:
            on_event(StageState("split", "running", "resuming an interrupted run"))
            moved, short = tally(run.moves), [tuple(s) for s in run.params.get("short", [])]
        made = journal.execute(run, MoveProgress("split", len(run.moves), on_event, "images"))
    on_event(
        StageState(
            "split", "done", f"{len(run.moves)} images of {len(moved)} classes in {val_root}"
        )
    )
    return SplitResult(root, val_root, tuple(moved), tuple(short), made, journal.path)


def report_short(root: Path, short: list, per_class: int, on_event: EventSink) -> None:
    for cls, n in short:
        reason = (
            f"only {n} images (need more than {per_class}); left whole, no validation images taken"
        )
        on_event(SkippedItem("split", str(root / cls), reason))


def tally(moves: list[tuple[str, str]]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for _src, dst in moves:
        cls = Path(dst).parent.name
        counts[cls] = counts.get(cls, 0) + 1
    return sorted(counts.items())


def already_split(
    root: Path, val_root: Path, run: Run, journal: Path, on_event: EventSink
) -> SplitResult:
    if run.params.get("val_root") != str(val_root):
        raise UserError(
            f"{root} was already split into {run.params.get('val_root')}; "
            f"run `imgscale split {root} {run.params.get('val_root')} --undo` first to split into {val_root}"
        )
    on_event(
        StageState("split", "done", f"already split into {val_root} (undo with --undo to redo)")
    )
    short = tuple(tuple(s) for s in run.params.get("short", []))
    return SplitResult(root, val_root, tuple(tally(run.moves)), short, 0, journal)


def undo_split(
    root: str | os.PathLike[str],
    val_root: str | os.PathLike[str] | None = None,
    *,
    on_event: EventSink = ignore,
    journal_path: str | os.PathLike[str] | None = None,
) -> UndoResult:
    """Move every validation image back to its class folder in ``root``; safe to repeat after a crash.
    ``val_root``, when given, must be the folder the split used (a guard against undoing the wrong one)."""
    root = Path(root).resolve()
    path = Path(journal_path or default_journal_path("split", root))
    if val_root is not None and path.exists():
        used = {r.params.get("val_root") for r in Journal(path).runs()}
        if used and str(Path(val_root).resolve()) not in used:
            raise UserError(
                f"{root} was split into {', '.join(sorted(map(str, used)))}, not {val_root}"
            )
    return undo_stage("split", path, on_event, "images", f" (for {root})")
