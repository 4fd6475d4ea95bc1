"""Move classes with too few images out of ROOT into ROOT_filtered/, journaled and undoable."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError
from engine.events import EventSink, SkippedItem, StageState, ignore
from engine.paths import require_folder_path
from engine.prep.disk import ensure_moves_fit
from engine.prep.journal import Journal, MoveProgress, UndoResult, default_journal_path, undo_stage

IMAGE_EXTS = (".jpeg", ".jpg", ".png")


@dataclass(frozen=True)
class FilterResult:
    root: Path
    dest: Path
    kept: tuple[tuple[str, int], ...]  # (class, images)
    removed: tuple[tuple[str, int], ...]  # by this run
    earlier: tuple[tuple[str, int], ...]  # moved aside by earlier runs, still there
    moved_now: int  # 0 when everything was already in place
    journal: Path


def is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTS


def class_folders(root: Path) -> list[Path]:
    """The class folders of a tree: visible subfolders, sorted (as im2rec orders labels)."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def class_images(folder: Path) -> list[Path]:
    """A class's images (extension in any case), relative to the class folder, sorted."""
    found = []
    for path, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        found += [Path(path, f).relative_to(folder) for f in sorted(files) if is_image(f)]
    return found


def count_images(folder: Path) -> int:
    return sum(1 for _, _, files in os.walk(folder, followlinks=True) for f in files if is_image(f))


def filtered_root(root: Path) -> Path:
    """ROOT_filtered, beside ROOT."""
    root = Path(root).resolve()
    return root.with_name(root.name + "_filtered")


# Folders no image tree ever is: moving their subfolders aside would break the machine.
SYSTEM_TREES = (
    "/bin",
    "/boot",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/proc",
    "/sbin",
    "/sys",
    "/usr",
)
# Refused as ROOT themselves; below them (/dev/shm, /run/user, /mnt/data …) a tree may well live.
SYSTEM_FOLDERS = ("/", "/dev", "/home", "/media", "/mnt", "/opt", "/root", "/run", "/srv", "/tmp",
                  "/var")  # fmt: skip


def home_folders() -> set[Path]:
    """Every user's home folder (this user's first): a ROOT there holds the user's own files."""
    import pwd

    homes = {Path(entry.pw_dir) for entry in pwd.getpwall() if entry.pw_dir not in ("", "/")}
    return homes | {Path.home()}


def refuse_system_root(root: Path, what: str) -> None:
    """ROOT as /, a home folder or a system folder is a wrong path, never a class tree."""
    inside = any(root == Path(t) or Path(t) in root.parents for t in SYSTEM_TREES)
    if inside or root in {Path(f) for f in SYSTEM_FOLDERS} | home_folders():
        raise UserError(
            f"{what} {root} is a system or home folder, not a tree of class folders; "
            "give the folder that holds one subfolder per class"
        )


def check_root(root: str | os.PathLike[str], what: str = "ROOT") -> Path:
    root = Path(root)
    if not root.exists():
        raise UserError(
            f"{root} does not exist; give the folder that holds one subfolder per class ({what})"
        )
    if not root.is_dir():
        raise UserError(
            f"{root} is not a folder; give the folder that holds one subfolder per class ({what})"
        )
    refuse_system_root(root.resolve(), what)
    return root.resolve()


def refuse_mostly_non_classes(root: Path, counts: dict[str, int]) -> None:
    """A ROOT where most subfolders hold no image is some other folder given by mistake."""
    empty = sorted(name for name, n in counts.items() if n == 0)
    if counts and len(empty) * 2 > len(counts):
        raise UserError(
            f"{root}: {len(empty)} of its {len(counts)} subfolders hold no image (e.g. {empty[0]}), "
            "so it is not a tree of class folders; give the folder with one subfolder per class"
        )


def report_non_classes(stage: str, root: Path, counts: dict[str, int], on_event: EventSink) -> None:
    """A folder with no image is not a class: named in the report, never moved."""
    for name, n in counts.items():
        if n == 0:
            on_event(
                SkippedItem(stage, str(root / name), "holds no image: not a class, left in place")
            )


