"""The workspace's preparation stages run in threads: started, stopped, undone, resumed, all in order.

Each stage runs through the one stage runner (engine.workspace.runner) in a thread of its own; its
events reach the session's stream with ``emit`` (thread-safe) and its end is put on the stream
from the stream's loop, once the stage's final state is saved in the workspace.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from engine import workspace as wsmod
from engine.api.stream import EventStream
from engine.errors import UserError
from engine.events import Failure, StageState
from engine.workspace.runner import StageRun, StageStopped

Spawn = Callable[[Coroutine[Any, Any, None]], None]


@dataclass
class RunningStage:
    run: StageRun
    thread: threading.Thread
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class StageThreads:
    """The preparation stages running now, each in its thread."""

    def __init__(self, ws: wsmod.Workspace, stream: EventStream, spawn: Spawn) -> None:
        self.workspace = ws
        self.stream = stream
        self.spawn = spawn
        self.running: dict[str, RunningStage] = {}

    async def start(self, stage: str, undo: bool = False) -> None:
        """Run a preparation stage in a thread (resuming where it stopped)."""
        check_stage(stage)
        if stage in self.running:
            raise UserError(f"stage {stage} is already running; stop it first (x)")
        if undo and stage not in wsmod.UNDOABLE:
            raise UserError(f"stage {stage} cannot be undone (only {', '.join(wsmod.UNDOABLE)})")
        run = StageRun(self.workspace, stage, self.stream.emit, undo=undo)
        thread = threading.Thread(target=self._thread, args=(run,), daemon=True)
        run.begin()  # takes the workspace's lock: another run holding it is refused here
        self.running[stage] = RunningStage(run, thread)
        self.stream.emit(StageState(stage, "running", "undoing" if undo else ""))
        thread.start()

    async def start_all(self) -> None:
        """Run every preparation stage that is not done, in order, stopping at the first that fails."""
        if any(name in self.running for name in wsmod.STAGES):
            raise UserError("a stage is already running; wait for it or stop it (x)")
        self.spawn(self._run_all())

    async def _run_all(self) -> None:
        for status in self.workspace.stage_statuses():
            if status.name == "train" or status.state == "done":
                continue
            try:
                await self.start(status.name)
            except UserError as exc:  # the workspace is busy (another run holds its lock)
                self.stream.emit(Failure(source=f"stage {status.name}", message=str(exc)))
                return
            await self.wait(status.name)
            if self.workspace.stage_record(status.name).get("state") != "done":
                return

    def stop(self, stage: str) -> None:
        """Ask a running stage to stop at its next progress report; it resumes later from there."""
        running = self.running.get(stage)
        if running is None:
            raise UserError(f"stage {stage} is not running")
        running.run.stop.set()

    async def wait(self, stage: str, timeout: float | None = None) -> None:
        """Until the stage's thread ended and its final state is saved."""
        running = self.running.get(stage)
        if running is not None:
            await asyncio.wait_for(running.finished.wait(), timeout)

    def recover_interrupted(self) -> None:
        """A stage marked running by a console that died is resumable, not running."""
        for status in self.workspace.stage_statuses():
            if status.state == "running" and status.name != "train":
                self.workspace.update_stage(
                    status.name, state="stopped", message="interrupted; start to resume"
                )

    def stop_all(self) -> None:
        for running in self.running.values():
            running.run.stop.set()

    async def join(self, timeout: float = 10.0) -> None:
        """Until every stage thread has ended (each stops at its next progress report)."""
        for running in list(self.running.values()):
            await asyncio.to_thread(running.thread.join, timeout)

    def _thread(self, run: StageRun) -> None:
        try:
            run.run()  # saves the stage's end in the workspace
        except (StageStopped, UserError):
            pass  # the saved end says it
        except Exception:  # noqa: BLE001 - a bug in a stage must reach the console, not kill it
            self.stream.emit(Failure(source=f"stage {run.stage}", message=run.outcome[1]))
        try:
            self.stream.loop.call_soon_threadsafe(self._finished, run)
        except RuntimeError:  # the console's loop is gone: nobody is waiting any more
            pass

    def _finished(self, run: StageRun) -> None:
        running = self.running.pop(run.stage, None)
        self.stream.put(StageState(run.stage, *run.outcome))
        if running is not None:
            running.finished.set()


def check_stage(stage: str) -> None:
    if stage not in wsmod.STAGES:
        raise UserError(f"unknown stage {stage!r}; stages: {', '.join(wsmod.STAGES)}")
