"""Tiny RecordIO datasets for training tests and benchmarks, made the product's way (seeded, nothing downloaded):
demo images (engine.prep.demo) -> im2rec-style lists in chunks (engine.prep.lst) -> .rec/.idx (engine.prep.pack)
-> train/ and val/ folders that hold only .rec files (engine.prep.place)."""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass


@dataclass(frozen=True)
class RecDataset:
    train_dir: str  # a directory of .rec chunks (their .idx/.lst and the label map live in `lists`)
    val: str  # a directory of .rec chunks
    num_examples: int  # training images
    num_classes: int
    lists: str


def build(
    root: str | os.PathLike,
    classes: int = 10,
    per_class: int = 60,
    val_per_class: int = 12,
    seed: int = 0,
    edge: int = 36,
    chunks: int = 2,
    max_side: int = 72,
) -> RecDataset:
    from engine.prep.demo import make_demo_tree
    from engine.prep.lst import write_lists
    from engine.prep.pack import PackOptions, pack_lists
    from engine.prep.place import place_records

    root = pathlib.Path(root)
    images, lists = root / "images", root / "lists"
    make_demo_tree(
        images,
        classes=classes,
        images_per_class=(per_class, per_class),
        seed=seed,
        max_side=max_side,
    )
    written = write_lists(
        lists / "demo",
        images,
        recursive=True,
        chunks=chunks,
        train_ratio=1 - val_per_class / per_class,
    )
    pack_lists(written, images, PackOptions(resize=edge, quality=90))
    place_records(
        lists, root / "train", root / "val", train_glob="*_train.rec", val_glob="*_val.rec"
    )
    examples = sum(len(p.read_text().splitlines()) for p in lists.glob("*_train.idx"))
    return RecDataset(str(root / "train"), str(root / "val"), examples, classes, str(lists))
