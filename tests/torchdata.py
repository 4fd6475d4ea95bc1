"""A tiny seeded demo dataset for torch-engine tests and benchmarks: one .rec/.idx pair per split."""

from __future__ import annotations

from pathlib import Path


def demo_rec(
    folder: Path, classes: int = 4, per_class: int = 100, train_ratio: float = 0.75, edge: int = 40
) -> Path:
    """Demo images listed ``train_ratio``/rest and packed at short ``edge`` like im2rec; returns the
    folder holding demo_train.rec/.idx and demo_val.rec/.idx."""
    from engine.prep.demo import make_demo_tree
    from engine.prep.lst import write_lists
    from engine.prep.pack import PackOptions, pack_lists

    images = (per_class, per_class)
    make_demo_tree(
        folder / "tree", classes=classes, images_per_class=images, seed=1, size_scale=0.1
    )
    lists = write_lists(
        folder / "data" / "demo", folder / "tree", recursive=True, train_ratio=train_ratio
    )
    pack_lists(lists, folder / "tree", PackOptions(resize=edge, quality=90))
    return folder / "data"
