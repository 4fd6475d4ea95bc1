"""The `list` stage: write .lst files identical to `im2rec.py --list`, plus the class->label map.

Order, labels, the seeded shuffle (``random.seed(100)``) and chunk/split naming follow im2rec's
``list_image``/``make_list`` exactly, so the same tree and options give the same bytes. Where im2rec
misbehaves we differ, and only there: a symlink loop is walked once (im2rec walks it until the
kernel says ELOOP and lists the same files many times); names a .lst line cannot carry (not UTF-8,
or holding a tab or newline) and image-named entries that are not files (dangling links) are skipped
and listed in ``PREFIX_list_skipped.tsv`` instead of crashing or vanishing; extensions match
case-insensitively also when given in capitals; an empty result is an error, not an empty file.

The class->label map goes to ``PREFIX_labels.txt``: one ``class<TAB>label`` line per class in label
order (the class is the folder relative to ROOT, "." for ROOT itself), what im2rec only prints.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.errors import UserError
from engine.events import EventSink, SkippedItem, StageProgress, ignore
from engine.paths import make_folder, write_text_atomic
from engine.prep.options import ListOptions
from engine.prep.report import one_field, printable

SHUFFLE_SEED = 100  # im2rec's fixed seed
BAD_NAME_CHARS = ("\t", "\n", "\r")
PROGRESS_EVERY = 1000


@dataclass
class Listing:
    """What a walk of ROOT found: (index, relative path, label) items, the label map and the skips."""

    items: list[tuple[int, str, int]] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def labels_path(prefix: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(f"{os.fspath(prefix)}_labels.txt")


def skipped_path(prefix: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(f"{os.fspath(prefix)}_list_skipped.tsv")


def _name_problem(name: str) -> str:
    """Why a file name cannot go into a .lst line ('' when it can)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8; a .lst line cannot hold it (rename the file)"
    if any(ch in name for ch in BAD_NAME_CHARS):
        return "file name contains a tab or newline; a .lst line cannot hold it (rename the file)"
    return ""


def _walk(top: str, ancestors: frozenset, listing: Listing) -> Iterator[tuple[str, list[str]]]:
    """os.walk(top, followlinks=True) order with sorted dirs/files, but each loop entered only once."""
    try:
        with os.scandir(top) as scan:
            entries = list(scan)
    except OSError as exc:
        listing.skipped.append((top, f"cannot read folder: {exc.strerror or exc}"))
        return
    dirs: list[str] = []
    files: list[str] = []
    for entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        (dirs if is_dir else files).append(entry.name)
    dirs.sort()
    files.sort()
    yield top, files
    for name in dirs:
        path = os.path.join(top, name)
        try:
            st = os.stat(path)
        except OSError as exc:
            listing.skipped.append((path, f"cannot read folder: {exc.strerror or exc}"))
            continue
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            listing.skipped.append(
                (path, "symlink loop: folder already being walked; not followed")
            )
            continue
        yield from _walk(path, ancestors | {key}, listing)


def _accept(path: str, fname: str, exts: tuple[str, ...], listing: Listing) -> bool:
    if os.path.splitext(fname)[1].lower() not in exts:
        return False
    fpath = os.path.join(path, fname)
    if not os.path.isfile(fpath):
        why = "dangling symlink or symlink loop" if os.path.islink(fpath) else "not a regular file"
        listing.skipped.append((fpath, why))
        return False
    problem = _name_problem(fpath)
    if problem:
        listing.skipped.append((fpath, problem))
        return False
    return True


def list_images(
    root: str, recursive: bool, exts: tuple[str, ...], on_event: EventSink = ignore
) -> Listing:
    """im2rec's list_image: every image under ROOT in walk order, labelled by folder when recursive."""
    listing = Listing()
    root_stat = os.stat(root)
    if recursive:
        walk = _walk(root, frozenset({(root_stat.st_dev, root_stat.st_ino)}), listing)
    else:
        walk = iter([(root, sorted(os.listdir(root)))])
    for path, files in walk:
        for fname in files:
            if not _accept(path, fname, exts, listing):
                continue
            label = listing.labels.setdefault(path, len(listing.labels)) if recursive else 0
            listing.items.append(
                (len(listing.items), os.path.relpath(os.path.join(path, fname), root), label)
            )
            if len(listing.items) % PROGRESS_EVERY == 0:
                on_event(StageProgress(stage="list", done=len(listing.items), total=None))
    if not recursive:
        listing.labels = {root: 0}
    return listing


