"""Folder paths given by the user: a file standing where a folder must be is named, not a traceback."""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import UserError


def blocking_file(path: str | os.PathLike[str]) -> Path | None:
    """The path itself or its nearest existing ancestor when that is not a folder, else None."""
    current = Path(path).expanduser().absolute()
    while not current.exists():
        if current.parent == current:
            return None
        current = current.parent
    return None if current.is_dir() else current


def require_folder_path(path: str | os.PathLike[str], label: str) -> None:
    """Refuse a folder path (existing or still to be created) that a file blocks."""
    blocker = blocking_file(path)
    if blocker is not None:
        raise UserError(f"{label} {path}: {blocker} is a file, not a folder; choose another path")


def make_folder(path: str | os.PathLike[str], label: str) -> Path:
    """Create the folder ``path`` with its parents; a file in the way or no permission is one line."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = blocking_file(folder) or folder
        raise UserError(
            f"{label} {path}: a file is in the way ({blocker} is a file, not a folder); "
            "choose another path"
        ) from None
    except PermissionError:
        raise UserError(f"{label} {path}: cannot create it (permission denied)") from None
    return folder
