"""Tiny RecordIO datasets for training tests, made from the project's demo generator (seeded, nothing downloaded)."""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass


@dataclass(frozen=True)
class RecDataset:
    train_dir: str  # a directory of .rec chunks (their .idx and .lst live in ../lists)
    val_rec: str  # one .rec file
    num_examples: int  # training images
    num_classes: int
    lists: str  # folder with the .lst/.idx files and PREFIX_labels.txt


def _pack(lst: pathlib.Path, rec: pathlib.Path, idx: pathlib.Path, root: pathlib.Path, edge: int) -> int:
    """Pack one .lst as im2rec --resize EDGE would (short edge to EDGE, JPEG quality 90)."""
    import cv2
    import mxnet as mx

    writer = mx.recordio.MXIndexedRecordIO(str(idx), str(rec), "w")
    count = 0
    for line in lst.read_text().splitlines():
        index, label, rel = line.split("\t")
        img = cv2.imread(str(root / rel))
        h, w = img.shape[:2]
        scale = edge / min(h, w)
        img = cv2.resize(img, (max(edge, round(w * scale)), max(edge, round(h * scale))))
        header = mx.recordio.IRHeader(0, float(label), int(index), 0)
        writer.write_idx(int(index), mx.recordio.pack_img(header, img, quality=90))
        count += 1
    writer.close()
    return count


def build(root: str | os.PathLike, classes: int = 10, per_class: int = 60, val_per_class: int = 12,
          seed: int = 0, edge: int = 36, chunks: int = 2) -> RecDataset:
    """Demo images -> im2rec-style lists (train split into chunks, val separate) -> .rec files."""
    from engine.prep.demo import make_demo_tree

    root = pathlib.Path(root)
    images = root / "images"
    make_demo_tree(images, classes=classes, images_per_class=(per_class, per_class), seed=seed, max_side=72)
    lists, train_dir = root / "lists", root / "train"
    lists.mkdir()
    train_dir.mkdir()
    ratio = 1 - val_per_class / per_class
    train_lst, val_lst = _write_lists(lists / "demo", images, ratio, seed)
    total = _split_and_pack(train_lst, lists, train_dir, images, edge, chunks)
    _pack(val_lst, root / "val.rec", lists / "val.idx", images, edge)
    return RecDataset(str(train_dir), str(root / "val.rec"), total, classes, str(lists))


def _split_and_pack(lst, lists, train_dir, images, edge, chunks) -> int:
    lines = lst.read_text().splitlines()
    total = 0
    for i in range(chunks):
        part = lists / f"demo_{i}.lst"
        part.write_text("".join(line + "\n" for line in lines[i::chunks]))
        total += _pack(part, train_dir / f"demo_{i}.rec", lists / f"demo_{i}.idx", images, edge)
    return total


def _write_lists(prefix: pathlib.Path, images: pathlib.Path, train_ratio: float, seed: int):
    """PREFIX_train.lst / PREFIX_val.lst (im2rec's index<TAB>label<TAB>path) and PREFIX_labels.txt.

    The project's list stage (engine.prep.lst.write_lists) writes the same files; it is used when it imports.
    """
    try:
        from engine.prep.lst import write_lists
    except Exception:  # the list stage is optional for these tests: fall back to an equivalent listing
        write_lists = None
    if write_lists is not None:
        written = write_lists(prefix, images, recursive=True, train_ratio=train_ratio)
        return (next(p for p in written if p.name.endswith("_train.lst")),
                next(p for p in written if p.name.endswith("_val.lst")))
    import random

    classes = sorted(p.name for p in images.iterdir() if p.is_dir())
    items = [(f"{c}/{f.name}", label) for label, c in enumerate(classes) for f in sorted((images / c).iterdir())]
    items = [(i, rel, label) for i, (rel, label) in enumerate(items)]
    random.Random(seed).shuffle(items)
    cut = int(len(items) * train_ratio)
    paths = (pathlib.Path(f"{prefix}_train.lst"), pathlib.Path(f"{prefix}_val.lst"))
    for path, part in zip(paths, (items[:cut], items[cut:])):
        path.write_text("".join(f"{i}\t{label:f}\t{rel}\n" for i, rel, label in part))
    pathlib.Path(f"{prefix}_labels.txt").write_text("".join(f"{c}\t{i}\n" for i, c in enumerate(classes)))
    return paths
