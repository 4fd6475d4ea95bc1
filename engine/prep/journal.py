"""Append-only, fsync'ed JSON-lines journals of file moves, so every move can be resumed and undone.

A journal holds runs. Each run starts with a ``plan`` record listing every move it will make, written
and fsync'ed before the first move, so a crash at any point leaves a journal that names every move
that may have happened. Each move then gets a ``move`` record (written before the move itself) and
the run ends with a ``done`` record. Undo walks the plans backwards and moves back whatever the
file system shows was moved, so an interrupted undo can simply be run again.

A move across file systems is a copy, then the removal of the original. Once the copy is complete
under its final name a ``copied`` record (``back`` for undo's copies) is fsync'ed: when a crash
leaves both sides, the newest such record says which side is whole, and resume or undo finishes
removing the other one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self, TextIO

from engine.errors import UserError
from engine.events import EventSink, StageProgress, StageState

JOURNAL_DIR = ".imgscale"
SYNC_EVERY = (
    256  # move records are flushed each time, fsync'ed in batches: the plan already covers them
)


def default_journal_path(stage: str, anchor: Path) -> Path:
    """Where a stage keeps its journal: a hidden folder beside the tree it changes, never inside it."""
    anchor = Path(anchor).resolve()
    return anchor.parent / JOURNAL_DIR / f"{stage}-{anchor.name}.jsonl"


@dataclass
class Run:
    """One planned batch of moves, as read back from a journal."""

    run_id: str
    params: dict
    moves: list[tuple[str, str]]
    started: set[int] = field(default_factory=set)
    done: bool = False
    # move index -> the side a finished cross-file-system copy made whole: "dst" (a move) or
    # "src" (an undo); the other side may still hold part of the original.
    copied: dict[int, str] = field(default_factory=dict)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def move_path(src: Path, dst: Path, on_copied: Callable[[], None] | None = None) -> None:
    """Move a file or folder without ever overwriting; across file systems copy, sync, then remove.

    ``on_copied()`` runs between a complete, durable copy and the removal of the original."""
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "destination exists", str(dst))
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_then_remove(src, dst, on_copied)


def _copy_then_remove(src: Path, dst: Path, on_copied: Callable[[], None] | None = None) -> None:
    tmp = moving_path(dst)
    remove_path(tmp)
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, tmp, symlinks=True, copy_function=_copy_synced)
    else:
        _copy_synced(src, tmp)
    os.rename(tmp, dst)
    fsync_dir(dst.parent)
    if on_copied is not None:
        on_copied()
    # Only once the copy is complete under its final name does the original go.
    remove_path(src)


def _copy_synced(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    shutil.copy2(src, dst, follow_symlinks=False)
    if not os.path.islink(dst):
        with open(dst, "rb") as f:
            os.fsync(f.fileno())


def moving_path(dst: Path) -> Path:
    """Where a cross-file-system copy is built before it takes its final name."""
    return dst.with_name(dst.name + ".moving")


def remove_path(path: Path) -> None:
    """Remove a file, link or folder tree if it exists (a half-removed tree too)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


