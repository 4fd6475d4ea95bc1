"""What the prep tests share: file-tree snapshots, small class trees, a process that dies between moves."""

import hashlib
import pathlib

import pytest

from engine.prep import journal as jmod


def snapshot(top, with_journals=False):
    """{relative path: sha256} of every file under TOP; journals (under .imgscale) only if asked."""
    return {
        str(p.relative_to(top)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(pathlib.Path(top).rglob("*"))
        if p.is_file() and (with_journals or ".imgscale" not in p.parts)
    }


def make_tree(root, sizes, notes=False):
    """ROOT/<class>/<class>_<i>.JPEG, SIZES[class] files each; with NOTES also a non-image notes.txt."""
    for cls, n in sizes.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            (root / cls / f"{cls}_{i}.JPEG").write_bytes(f"{cls}{i}".encode())
        if notes:
            (root / cls / "notes.txt").write_text("not an image: never moved")
    return root


def crash_on_move(monkeypatch, action, number):
    """Run ``action`` with the process 'dying' (KeyboardInterrupt) just before its NUMBER-th move."""
    real_move, calls = jmod.move_path, []

    def move(src, dst, on_copied=None):
        calls.append(src)
        if len(calls) == number:
            raise KeyboardInterrupt
        real_move(src, dst, on_copied)

    monkeypatch.setattr(jmod, "move_path", move)
    with pytest.raises(KeyboardInterrupt):
        action()
    monkeypatch.setattr(jmod, "move_path", real_move)
