"""`imgscale prepare`: every preparation stage, in order, on a workspace; finished stages are skipped.

The workspace is the console's (engine.workspace: workspace.toml + state.json) and each stage runs
through the console's own runner (engine.workspace.runner), so the CLI and the console share paths,
options, state and code. A stage
interrupted part-way is started again and resumes by itself (extract's manifest, the move journals,
pack's per-chunk resume).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine import workspace as wsmod
from engine.errors import UserError
from engine.events import EventSink, StageState, ignore
from engine.prep.wslock import WorkspaceLock, workspace_folders
from engine.workspace.runner import run_one
from engine.workspace.stages import create_demo, read_labels


@dataclass(frozen=True)
class PrepareResult:
    workspace: Path
    ran: tuple[str, ...]
    already_done: tuple[str, ...]
    train_dir: Path
    val_dir: Path
    lists_dir: Path
    num_classes: int
    num_examples: int  # training images packed (what --num-examples must say)
    val_examples: int
    reports: tuple[Path, ...]  # skip reports: files a stage could not use, with the reason


def new_config(folder: Path, source: Path) -> dict:
    """A workspace for an ImageNet tar (extracted into images/) or an existing class tree (used in place)."""
    source = source.resolve()
    config = {
        "name": folder.name,
        "lists_dir": "lists",
        "train_dir": "train",
        "val_dir": "val",
        "hosts": "",
    }
    if source.is_dir():
        return dict(
            config, root=str(source)
        )  # no tarball: the extract stage sees the tree and passes
    return dict(config, root="images", tarball=str(source), val_root="images_val")


def open_workspace(
    folder: str | os.PathLike[str],
    *,
    source: str | os.PathLike[str] | None = None,
    demo: bool = False,
) -> wsmod.Workspace:
    """Open ``folder``'s workspace, creating it from ``source`` or as the demo when it has none yet."""
    folder = Path(folder).expanduser().resolve()
    exists = (folder / wsmod.CONFIG_NAME).is_file()
    if demo and source is not None:
        raise UserError("give either --demo or --source, not both")
    if demo and not exists:
        create_demo(folder)
    elif source is not None and not exists:
        source = Path(source).expanduser()
        if not source.exists():
            raise UserError(
                f"--source {source} does not exist; give the ImageNet tar or a folder of class folders"
            )
        wsmod.create(folder, new_config(folder, source))
    elif not exists:
        raise UserError(
            f"{folder} is not a workspace yet; add --source TAR_OR_FOLDER (or --demo to try it)"
        )
    ws = wsmod.load(folder)
    used = ws.tarball if ws.config.get("tarball") else ws.root
    if source is not None and exists and used.resolve() != Path(source).expanduser().resolve():
        raise UserError(f"{folder} was set up for {used}; use a new folder for {source}")
    if source is not None:
        ws.given = (Path(source).expanduser().resolve(),)  # named on the command line: trusted
    return ws


def apply_options(ws: wsmod.Workspace, options: dict[str, dict]) -> None:
    """Options given on the command line: saved while their stage has not started, else checked."""
    for stage, values in options.items():
        current = ws.stage_options(stage)
        changed = {k: v for k, v in values.items() if v is not None and getattr(current, k) != v}
        later = wsmod.PREP_STAGES[wsmod.PREP_STAGES.index(stage) :]
        if changed and not all(untouched(ws.stage_record(s)) for s in later):
            key, value = next(iter(changed.items()))
            raise UserError(
                f"{ws.path} was prepared with {stage}.{key} = {getattr(current, key)!r}, not {value!r}; "
                "use a new folder (or change it in the console, which redoes the later stages)"
            )
        if changed:
            ws.set_stage_options(stage, changed)
    check_thresholds(ws)


def untouched(record: dict) -> bool:
    """A stage not started, or one that failed before doing anything, can still take new options."""
    state = record.get("state", "pending")
    return state == "pending" or (state == "failed" and not record.get("done"))


def check_thresholds(ws: wsmod.Workspace) -> None:
    min_images = ws.stage_options("filter").min_images
    per_class = ws.stage_options("split").val_per_class
    if min_images <= per_class:
        raise UserError(
            f"--min-images {min_images} must be above --per-class {per_class}: every kept class must keep "
            "training images and give validation ones, or train and val labels would not match"
        )


def count_records(folder: Path, pattern: str) -> int:
    """Records packed, from the .idx files (one line per record)."""
    return sum(len(p.read_text().splitlines()) for p in folder.glob(pattern))


def has_rows(report: Path) -> bool:
    """A report lists something beyond its header line."""
    with open(report, "rb") as f:
        return len(f.read(1 << 16).splitlines()) > 1


def summarize(ws: wsmod.Workspace, ran: list[str], done: list[str]) -> PrepareResult:
    lists = ws.lists_dir
    reports = tuple(p for p in sorted(lists.glob("*.tsv")) if has_rows(p)) if lists.is_dir() else ()
    return PrepareResult(
        workspace=ws.path,
        ran=tuple(ran),
        already_done=tuple(done),
        train_dir=ws.train_dir,
        val_dir=ws.val_dir,
        lists_dir=lists,
        num_classes=len(read_labels(lists / "train_labels.txt")),
        num_examples=count_records(lists, "train*.idx"),
        val_examples=count_records(lists, "val*.idx"),
        reports=reports,
    )


def prepare(
    folder: str | os.PathLike[str],
    *,
    source: str | os.PathLike[str] | None = None,
    demo: bool = False,
    options: dict[str, dict] | None = None,
    on_event: EventSink = ignore,
) -> PrepareResult:
    """Run every preparation stage not yet done on the workspace ``folder`` (creating it if needed),
    holding the workspace's lock from before it is opened until the last stage ends."""
    path = Path(folder).expanduser().resolve()
    if source is None and not demo and not (path / wsmod.CONFIG_NAME).is_file():
        open_workspace(path)  # says it is not a workspace yet, before the lock makes a folder
    with WorkspaceLock([path], "prepare") as lock:
        ws = open_workspace(path, source=source, demo=demo)
        beside = workspace_folders(ws.path, ws.root)[1:]  # class folders outside the workspace
        with WorkspaceLock(beside, "prepare"):
            return run_missing(ws, options or {}, on_event, lock)


def run_missing(
    ws: wsmod.Workspace, options: dict[str, dict], on_event: EventSink, lock: WorkspaceLock
) -> PrepareResult:
    """Every stage not done yet, in order, under the lock ``prepare`` holds."""
    apply_options(ws, options)
    ran, done = [], []
    for stage in wsmod.PREP_STAGES:
        if ws.stage_record(stage).get("state") == "done":
            on_event(StageState(stage, "done", "already done"))
            done.append(stage)
            continue
        run_one(ws, stage, on_event, lock=lock)
        ran.append(stage)
    return summarize(ws, ran, done)