class Journal:
    """A move journal file: read its runs, append a new run, record moves, undo everything."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: TextIO | None = None
        self._unsynced = 0
        self._lock: IO[Any] | None = None

    # -- reading ---------------------------------------------------------------------------
    def runs(self) -> list[Run]:
        """Every run in the file, oldest first; a torn last line (crash mid-write) is ignored."""
        runs: dict[str, Run] = {}
        if not self.path.exists():
            return []
        for record in self._records():
            run_id = record.get("run", "")
            if record.get("op") == "plan":
                moves = [(str(a), str(b)) for a, b in record.get("moves", [])]
                runs[run_id] = Run(run_id, record.get("params", {}), moves)
            elif run_id in runs and record.get("op") == "move":
                runs[run_id].started.add(int(record.get("index", -1)))
            elif run_id in runs and record.get("op") == "done":
                runs[run_id].done = True
            elif run_id in runs and record.get("op") == "copied":
                runs[run_id].copied[int(record.get("index", -1))] = str(record.get("whole", "dst"))
        return list(runs.values())

    def _records(self) -> Iterator[dict[str, Any]]:
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # only a crash mid-append writes a partial line
                if isinstance(record, dict):
                    yield record

    def unfinished(self) -> Run | None:
        runs = self.runs()
        return runs[-1] if runs and not runs[-1].done else None

    # -- writing ---------------------------------------------------------------------------
    def _append(self, record: dict, sync: bool) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across appends
            if new:
                fsync_dir(self.path.parent)
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        self._unsynced += 1
        if sync or self._unsynced >= SYNC_EVERY:
            os.fsync(self._file.fileno())
            self._unsynced = 0

    def begin(self, stage: str, params: dict, moves: list[tuple[Path, Path]]) -> Run:
        run_id = f"{stage}-{time.time_ns()}"
        pairs = [(str(a), str(b)) for a, b in moves]
        self._append(
            {"op": "plan", "run": run_id, "stage": stage, "params": params, "moves": pairs}, True
        )
        return Run(run_id, params, pairs)

    def copied(self, run: Run, index: int, whole: str) -> Callable[[], None]:
        """The ``on_copied`` of one cross-file-system move: records which side is now whole."""

        def record() -> None:
            self._append({"op": "copied", "run": run.run_id, "index": index, "whole": whole}, True)
            run.copied[index] = whole

        return record

    def finish(self, run: Run) -> None:
        self._append({"op": "done", "run": run.run_id}, True)
        run.done = True

    def close(self) -> None:
        if self._file is not None:
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self) -> Self:
        self._lock = exclusive_lock(self.path.with_name(self.path.name + ".lock"))
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def execute(self, run: Run, on_move: Callable[[int, Path, Path], None] | None = None) -> int:
        """Carry out (or resume) a run's moves; returns how many moves were made now."""
        made = 0
        touched: set[Path] = set()
        for index, (src, dst) in enumerate(run.moves):
            finish_copy(run, index, Path(src), Path(dst))
            if moved_already(Path(src), Path(dst)):
                if on_move is not None:
                    on_move(
                        index, Path(src), Path(dst)
                    )  # done by the interrupted run; still progress
                continue
            _check_movable(Path(src), Path(dst), self.path)
            self._append({"op": "move", "run": run.run_id, "index": index}, False)
            try:
                move_path(Path(src), Path(dst), self.copied(run, index, "dst"))
            except OSError as exc:
                raise UserError(
                    f"cannot move {src} to {dst}: {exc.strerror}; fix that and run again to resume"
                ) from None
            made += 1
            touched.update((Path(src).parent, Path(dst).parent))
            if on_move is not None:
                on_move(index, Path(src), Path(dst))
        for folder in touched:
            fsync_dir(folder)  # the renames are durable before the run is recorded as done
        self.finish(run)
        return made