def format_lines(items: list[tuple[int, str, int]]) -> str:
    """im2rec's write_list format: index, each label as %f, path; tab-separated."""
    return "".join(
        f"{item[0]}\t" + "".join(f"{v:f}\t" for v in item[2:]) + f"{item[1]}\n" for item in items
    )


def plan_lists(
    items: list, prefix: str, chunks: int, train_ratio: float, test_ratio: float
) -> list[tuple[str, list]]:
    """im2rec's make_list chunking and train/val/test split: (file name, items) in writing order."""
    chunk_size = (len(items) + chunks - 1) // chunks
    plan = []
    for i in range(chunks):
        chunk = items[i * chunk_size : (i + 1) * chunk_size]
        name = prefix + (f"_{i}" if chunks > 1 else "")
        sep = int(chunk_size * train_ratio)
        sep_test = int(chunk_size * test_ratio)
        if train_ratio == 1.0:
            plan.append((name + ".lst", chunk))
            continue
        if test_ratio:
            plan.append((name + "_test.lst", chunk[:sep_test]))
        if train_ratio + test_ratio < 1.0:
            plan.append((name + "_val.lst", chunk[sep_test + sep :]))
        plan.append((name + "_train.lst", chunk[sep_test : sep_test + sep]))
    return plan


def _check_root(root: str) -> None:
    if not os.path.isdir(root):
        raise UserError(f"ROOT {root} is not a folder; give the folder that holds the images")


def _check_chunks(chunks: int, images: int) -> None:
    """More chunks than images would write lists with nothing in them."""
    if chunks > images:
        raise UserError(
            f"--chunks {chunks}: there are only {images} images; give at most {images} chunks"
        )


def _write_side_files(prefix: str, root: str, listing: Listing) -> None:
    by_label = sorted(listing.labels.items(), key=lambda kv: kv[1])
    write_text_atomic(
        labels_path(prefix), "".join(f"{os.path.relpath(k, root)}\t{v}\n" for k, v in by_label)
    )
    report = skipped_path(prefix)
    if listing.skipped:
        rows = "".join(f"{printable(p)}\t{one_field(why)}\n" for p, why in listing.skipped)
        write_text_atomic(report, "path\treason\n" + rows)
    elif report.exists():
        report.unlink()  # a report from an earlier run would describe files no longer skipped


def write_lists(
    prefix: str | os.PathLike,
    root: str | os.PathLike,
    options: ListOptions | None = None,
    *,
    on_event: EventSink = ignore,
    **values: Any,
) -> list[pathlib.Path]:
    """Write PREFIX[_i][_train|_val|_test].lst as `im2rec.py --list` would; return the paths written.

    ``values`` (recursive=…, chunks=…) replace fields of ``options`` (default: im2rec's)."""
    options = dataclasses.replace(options or ListOptions(), **values)
    prefix, root = os.path.abspath(prefix), os.path.abspath(root)  # im2rec makes both absolute
    recursive, chunks = options.recursive, options.chunks
    exts = tuple(e.lower() for e in options.exts)
    _check_root(root)
    listing = list_images(root, recursive, exts, on_event)
    for path, why in listing.skipped:
        on_event(SkippedItem(stage="list", path=printable(path), reason=why))
    if not listing.items:
        raise UserError(
            f"no files ending in {' '.join(exts)} under {root}"
            + ("" if recursive else " (add --recursive?)")
        )
    items = list(listing.items)
    _check_chunks(chunks, len(items))
    if options.shuffle:
        random.Random(SHUFFLE_SEED).shuffle(
            items
        )  # same sequence as im2rec's random.seed(100); shuffle()
    make_folder(pathlib.Path(prefix).parent, "PREFIX's folder")
    written = []
    for name, chunk in plan_lists(items, prefix, chunks, options.train_ratio, options.test_ratio):
        write_text_atomic(pathlib.Path(name), format_lines(chunk))
        written.append(pathlib.Path(name))
    _write_side_files(prefix, root, listing)
    on_event(
        StageProgress(stage="list", done=len(items), total=len(items), skipped=len(listing.skipped))
    )
    return written
