"""One lock per workspace: a stage, an undo or `prepare` holds it while it moves or writes files.

Two runs on one workspace at once corrupt it (two `prepare`s race on the same part files; a
`split --undo` moves images back while pack reads them). The lock is ``fcntl.flock`` on
``.imgscale/lock`` in the workspace folder: the kernel drops it when its holder dies, so a lock
left by a killed process is simply taken over. The file also says who holds it (command, pid,
since when), for the one line the second run gets. `imgscale pack` runs share it with each
other (they pack different chunks side by side), never with anything else. A workspace whose
class folders lie outside it also locks the folder beside them, as a stage run on them alone does.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from engine.errors import UserError

# engine.workspace.CONFIG_NAME, named here so that `imgscale pack` does not load the workspace
# and training option modules before its workers start (tests/unit/test_workspace_lock.py checks
# that the two agree).
CONFIG_NAME = "workspace.toml"

LOCK_DIR = ".imgscale"  # beside the stages' move journals (journal.JOURNAL_DIR)
LOCK_NAME = "lock"


def lock_folder(path: str | os.PathLike[str]) -> Path:
    """The folder whose lock guards ``path``: the workspace holding it, else the folder beside it."""
    path = Path(path).expanduser().resolve()
    for folder in (path, *path.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    return path.parent


def workspace_folders(ws_path: Path, root: Path) -> list[Path]:
    """What a workspace's stages lock: the workspace, and the folder beside a root outside it."""
    data = lock_folder(root)
    return [ws_path] if data == ws_path else [ws_path, data]


def command_line() -> str:
    """How this process was started, as the holder's line shows it (`imgscale prepare ws`)."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"


def locked(
    command: Callable[..., int], folder_arg: str, shared: bool = False
) -> Callable[..., int]:
    """A CLI ``command`` (func(args)) holding the lock of the workspace its folder lies in: a
    stage, an undo or `prepare` running there already stops it with one line naming that run.
    ``shared``: runs of this command may hold it together (pack's chunks are packed side by side)."""

    def run(args: argparse.Namespace) -> int:
        doing = args.command + (" --undo" if getattr(args, "undo", False) else "")
        with WorkspaceLock([lock_folder(getattr(args, folder_arg))], doing, shared):
            return command(args)

    return run


class WorkspaceLock:
    """The lock of one or more folders, held from ``take()`` (or ``with``) until ``release()``."""

    def __init__(self, folders: Iterable[Path], doing: str, shared: bool = False) -> None:
        self.folders = list(dict.fromkeys(Path(f) for f in folders))
        self.doing = doing
        self.mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        self.fds: list[int] = []

    def take(self) -> WorkspaceLock:
        try:
            for folder in self.folders:
                fd = _lock(folder, self.doing, self.mode)
                if fd is not None:
                    self.fds.append(fd)
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)  # closing the only descriptor drops the flock
        self.fds = []

    def __enter__(self) -> WorkspaceLock:
        return self.take()

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _lock(folder: Path, doing: str, mode: int) -> int | None:
    path = folder / LOCK_DIR / LOCK_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except (NotADirectoryError, FileExistsError):
        return None  # a file in the way: nothing can run there; the command's own check says so
    except OSError as exc:
        raise UserError(f"{folder}: cannot lock it for {doing} ({exc.strerror}: {path})") from None
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read(fd)
        os.close(fd)
        raise UserError(
            f"{folder} is busy: {describe(holder)}; wait for it to end (or stop it)"
        ) from None
    _write(
        fd, {"command": command_line(), "doing": doing, "pid": os.getpid(), "since": time.time()}
    )
    return fd


def describe(holder: dict) -> str:
    """``imgscale prepare ws`` (prepare, pid 123) has held it since 19:20:05."""
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "a moment ago"
    command = holder.get("command") or "another imgscale command"
    return f"`{command}` ({holder.get('doing', '?')}, pid {holder.get('pid', '?')}) holds it since {when}"


def _read(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:  # the holder is writing it this instant
        return {}
    return data if isinstance(data, dict) else {}


def _write(fd: int, holder: dict) -> None:
    data = json.dumps(holder).encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