def exclusive_lock(path: Path) -> IO[Any]:
    """Hold an exclusive lock file so two runs never work on the same tree at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a")  # noqa: SIM115 - held until the run ends
    return lock_or_fail(
        handle, f"another imgscale run holds {path}; wait for it to finish (or stop it)"
    )


def lock_or_fail(handle: IO[Any], busy: str) -> IO[Any]:
    """Lock the open file HANDLE exclusively without waiting; if another process holds it, close
    HANDLE and raise UserError(BUSY)."""
    import fcntl

    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(busy) from None
    return handle


def _check_movable(src: Path, dst: Path, journal: Path) -> None:
    if not os.path.lexists(src):
        raise UserError(
            f"{src} is gone (journal {journal} planned to move it to {dst}); restore it or undo"
        )
    if os.path.lexists(dst):
        raise UserError(
            f"{dst} already exists; move it away (or undo the earlier run) and run again"
        )


def finish_copy(run: Run, index: int, src: Path, dst: Path) -> None:
    """After a crash between a complete copy and the removal of its original, remove the rest of
    the original: the journal says which side the copy made whole."""
    whole = run.copied.get(index)
    if whole is None or not (os.path.lexists(src) and os.path.lexists(dst)):
        return
    remove_path(src if whole == "dst" else dst)
    fsync_dir((src if whole == "dst" else dst).parent)


def moved_already(src: Path, dst: Path) -> bool:
    """True when a planned move has happened (a resumed run skips it)."""
    return os.path.lexists(dst) and not os.path.lexists(src)


@dataclass(frozen=True)
class UndoResult:
    restored: int
    already: int  # moves that were never made or were undone by an earlier (interrupted) undo
    conflicts: tuple[str, ...]  # both source and destination exist: left alone, named here
    journal: Path | None


def undo_journal(path: Path, on_move: Callable[[Path, Path], None] | None = None) -> UndoResult:
    """Move everything back, newest move first; then retire the journal so a new run starts fresh.

    Holds the journal's lock, like the run it undoes: an undo never races a running stage."""
    with Journal(path) as journal:
        runs = journal.runs()
        restored = already = 0
        conflicts: list[str] = []
        for run in reversed(runs):
            for index in reversed(range(len(run.moves))):
                s, d = (Path(p) for p in run.moves[index])
                finish_copy(run, index, s, d)
                remove_path(moving_path(d))  # a copy cut short by a crash: never a whole file
                if os.path.lexists(d) and not os.path.lexists(s):
                    move_path(d, s, journal.copied(run, index, "src"))
                    restored += 1
                    if on_move is not None:
                        on_move(d, s)
                elif os.path.lexists(d):
                    conflicts.append(f"{d} (and {s} both exist)")
                else:
                    already += 1
        retired = None
        if runs and not conflicts:
            retired = path.with_name(path.name + ".undone")
            os.replace(path, retired)
            fsync_dir(path.parent)
    _remove_empty_dirs(runs)
    return UndoResult(restored, already, tuple(conflicts), retired)


def _remove_empty_dirs(runs: list[Run]) -> None:
    """Folders a run created for its destinations are removed again once empty (never non-empty ones)."""
    parents = sorted(
        {Path(dst).parent for run in runs for _, dst in run.moves}, key=lambda p: -len(p.parts)
    )
    for folder in parents:
        try:
            folder.rmdir()
        except OSError:
            pass


class MoveProgress:
    """An ``on_move`` callback that turns moves into StageProgress events, a few per second at most."""

    EVERY_S = 0.25

    def __init__(self, stage: str, total: int, on_event: EventSink, unit: str = "files") -> None:
        self.stage, self.total, self.on_event, self.unit = stage, total, on_event, unit
        self.done = 0
        self.last = time.monotonic()
        self.emit()  # 0 of total: watchers learn the total and start their clocks now

    def __call__(self, *_args: object) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last >= self.EVERY_S or self.done == self.total:
            self.last = now
            self.emit()

    def emit(self, message: str = "") -> None:
        self.on_event(
            StageProgress(self.stage, self.done, self.total, unit=self.unit, message=message)
        )


def undo_stage(
    stage: str, path: Path, on_event: EventSink, unit: str = "files", what: str = ""
) -> UndoResult:
    """Undo a stage's journal with progress events; a missing journal is the user's to hear about."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"nothing to undo: no {stage} journal {path}{what}")
    total = sum(len(run.moves) for run in Journal(path).runs())
    on_event(StageState(stage, "undoing", str(path)))
    result = undo_journal(path, on_move=MoveProgress(stage, total, on_event, unit))
    note = (
        f"; left alone (both copies exist): {', '.join(result.conflicts[:3])}"
        if result.conflicts
        else ""
    )
    on_event(StageState(stage, "undone", f"{result.restored} {unit} moved back{note}"))
    return result
