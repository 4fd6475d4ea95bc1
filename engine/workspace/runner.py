"""The one stage runner: a stage run (or undone) on a workspace, its counts and end saved in state.json.

The console's Session runs it in a thread (and stops it through ``stop``); `imgscale prepare`
(engine.workspace.pipeline) runs it in its own (and stops it with Ctrl-C).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from engine import workspace as wsmod
from engine.errors import UserError
from engine.events import Event, EventSink, SkippedItem, StageProgress, StageState
from engine.prep.wslock import WorkspaceLock, workspace_folders
from engine.workspace.stages import run_stage

SAVE_EVERY_S = 1.0
STOPPED = "stopped; start again to resume"
INTERRUPTED = "interrupted; run again to resume"


class StageStopped(Exception):
    """Raised inside a stage (from its event sink) when the user asked it to stop."""


class StageRun:
    """One run of a stage, and the on_event its code calls.

    Events pass on to ``on_event``; the counts are saved about once a second, so a reopened
    console shows how far the stage got; the stage's own last word ("kept 4 classes …") becomes
    the saved message; once ``stop`` is set, the next event raises StageStopped.
    """

    def __init__(
        self,
        ws: wsmod.Workspace,
        stage: str,
        on_event: EventSink,
        undo: bool = False,
        stop: threading.Event | None = None,
        lock: WorkspaceLock | None = None,
    ) -> None:
        self.ws = ws
        # The workspace lock: one the caller holds (`prepare` holds it over every stage), else
        # this run's own, taken by begin() and dropped when run() ends.
        self.held = lock
        self.own_lock: WorkspaceLock | None = None
        self.stage = stage
        self.on_event = on_event
        self.undo = undo
        self.stop = stop or threading.Event()
        self.last: StageProgress | None = None
        self.message = ""
        self.skipped = 0
        self.last_save = 0.0
        self.outcome: tuple[str, str] = ("running", "")

    def __call__(self, event: Event) -> None:
        if isinstance(event, StageProgress):
            self.last = event
            self.skipped = max(self.skipped, event.skipped)
            self._save_now_and_then()
        elif isinstance(event, SkippedItem):
            self.skipped += 1
        elif isinstance(event, StageState) and event.stage == self.stage:
            self.message = event.message
        self.on_event(event)
        if self.stop.is_set():
            raise StageStopped(self.stage)

    def begin(self) -> None:
        """Take the workspace's lock and mark the stage running (before its thread starts, so a
        snapshot shows it at once); another run holding the lock is a UserError naming it."""
        if self.held is None and self.own_lock is None:
            folders = workspace_folders(self.ws.path, self.ws.root)
            doing = f"{self.stage} undo" if self.undo else self.stage
            self.own_lock = WorkspaceLock(folders, doing).take()
        message = "undo" if self.undo else ""
        self.ws.update_stage(self.stage, state="running", message=message, done=0, skipped=0)

    def run(self) -> None:
        """Run (or undo) the stage and save how it ended; its exception, if any, propagates."""
        try:
            self._run()
        finally:
            if self.own_lock is not None:
                self.own_lock.release()
                self.own_lock = None

    def _run(self) -> None:
        try:
            run_stage(self.ws, self.stage, self, undo=self.undo)
        except StageStopped:
            self.end("stopped", STOPPED)
            raise
        except KeyboardInterrupt:
            self.end("stopped", INTERRUPTED)
            raise
        except Exception as exc:
            self.end("failed", str(exc) if isinstance(exc, UserError) else describe(exc))
            raise
        self.end("pending" if self.undo else "done", self.message)

    def end(self, state: str, message: str) -> None:
        """Save the end; a stage done (or undone) leaves the finished stages after it stale."""
        self.outcome = (state, message)
        self.ws.update_stage(self.stage, state=state, message=message, **self.counts())
        if state in ("done", "pending"):
            self.ws.mark_stale_from(self.stage, include_self=False)

    def counts(self) -> dict[str, Any]:
        if self.last is None:
            return {"skipped": self.skipped}
        return {
            "done": self.last.done,
            "total": self.last.total,
            "unit": self.last.unit,
            "skipped": max(self.skipped, self.last.skipped),
        }

    def _save_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self.last_save >= SAVE_EVERY_S:
            self.last_save = now
            self.ws.update_stage(self.stage, **self.counts())


def describe(exc: BaseException) -> str:
    """A bug's one line: its type and message."""
    return f"{type(exc).__name__}: {exc}"


def run_one(
    ws: wsmod.Workspace, stage: str, on_event: EventSink, lock: WorkspaceLock | None = None
) -> None:
    """Run one stage to its end in this thread (`imgscale prepare`, which holds ``lock``)."""
    run = StageRun(ws, stage, on_event, lock=lock)
    run.begin()
    run.run()
