"""What the prep tests share: file-tree snapshots, small class trees, a process that dies between moves."""

import contextlib
import hashlib
import pathlib
import subprocess

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


@contextlib.contextmanager
def tmpfs(path, size="32m"):
    """A tmpfs mounted at PATH (a second file system, or a small disk), unmounted afterwards;
    skips the test, saying why, where mounting is not allowed."""
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