def plan_filter(
    root: Path, dest: Path, min_images: int, on_event: EventSink = ignore
) -> tuple[list, list, list[tuple[Path, Path]]]:
    kept, removed, moves = [], [], []
    counts = {folder.name: count_images(folder) for folder in class_folders(root)}
    refuse_mostly_non_classes(root, counts)
    report_non_classes("filter", root, counts, on_event)
    for folder in class_folders(root):
        n = counts[folder.name]
        if n == 0:
            continue
        if n >= min_images:
            kept.append((folder.name, n))
            continue
        removed.append((folder.name, n))
        target = dest / folder.name
        if os.path.lexists(target):
            raise UserError(
                f"{target} already exists; move it away (or run `imgscale filter {root} --undo`)"
            )
        moves.append((folder, target))
    return kept, removed, moves


def refuse_emptying(root: Path, kept: list, removed: list, min_images: int) -> None:
    """Moving every class aside is never what anyone wants: say so before moving anything."""
    if removed and not kept:
        cls, n = max(removed, key=lambda item: item[1])
        raise UserError(
            f"no class in {root} has {min_images} or more images (the largest, {cls}, has {n}); "
            "lower --min-images"
        )


def require_classes(root: Path) -> None:
    """An empty ROOT is almost always a wrong path: say so instead of reporting 0 classes done."""
    if not class_folders(root):
        raise UserError(
            f"{root} holds no class folders; give the folder with one subfolder per class "
            "(run `imgscale extract` first)"
        )


def filter_classes(
    root: str | os.PathLike[str],
    *,
    min_images: int = 500,
    dest: str | os.PathLike[str] | None = None,
    on_event: EventSink = ignore,
    journal_path: str | os.PathLike[str] | None = None,
) -> FilterResult:
    """Move every class folder of ``root`` with fewer than ``min_images`` images to ``dest``.

    A run interrupted by a crash is resumed (same plan) before anything new is planned."""
    root = check_root(root)
    if min_images < 0:
        raise UserError(f"--min-images {min_images}: give a number of images >= 0")
    dest = Path(dest).resolve() if dest else filtered_root(root)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"--dest {dest} is a file; give a folder for the filtered classes")
    require_folder_path(dest, "--dest")
    journal = Journal(journal_path or default_journal_path("filter", root))
    on_event(
        StageState("filter", "running", f"classes with fewer than {min_images} images -> {dest}")
    )
    with journal:
        earlier = moved_earlier(journal)
        run = journal.unfinished()
        if run is not None:
            on_event(StageState("filter", "running", "resuming an interrupted run"))
            kept, removed = recount(root, run.moves)
        else:
            require_classes(root)
            kept, removed, moves = plan_filter(root, dest, min_images, on_event)
            refuse_emptying(root, kept, removed, min_images)
            ensure_moves_fit("filter", moves)
            run = (
                journal.begin("filter", {"min_images": min_images, "dest": str(dest)}, moves)
                if moves
                else None
            )
        made = (
            journal.execute(run, MoveProgress("filter", len(run.moves), on_event, "classes"))
            if run
            else 0
        )
    on_event(
        StageState("filter", "done", f"kept {len(kept)} classes, moved {len(removed)} to {dest}")
    )
    return FilterResult(root, dest, tuple(kept), tuple(removed), earlier, made, journal.path)


def moved_earlier(journal: Journal) -> tuple[tuple[str, int], ...]:
    moved = [Path(dst) for run in journal.runs() if run.done for _, dst in run.moves]
    return tuple((p.name, count_images(p)) for p in moved if p.is_dir())


def moved_out(root: Path) -> set[str]:
    """Names of the classes filter moved out of ``root`` that are still where it put them."""
    journal = Journal(default_journal_path("filter", root))
    return {Path(dst).name for run in journal.runs() for _, dst in run.moves if Path(dst).is_dir()}


def recount(root: Path, moves: list[tuple[str, str]]) -> tuple[list, list]:
    """Keep/remove lists of a resumed run: the planned classes wherever they are now."""
    planned = {Path(src).name: Path(src) if Path(src).exists() else Path(dst) for src, dst in moves}
    kept = [(f.name, count_images(f)) for f in class_folders(root) if f.name not in planned]
    removed = [(name, count_images(path)) for name, path in sorted(planned.items())]
    return kept, removed


def undo_filter(
    root: str | os.PathLike[str],
    *,
    on_event: EventSink = ignore,
    journal_path: str | os.PathLike[str] | None = None,
) -> UndoResult:
    """Move every filtered class back into ``root`` (newest first); safe to repeat after a crash."""
    root = Path(root).resolve()
    path = Path(journal_path or default_journal_path("filter", root))
    return undo_stage("filter", path, on_event, "classes", f" (for {root})")
