"""Each preparation stage run on a workspace (paths and options from workspace.toml), and the demo workspace.

Each function calls the engine.prep stage with the workspace's folders and options and passes the
event sink through. Stages are synchronous: the console's Session runs them in a thread,
`imgscale prepare` (engine.workspace.pipeline) in its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine import workspace as wsmod
from engine.errors import StageRefused, UserError
from engine.events import EventSink, StageProgress, StageState
from engine.prep import demo, disk, extract, lst, pack, place, split
from engine.prep import filter as filter_stage
from engine.prep import options as prep_options
from engine.train import options as train_options

# The demo's smaller values for the stages' options (checked: a demo changes values, not fields).
DEMO_OPTIONS = prep_options.demo_overrides(
    {
        "filter": {"min_images": 20},
        "split": {"val_per_class": 5, "seed": 1},
        "list": {"chunks": 2},
        "pack": {"resize": 64, "quality": 90, "num_thread": 1},
    }
)
DEMO_TRAIN = train_options.overrides(
    {
        "network": "resnet",
        "num_layers": 18,
        "batch_size": 8,
        "kv_store": "local",
        "num_epochs": 1,
        "image_shape": "3,32,32",
        "data_nthreads": 1,
        "disp_batches": 2,
        "num_servers": 0,
        "workers": 1,
        # 32-pixel crops of images packed at 64: scale down first (as the tutorial's 0.533 for 224 at 480)
        "extra_args": ["--min-random-scale", "0.578"],
    }
)


def run_stage(ws: wsmod.Workspace, stage: str, on_event: EventSink, undo: bool = False) -> Any:
    """Run (or undo) one stage of the workspace; raises UserError with a clear line when it cannot."""
    ws.check_paths()
    if undo:
        return UNDO[stage](ws, on_event)
    return RUN[stage](ws, on_event)


def _disk(ws: wsmod.Workspace, on_event: EventSink) -> None:
    on_event(StageProgress("disk", 0, 1, unit="checks"))
    source = ws.tarball if ws.tarball.exists() else ws.root
    margin = ws.stage_options("disk").margin
    rows = disk.estimate_space(source, ws.path, ws.stage_options("pack"), extract_root=ws.root)
    for mount, (need, free) in disk.totals_by_mount(rows, margin).items():
        if need > free:
            raise StageRefused(
                f"the stages need {need:,} bytes on {mount} but {free:,} are free; free space or move the workspace"
            )
    on_event(
        StageProgress(
            "disk", 1, 1, unit="checks", message=disk.format_table(rows, margin).splitlines()[-1]
        )
    )


def _extract(ws: wsmod.Workspace, on_event: EventSink) -> None:
    if not ws.tarball.exists():
        if ws.root.is_dir():
            on_event(
                StageState(
                    "extract",
                    "done",
                    f"no {ws.tarball.name}; {ws.root} already holds class folders",
                )
            )
            return
        raise UserError(
            f"{ws.tarball} does not exist; set `tarball` in {ws.path / wsmod.CONFIG_NAME}"
        )
    extract.extract_archive(ws.tarball, ws.root, on_event=on_event)


def _filter(ws: wsmod.Workspace, on_event: EventSink) -> None:
    options = ws.stage_options("filter")
    filter_stage.filter_classes(ws.root, min_images=options.min_images, on_event=on_event)


def _undo_filter(ws: wsmod.Workspace, on_event: EventSink) -> None:
    filter_stage.undo_filter(ws.root, on_event=on_event)


def _split(ws: wsmod.Workspace, on_event: EventSink) -> None:
    options = ws.stage_options("split")
    split.split_validation(
        ws.root, ws.val_root, per_class=options.val_per_class, seed=options.seed, on_event=on_event
    )


def _undo_split(ws: wsmod.Workspace, on_event: EventSink) -> None:
    split.undo_split(ws.root, on_event=on_event)


class Passes:
    """One stage run as several passes (training set, then validation set) shown as one count.

    Whole-stage progress (``part == ""``) of a later pass is added to the earlier passes' final
    figures, so the console's row ends at "129/129 images", not at the last pass's "20/20".
    """

    def __init__(self, on_event: EventSink, names: tuple[str, ...] = ("train", "val")) -> None:
        self.on_event = on_event
        self.base = StageProgress("", 0, 0)
        self.last: StageProgress | None = None
        self.names = names
        self.said: list[
            str
        ] = []  # each finished pass's closing words, so the last pass's don't stand alone

    def __call__(self, event: Any) -> None:
        if isinstance(event, StageState) and event.state == "done":
            # A pass ending is not the stage ending: say what every pass did so far, still running.
            name = self.names[min(len(self.said), len(self.names) - 1)]
            self.said.append(f"{name}: {event.message}" if event.message else name)
            event = replace(event, state="running", message="; ".join(self.said))
        elif isinstance(event, StageProgress) and not event.part:
            self.last = event
            event = replace(
                event,
                done=self.base.done + event.done,
                total=None if event.total is None else (self.base.total or 0) + event.total,
                bytes_done=self.base.bytes_done + event.bytes_done,
                skipped=self.base.skipped + event.skipped,
            )
        self.on_event(event)

    def next_pass(self) -> None:
        if self.last is not None:
            last = self.last
            self.base = replace(
                self.base,
                done=self.base.done + last.done,
                total=(self.base.total or 0)
                + (last.total if last.total is not None else last.done),
                bytes_done=self.base.bytes_done + last.bytes_done,
                skipped=self.base.skipped + last.skipped,
            )
            self.last = None


def list_prefixes(ws: wsmod.Workspace) -> dict[str, Path]:
    """The .lst prefixes of the training and validation sets."""
    return {"train": ws.lists_dir / "train", "val": ws.lists_dir / "val"}


def _list(ws: wsmod.Workspace, on_event: EventSink) -> None:
    options = replace(ws.stage_options("list"), recursive=True)
    prefixes = list_prefixes(ws)
    passes = Passes(on_event)
    lst.write_lists(prefixes["train"], ws.root, options, on_event=passes)
    passes.next_pass()
    lst.write_lists(prefixes["val"], ws.val_root, replace(options, chunks=1), on_event=passes)
    check_labels(ws)  # train and val must number the same classes the same way


def _pack(ws: wsmod.Workspace, on_event: EventSink) -> None:
    lists = sorted(ws.lists_dir.glob("*.lst"))
    if not lists:
        raise UserError(f"no .lst files in {ws.lists_dir}; run the list stage first")
    options = ws.stage_options("pack")
    train = [p for p in lists if p.name.startswith("train")]
    val = [p for p in lists if p.name.startswith("val")]
    passes = Passes(on_event)
    pack.pack_lists(train, ws.root, options, on_event=passes)
    passes.next_pass()
    pack.pack_lists(val, ws.val_root, options, on_event=passes)


def _place(ws: wsmod.Workspace, on_event: EventSink) -> None:
    place.place_records(ws.lists_dir, ws.train_dir, ws.val_dir, on_event=on_event)


def read_labels(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return dict(line.split("\t", 1) for line in path.read_text().splitlines() if "\t" in line)


def check_labels(ws: wsmod.Workspace) -> None:
    """im2rec numbers classes by folder order, so val must hold exactly train's classes."""
    train = read_labels(ws.lists_dir / "train_labels.txt")
    val = read_labels(ws.lists_dir / "val_labels.txt")
    if train and val and train != val:
        missing = sorted(set(train) - set(val))[:3]
        raise UserError(
            f"validation classes differ from training classes (e.g. missing in val: {', '.join(missing) or '-'}); "
            f"every class needs more than split.val_per_class images: check {ws.val_root}"
        )


