"""CLI subcommands demo-data, disk, extract, filter, split and place (engine.prep underneath)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine import options as opt
from engine.cli_progress import CliProgress, human_bytes
from engine.errors import UserError
from engine.paths import require_folder_path
from engine.prep.options import (
    TUTORIAL,
    FilterOptions,
    PackOptions,
    SplitOptions,
)
from engine.prep.wslock import locked

if TYPE_CHECKING:  # loaded by the commands that run them, not by every `imgscale` start
    from engine.prep.journal import UndoResult


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _demo_parser(sub)
    _disk_parser(sub)
    _extract_parser(sub)
    _filter_parser(sub)
    _split_parser(sub)
    _place_parser(sub)


def command_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    text: str,
    func: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=text, description=text)
    p.set_defaults(func=func)
    return p


def say(text: str = "") -> None:
    print(text, flush=True)


# -- demo-data ------------------------------------------------------------------------------------
def _demo_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command_parser(
        sub,
        "demo-data",
        "write a small ImageNet-shaped demo dataset (tar of per-class tars, or a tree)",
        _demo,
    )
    p.add_argument(
        "out", metavar="OUT", help="the tar file to write (--tar) or an empty folder (--tree)"
    )
    p.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    p.add_argument(
        "--images-per-class",
        default="50",
        metavar="M|LO:HI",
        help="images per class: LO:HI spreads counts evenly, M means M/2:3M/2 (default 50)",
    )
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument(
        "--tar", dest="tree", action="store_false", help="write fall11_whole.tar's shape (default)"
    )
    kind.add_argument(
        "--tree", dest="tree", action="store_true", help="write the extracted tree OUT/<wnid>/…"
    )
    p.set_defaults(tree=False)  # both flags share a dest; without this --tar's store_false wins
    p.add_argument(
        "--corrupt", type=int, default=0, metavar="K", help="add K broken or non-image files"
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=None,
        metavar="PX",
        help="shrink images to at most PX per side",
    )
    p.add_argument(
        "--size-scale", type=float, default=1.0, help="scale every image size (default 1.0)"
    )


def images_per_class(text: str) -> int | tuple[int, int]:
    try:
        if ":" in text:
            lo, hi = text.split(":", 1)
            return int(lo), int(hi)
        count = int(text)
    except ValueError:
        raise UserError(
            f"--images-per-class {text!r}: give a number M or a range LO:HI, e.g. 20:80"
        ) from None
    if count < 1:
        raise UserError(f"--images-per-class {text}: give 1 or more")
    return count


def _check_demo_numbers(args: argparse.Namespace) -> None:
    """Refuse impossible sizes before any file is written."""
    if args.classes < 1:
        raise UserError(f"--classes {args.classes}: give 1 or more")
    if args.corrupt < 0:
        raise UserError(f"--corrupt {args.corrupt}: give 0 or more broken files")
    if args.max_side is not None and args.max_side < 8:
        raise UserError(f"--max-side {args.max_side}: give 8 pixels or more")
    if not args.size_scale > 0:
        raise UserError(f"--size-scale {args.size_scale}: give a number above 0, e.g. 0.5")


def _demo(args: argparse.Namespace) -> int:
    from engine.prep import demo

    _check_demo_numbers(args)
    counts: int | tuple[int, int] | str  # the numbers asked for, then the numbers written
    counts = images_per_class(args.images_per_class)
    # a bad LO:HI fails here, before any .partial file is written
    demo.class_counts(args.classes, counts, args.seed)
    make = demo.make_demo_tree if args.tree else demo.make_demo_tar
    summary = make(
        args.out, classes=args.classes, images_per_class=counts, seed=args.seed,
        size_scale=args.size_scale, max_side=args.max_side, corrupt=args.corrupt,
    )  # fmt: skip
    counts = ", ".join(str(n) for _, n in summary.classes)
    say(f"wrote {summary.path}: {len(summary.classes)} classes, {summary.images} images ({counts} per class), "
         f"{human_bytes(summary.bytes)}" + (f", {len(summary.corrupt)} broken files" if summary.corrupt else ""))  # fmt: skip
    return 0


# -- disk -----------------------------------------------------------------------------------------
def _disk_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command_parser(
        sub, "disk", "estimate the space extract, list and pack need against free space", _disk
    )
    p.add_argument(
        "source", metavar="SOURCE", help="the ImageNet tar, or a folder of class folders"
    )
    p.add_argument(
        "target",
        metavar="TARGET",
        nargs="?",
        default=None,
        help="where the outputs go (default: beside SOURCE)",
    )
    _pack_size_args(p)


DISK_FIELDS = ("resize", "quality", "center_crop", "no_upscale", "pass_through")


def _pack_size_args(p: argparse.ArgumentParser) -> None:
    opt.add_arguments(p, PackOptions, only=DISK_FIELDS, base=TUTORIAL["pack"])


def _check_disk_paths(source: Path, target: Path) -> None:
    """A file that is no tar, a folder without images, or a TARGET that is a file: say so, not 0 B."""
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} is a file; give the folder the outputs go to as TARGET")
    require_folder_path(target, "TARGET")
    if source.is_file() and not is_tar(source):  # never read a pipe here: extract streams it
        raise UserError(f"{source} is not a tar archive; give the ImageNet tar or a class tree")
    if source.is_dir() and not has_image(source):
        raise UserError(
            f"{source} holds no images; give the ImageNet tar or a folder of class folders"
        )


def has_image(root: Path) -> bool:
    """Stops at the first image: a full walk of ImageNet's tree is the estimate's job."""
    import os

    from engine.prep.disk import IMAGE_EXTS

    for _path, _dirs, files in os.walk(root, followlinks=True):
        if any(os.path.splitext(f)[1].lower() in IMAGE_EXTS for f in files):
            return True
    return False


def _disk(args: argparse.Namespace) -> int:
    from engine.prep import disk

    source = Path(args.source)
    target = Path(args.target) if args.target else source.absolute().parent
    settings = opt.from_args(PackOptions, args)
    _check_disk_paths(source, target)
    rows = disk.estimate_space(source, target, settings)
    say(disk.format_table(rows))
    return 0 if all(need <= free for need, free in disk.totals_by_mount(rows).values()) else 1


# -- extract --------------------------------------------------------------------------------------
def _extract_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command_parser(
        sub,
        "extract",
        "extract a tar of per-class tars into ROOT/<class>/ (resumable, streaming)",
        locked(_extract, "root"),
    )
    p.add_argument("tar", metavar="TAR", help="the archive, e.g. fall11_whole.tar")
    p.add_argument("root", metavar="ROOT", help="the folder to extract into")


def _extract(args: argparse.Namespace) -> int:
    from engine.prep.extract import extract_archive

    result = extract_archive(args.tar, args.root, on_event=CliProgress())
    say(f"{result.root}: {result.classes} classes extracted now ({result.images} files, {human_bytes(result.bytes)}), "
         f"{result.already} done before")  # fmt: skip
    for name, reason in result.skipped:
        say(f"  skipped {name}: {reason}")
    if result.skipped:
        from engine.prep.extract import report_path

        say(f"  skipped members are listed in {report_path(result.root)}")
    return 0


# -- filter ---------------------------------------------------------------------------------------
def _filter_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command_parser(
        sub,
        "filter",
        "move classes with fewer than N images to ROOT_filtered/ (undoable)",
        locked(_filter, "root"),
    )
    p.add_argument("root", metavar="ROOT", help="the folder of class folders")
    opt.add_arguments(p, FilterOptions)
    p.add_argument(
        "--dest", default=None, help="where to move them (default ROOT_filtered beside ROOT)"
    )
    p.add_argument("--undo", action="store_true", help="move every filtered class back")


def _filter(args: argparse.Namespace) -> int:
    from engine.prep import filter as stage

    if args.undo:
        return _report_undo(stage.undo_filter(args.root, on_event=CliProgress()), "classes")
    options = opt.from_args(FilterOptions, args)
    result = stage.filter_classes(
        args.root, min_images=options.min_images, dest=args.dest, on_event=CliProgress()
    )
    rows = [("keep", c, n, "") for c, n in result.kept]
    rows += [("remove", c, n, f"  -> {result.dest / c}") for c, n in result.removed]
    rows += [
        ("remove", c, n, f"  (moved by an earlier run to {result.dest / c})")
        for c, n in result.earlier
    ]
    for verdict, cls, n, where in sorted(rows, key=lambda row: row[1]):
        say(f"{verdict:<7} {cls}  {n:>6} images{where}")
    moved = len(result.removed) + len(result.earlier)
    say(f"kept {len(result.kept)} classes, {moved} moved aside in {result.dest}; "
         f"undo with: imgscale filter {result.root} --undo")  # fmt: skip
    return 0


def _report_undo(result: UndoResult, unit: str) -> int:
    say(
        f"moved {result.restored} {unit} back"
        + (f"; {result.already} were already in place" if result.already else "")
    )
    for conflict in result.conflicts:
        say(f"  left alone: {conflict}")
    return 1 if result.conflicts else 0


# -- split ----------------------------------------------------------------------------------------
def _split_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command_parser(
        sub,
        "split",
        "move K random images per class to VAL_ROOT/<class>/ (seeded, undoable)",
        locked(_split, "root"),
    )
    p.add_argument("root", metavar="ROOT", help="the folder of class folders")
    p.add_argument(
        "val_root",
        metavar="VAL_ROOT",
        nargs="?",
        default=None,
        help="the validation tree to fill (outside ROOT)",
    )
    opt.add_arguments(p, SplitOptions)
    p.add_argument("--undo", action="store_true", help="move every validation image back")


def _split(args: argparse.Namespace) -> int:
    from engine.prep import split

    if args.undo:
        return _report_undo(
            split.undo_split(args.root, args.val_root, on_event=CliProgress()), "images"
        )
    if args.val_root is None:
        raise UserError(
            "missing VAL_ROOT: give the folder for validation images, e.g. imgscale split train val"
        )
    options = opt.from_args(SplitOptions, args)
    result = split.split_validation(args.root, args.val_root, per_class=options.val_per_class,
                                    seed=options.seed, on_event=CliProgress())  # fmt: skip
    moved = sum(n for _, n in result.moved)
    state = "moved" if result.moved_now or not moved else "already moved"
    say(f"{state} {moved} images of {len(result.moved)} classes to {result.val_root}")
    for cls, n in result.short:
        say(f"  left whole: {cls} has only {n} images (need more than {options.val_per_class})")
    say(f"undo with: imgscale split {result.root} --undo")
    return 0


# -- place ----------------------------------------------------------------------------------------
def _place_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command_parser(
        sub,
        "place",
        "move packed .rec files into TRAIN_DIR and VAL_DIR (indexes stay put; undoable)",
        locked(_place, "prefix_dir"),
    )
    p.add_argument("prefix_dir", metavar="PREFIX_DIR", help="where pack wrote .rec/.idx/.lst")
    p.add_argument(
        "train_dir",
        metavar="TRAIN_DIR",
        nargs="?",
        default=None,
        help="folder for training .rec files",
    )
    p.add_argument(
        "val_dir",
        metavar="VAL_DIR",
        nargs="?",
        default=None,
        help="folder for validation .rec files",
    )
    p.add_argument(
        "--train", default="train*.rec", metavar="GLOB", help="training files (default train*.rec)"
    )
    p.add_argument(
        "--val", default="val*.rec", metavar="GLOB", help="validation files (default val*.rec)"
    )
    p.add_argument("--undo", action="store_true", help="move the placed files back into PREFIX_DIR")


def _place(args: argparse.Namespace) -> int:
    from engine.prep import place

    if args.undo:
        return _report_undo(place.undo_place(args.prefix_dir, on_event=CliProgress()), "files")
    if args.train_dir is None or args.val_dir is None:
        raise UserError("missing TRAIN_DIR and VAL_DIR: e.g. imgscale place lists train val")
    result = place.place_records(args.prefix_dir, args.train_dir, args.val_dir, train_glob=args.train,
                                 val_glob=args.val, on_event=CliProgress())  # fmt: skip
    say(
        f"{result.train_dir}: {len(result.train)} .rec files; {result.val_dir}: {len(result.val)} .rec files"
    )
    for stray in result.strays:
        say(
            f"  warning: {stray} is not a .rec file; MXNet's reader would read it as data: move it out"
        )
    return 0


def is_tar(path: Path) -> bool:
    import tarfile

    return tarfile.is_tarfile(path)