# Each stage reads what it uses from the workspace: its folders and its own options.
RUN: dict[str, Callable[[wsmod.Workspace, EventSink], Any]] = {
    "disk": _disk,
    "extract": _extract,
    "filter": _filter,
    "split": _split,
    "list": _list,
    "pack": _pack,
    "place": _place,
}
UNDO: dict[str, Callable[[wsmod.Workspace, EventSink], Any]] = {
    "filter": _undo_filter,
    "split": _undo_split,
}


def create_demo(path: Path, classes: int = 6, images: int = 40) -> Path:
    """A demo workspace: a generated ImageNet-shaped tarball, this machine as the only host, small thresholds."""
    folder = Path(path).expanduser().resolve()
    if (folder / wsmod.CONFIG_NAME).exists():
        return folder
    config = {
        "name": folder.name,
        "root": "data/images",
        "tarball": "data/imagenet_demo.tar",
        "val_root": "data/images_val",
        "lists_dir": "data/lists",
        "train_dir": "data/train",
        "val_dir": "data/val",
        "hosts": "",
        "stages": DEMO_OPTIONS,
        "train": DEMO_TRAIN,
    }
    ws = wsmod.create(folder, config)
    # Uneven class sizes around the filter's threshold, so the filter has classes to move aside.
    demo.make_demo_tar(
        ws.tarball,
        classes=classes,
        images_per_class=(images // 3, images),
        seed=0,
        size_scale=0.25,
        corrupt=1,
    )
    return folder
